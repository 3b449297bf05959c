"""Which saved Tune state may resume a study: ``restore_verdict`` against the database's latest
attempts, and the run mark that ties Tune's experiment directory to a study config and a
database. (Restoring a real saved state is covered end to end in test_resume.py.)"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

from common.config import parse_study
from common.results import FailureReason, TrialRecord, TrialStatus
from manager.faults import LazyStore
from manager.resume import RUN_MARK, restore_verdict, tune_trial_states, write_run_mark

STUDY = {"name": "restore", "model": {"name": "meta-llama/Llama-3.1-8B-Instruct"},
         "engine": {"name": "vllm", "simulated": True},
         "search_space": {"max-num-seqs": [16, 32]},
         "benchmark": {"scenarios": ["D(128,32)"], "concurrency": [4]}}
URL = "sqlite:////tmp/restore.db"


def _latest(number: int, status: TrialStatus, reason: FailureReason | None = None,
            baseline: bool = False) -> TrialRecord:
    return TrialRecord(study="restore", number=number, status=status, reason=reason,
                       baseline=baseline)


def test_a_state_that_knows_every_trial_and_finished_only_results_is_used() -> None:
    latest = [_latest(0, TrialStatus.SUCCEEDED, baseline=True),  # a Ray task, not Tune's
              _latest(1, TrialStatus.SUCCEEDED),
              _latest(2, TrialStatus.FAILED, FailureReason.INFEASIBLE_CONFIG),  # a result
              _latest(3, TrialStatus.FAILED, FailureReason.DRIVER_LOST),
              _latest(4, TrialStatus.SUCCEEDED)]
    # 3 was running (restarts), 4 finished after Tune last saved (reported, not run), 5 was
    # pending (never started: no row).
    states = {1: "TERMINATED", 2: "TERMINATED", 3: "RUNNING", 4: "RUNNING", 5: "PENDING"}
    assert restore_verdict(states, latest) is None


def test_a_state_that_lags_the_database_is_not_used() -> None:
    latest = [_latest(1, TrialStatus.SUCCEEDED), _latest(2, TrialStatus.FAILED,
                                                          FailureReason.DRIVER_LOST)]
    why = restore_verdict({1: "TERMINATED"}, latest)
    assert why is not None and "predates trial 2" in why


def test_a_state_that_finished_trials_the_database_runs_again_is_not_used() -> None:
    """A cancelled run: Tune ended trials the database has as cancelled; a trial Tune gave
    up on (ERROR) the database has as lost to the platform."""
    cancelled = [_latest(1, TrialStatus.FAILED, FailureReason.CANCELLED)]
    why = restore_verdict({1: "TERMINATED"}, cancelled)
    assert why is not None and "trial 1 terminated" in why and "cancelled" in why
    lost = [_latest(1, TrialStatus.FAILED, FailureReason.NODE_LOST)]
    why = restore_verdict({1: "ERROR"}, lost)
    assert why is not None and "trial 1 error" in why and "node_lost" in why


def test_tune_state_needs_its_directory_and_a_matching_run_mark(tmp_path: Path) -> None:
    study = parse_study(STUDY)
    experiment = tmp_path / "ray" / "restore"
    assert "no Tune experiment directory" in str(tune_trial_states(experiment, study, URL))
    experiment.mkdir(parents=True)
    assert "no servetune run mark" in str(tune_trial_states(experiment, study, URL))
    write_run_mark(experiment, study, URL)
    assert URL not in (experiment / RUN_MARK).read_text()  # hashed: URLs carry passwords
    # Marked, but Tune saved nothing yet.
    assert tune_trial_states(experiment, study, URL) == "Tune saved no experiment state"
    other = parse_study({**STUDY, "search_space": {"max-num-seqs": [16, 32, 64]}})
    assert "another study config or database" in str(tune_trial_states(experiment, other, URL))
    assert "another study config or database" in str(
        tune_trial_states(experiment, study, "sqlite:////tmp/elsewhere.db"))
    # The Ray address is not part of it: a study may be resumed as a Ray job.
    joined = study.model_copy(update={"cluster": study.cluster.model_copy(
        update={"address": "auto"})})
    assert tune_trial_states(experiment, joined, URL) == "Tune saved no experiment state"
    (experiment / RUN_MARK).write_text(json.dumps({"study": "restore"}))
    assert "another study config or database" in str(tune_trial_states(experiment, study, URL))


def test_a_pickled_lazy_store_keeps_the_study_not_the_database_url() -> None:
    """Tune writes its callbacks and scheduler into ``tuner.pkl``: the URL (and its password)
    stays in the driver process, where a restored copy finds it by study name."""
    url = "postgresql+psycopg://servetune:s3cret@db.internal/servetune"
    pickled = pickle.dumps(LazyStore("restore", url))
    assert b"s3cret" not in pickled and b"db.internal" not in pickled
    LazyStore.register("restore", "sqlite:////tmp/moved.db")
    assert pickle.loads(pickled).url == "sqlite:////tmp/moved.db"
