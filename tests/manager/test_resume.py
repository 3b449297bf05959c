"""The driver killed with SIGKILL in the middle of a sweep, then ``servetune resume``: the study
completes from the database with no lost and no duplicated trial, the attempts that were
running are recorded as driver_lost, and no engine process is left."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from common.config import load_study
from common.results import FailureReason, TrialStatus, latest_attempts, utcnow
from common.store import Store
from manager.resume import tune_trial_states
from tests.manager.test_driver import _processes_labelled

pytestmark = [pytest.mark.integration, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
STUDY = """\
name: resume-test
model: {name: meta-llama/Llama-3.1-8B-Instruct}
engine: {name: vllm, simulated: true}
search_space: {max-num-seqs: [16, 32, 64, 128, 256]}
search: {algorithm: grid, max_concurrent_trials: 2, baseline: true}
benchmark: {scenarios: ['D(128,32)'], concurrency: [4], requests_per_level: 8,
            timeouts: {startup_s: 60}}
cluster: {gpus_per_node: 2, dashboard: false}
"""


def _trials(db: Path) -> list:  # type: ignore[type-arg]
    try:
        with Store.open(f"sqlite:///{db}") as store:
            return store.trials("resume-test")
    except Exception:  # noqa: BLE001 - not created yet
        return []


def _running_s(record) -> float:  # type: ignore[no-untyped-def]
    return (utcnow() - record.started_at).total_seconds() if record.started_at else 0.0


def _private_ray_env() -> dict[str, str]:
    """This environment with a Ray temp dir of the test's own (short: socket paths)."""
    return dict(os.environ, SERVETUNE_RAY_TMPDIR=tempfile.mkdtemp(prefix="st-rs-", dir="/tmp"))


def _cli(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "manager.cli", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def _tune_knows_every_trial(study_file: Path, db: Path, rows: list) -> bool:  # type: ignore[type-arg]
    """Whether Tune's saved experiment state has every trial the database has."""
    study = load_study(study_file)
    states = tune_trial_states(db.parent / "ray" / study.name, study, f"sqlite:///{db}")
    return isinstance(states, dict) and {t.number for t in rows if not t.baseline} <= set(states)


@pytest.mark.timeout(900)
@pytest.mark.parametrize("tune_state", ["kept", "removed"])
def test_a_killed_driver_is_resumed_without_lost_or_duplicated_trials(
        tmp_path: Path, tune_state: str) -> None:
    """Resumed from Tune's saved state (``Tuner.restore``: it knows every trial the database
    has) or, with Tune's experiment directory gone, from the database alone."""
    study_file = tmp_path / "study.yaml"
    study_file.write_text(STUDY)
    db = tmp_path / "servetune-results" / "servetune.db"
    env = _private_ray_env()
    driver = _cli("run", str(study_file), env=env)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            rows = _trials(db)
            done = [t for t in rows if t.status is TrialStatus.SUCCEEDED and not t.baseline]
            # Killed while an attempt has just started: one near its end could still store
            # its result while its actor dies with the driver (legitimately: not lost).
            if (done and any(t.status is TrialStatus.RUNNING and _running_s(t) < 4
                             for t in rows)
                    and _tune_knows_every_trial(study_file, db, rows)):
                break
            assert driver.poll() is None, driver.communicate()[0]
            time.sleep(0.5)
        else:
            pytest.fail("the sweep never had a finished and a running trial at once")
        os.killpg(driver.pid, signal.SIGKILL)  # the driver and what it started in its group
        driver.wait(timeout=30)
    finally:
        if driver.poll() is None:
            driver.kill()
    # The trials' engines die with their actors (their lifeline), the actors with the driver.
    deadline = time.monotonic() + 60
    while _processes_labelled("resume-test") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _processes_labelled("resume-test") == []
    running_at_kill = {(t.number, t.attempt) for t in _trials(db)
                       if t.status is TrialStatus.RUNNING}
    assert running_at_kill

    # Tune's pickled run config holds no database URL (it may carry a password).
    assert str(db) not in (db.parent / "ray" / "resume-test" / "tuner.pkl").read_text(
        errors="replace")
    if tune_state == "removed":  # e.g. the driver's node is gone, or another machine resumes
        shutil.rmtree(db.parent / "ray" / "resume-test")
    resumed = _cli("resume", str(study_file), env=env)
    output, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, output
    assert "resuming resume-test" in output and "driver_lost" in output
    assert ("resuming from Tune's saved state" if tune_state == "kept"
            else "resuming from the database: no Tune experiment directory") in output, output

    rows = _trials(db)
    finals = latest_attempts(rows)
    assert [t.number for t in finals] == list(range(6))  # the baseline (0) and 5 grid points
    assert all(t.status is TrialStatus.SUCCEEDED for t in finals), [
        (t.number, t.attempt, t.reason, t.message) for t in rows]
    # No duplicate: one succeeded row per trial, each grid point run to the end once.
    succeeded = [t for t in rows if t.status is TrialStatus.SUCCEEDED]
    assert sorted(t.number for t in succeeded) == list(range(6))
    searched = [t.params["max-num-seqs"] for t in succeeded if not t.baseline]
    assert sorted(searched) == [16, 32, 64, 128, 256]
    # The attempts that were running became driver_lost and ran again as their next attempt.
    for number, attempt in running_at_kill:
        lost = next(t for t in rows if (t.number, t.attempt) == (number, attempt))
        assert lost.status is TrialStatus.FAILED and lost.reason is FailureReason.DRIVER_LOST
        assert any(t.number == number and t.attempt > attempt
                   and t.status is TrialStatus.SUCCEEDED for t in rows)
    assert not [t for t in rows if t.status is TrialStatus.RUNNING]
    assert _processes_labelled("resume-test") == []


def test_run_refuses_to_mix_with_an_earlier_run_and_resume_knows_a_finished_study(
        tmp_path: Path) -> None:
    """Before Ray starts: a second `run` of a study name that has trials is a configuration
    error naming `servetune resume`; `--replace` deletes the earlier run; `resume` of a
    finished study has nothing to do."""
    from common.results import TrialRecord, utcnow

    study_file = tmp_path / "study.yaml"
    study_file.write_text(STUDY)
    db = tmp_path / "servetune-results" / "servetune.db"
    with Store.open(f"sqlite:///{db}") as store:
        store.create_study("resume-test", {"name": "resume-test"})
        store.save_trial(TrialRecord(study="resume-test", number=0, status=TrialStatus.FAILED,
                                     reason=FailureReason.ENGINE_CRASH, finished_at=utcnow()))
    again = subprocess.run([sys.executable, "-m", "manager.cli", "run", str(study_file)],
                           cwd=REPO, capture_output=True, text=True, timeout=120)
    assert again.returncode == 2, again.stdout + again.stderr
    assert "already has 1 trial(s)" in again.stderr and "servetune resume" in again.stderr
    assert "Traceback" not in again.stderr
    with Store.open(f"sqlite:///{db}") as store:
        store.finish_study("resume-test", "succeeded", None)
        assert store.delete_study("resume-test") is True
        assert store.trials("resume-test") == [] and store.study("resume-test") is None
        store.create_study("resume-test", {"name": "resume-test"})
        store.finish_study("resume-test", "succeeded", None)
    done = subprocess.run([sys.executable, "-m", "manager.cli", "resume", str(study_file)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "nothing to resume" in done.stdout, done.stderr
    unknown = subprocess.run([sys.executable, "-m", "manager.cli", "resume", "no-such-study",
                              "--database-url", f"sqlite:///{db}"],
                             cwd=REPO, capture_output=True, text=True, timeout=120)
    assert unknown.returncode == 2 and "no study named 'no-such-study'" in unknown.stderr


@pytest.mark.timeout(900)
def test_cancel_stops_a_running_study_and_resume_finishes_it(tmp_path: Path) -> None:
    """`servetune cancel` from another process: the driver stops within seconds, the
    running trials are recorded cancelled, no engine is left, the study is cancelled; then
    `servetune resume` runs the cancelled trials again and finishes the study."""
    study_file = tmp_path / "study.yaml"
    study_file.write_text(STUDY.replace("baseline: true", "baseline: false"))
    db = tmp_path / "servetune-results" / "servetune.db"
    env = _private_ray_env()
    driver = _cli("run", str(study_file), env=env)
    try:
        deadline = time.monotonic() + 240
        while not any(t.status is TrialStatus.RUNNING for t in _trials(db)):
            assert time.monotonic() < deadline and driver.poll() is None
            time.sleep(0.5)
        cancel = subprocess.run([sys.executable, "-m", "manager.cli", "cancel", "resume-test",
                                 "--database-url", f"sqlite:///{db}"], cwd=REPO, env=env,
                                capture_output=True, text=True, timeout=300)
        output, _ = driver.communicate(timeout=120)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    assert cancel.returncode == 0, cancel.stdout + cancel.stderr
    assert "cancel requested" in cancel.stdout and "resume-test: cancelled" in cancel.stdout
    assert driver.returncode == 1 and "cancel requested" in output, output
    rows = _trials(db)
    assert rows and not [t for t in rows if t.status is TrialStatus.RUNNING]
    assert any(t.reason is FailureReason.CANCELLED for t in rows)
    assert _processes_labelled("resume-test") == []
    with Store.open(f"sqlite:///{db}") as store:
        info = store.study("resume-test")
    assert info is not None and info.status.value == "cancelled"

    resumed = _cli("resume", str(study_file), env=env)
    output, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, output
    # Tune ended the trials the database has as cancelled: its saved state is not used.
    assert "resuming from the database: Tune has trial" in output, output
    finals = latest_attempts(_trials(db))
    assert [t.number for t in finals] == list(range(5))
    assert all(t.status is TrialStatus.SUCCEEDED for t in finals)
