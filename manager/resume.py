"""Resuming a study whose driver died: from Tune's saved state when it agrees with the
database (the system of record), else from the database alone.

``servetune resume`` first reads what the store holds: attempts still ``running`` have no
live trial (their driver, which owned the trial actors, is gone) and become ``driver_lost``;
trials whose last attempt ended for a platform reason (driver or node lost, infrastructure
error) or was cancelled run again under their own number, as their next attempt; finished
trials are not run again.

Tune's experiment directory, when it is still there, holds the searcher's own state (its
sampler, its queue) and every trial Tune created. ``restore_verdict`` compares it with the
database: Tune's saved state is used (``Tuner.restore``: its unfinished trials restart under
their names, finished ones stay finished) only when it knows every trial the database has
and has as finished only trials the database holds a result of. A state that lags the
database (saved before the last trials started), one of a cancelled run (Tune ended the
trials the database has as cancelled), or one that is gone (a node that is gone, another
machine) gives a new Tune run seeded from the database: finished trials' results seed the
searcher and new trials continue the numbering. Either way a trial whose result is stored
is never run again (``driver.servetune_trial`` reports the stored result instead).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray.tune.search.optuna import OptunaSearch

from common.config import StudyConfig
from common.results import FailureReason, TrialRecord, TrialStatus, latest_attempts
from common.store import Store
from manager.faults import trial_number
from manager.space import SearchPlan, trial_flags
from manager.warm_start import to_point

logger = logging.getLogger(__name__)
# Written into Tune's experiment directory when a study starts: which study config and
# database the saved state belongs to (a state of another config or database is not used).
RUN_MARK = "servetune-run.json"
# Tune's statuses of a trial it will not run again on restore.
TUNE_FINISHED = frozenset({"TERMINATED", "ERROR"})


@dataclass(frozen=True)
class Resumption:
    """What a resumed study still has to do."""

    # (trial number, Tune config) to run again, in number order.
    rerun: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    # (Tune config, objective values: the score, or one value per objective) of trials that
    # finished: the searcher learns them instead of running them.
    finished: list[tuple[dict[str, Any], list[float]]] = field(default_factory=list)
    # Grid points (as JSON keys) already run to a final result.
    done_points: frozenset[str] = frozenset()
    finished_count: int = 0
    next_number: int = 0
    baseline_done: bool = False
    driver_lost: list[TrialRecord] = field(default_factory=list)
    # Each trial's latest attempt, driver_lost marked.
    latest: list[TrialRecord] = field(default_factory=list)

    def numbers(self) -> list[int]:
        """Trial numbers the resumed run hands out first (the reruns')."""
        return [number for number, _ in self.rerun]


def point_key(point: dict[str, Any]) -> str:
    return json.dumps(point, sort_keys=True, default=str)


def prepare_resume(study: StudyConfig, plan: SearchPlan, store: Store) -> Resumption:
    """Mark the dead driver's running attempts ``driver_lost`` and work out what is left."""
    lost = store.end_running(study.name, FailureReason.DRIVER_LOST,
                             "the study's driver stopped while this trial ran; run again on "
                             "resume")
    latest = latest_attempts(store.trials(study.name))
    rerun: list[tuple[int, dict[str, Any]]] = []
    finished: list[tuple[dict[str, Any], list[float]]] = []
    done: set[str] = set()
    baseline_done = False
    count = 0
    for record in latest:
        again = record.status is TrialStatus.FAILED and not record.is_result
        if record.baseline:
            baseline_done = not again
            continue
        point = config_of(study, plan, record.params)
        if again:
            if point is not None:
                rerun.append((record.number, point))
            continue
        count += 1
        if point is None:
            continue
        done.add(point_key(point))
        values = (record.objective_values if study.objective.multi
                  else [record.score] if record.score is not None else None)
        if values:
            finished.append((point, list(values)))
    numbers = [r.number for r in latest]
    return Resumption(rerun=rerun, finished=finished, done_points=frozenset(done),
                      finished_count=count, next_number=max(numbers, default=-1) + 1,
                      baseline_done=baseline_done, driver_lost=lost, latest=latest)


def config_of(study: StudyConfig, plan: SearchPlan,
              params: dict[str, Any]) -> dict[str, Any] | None:
    """The Tune config (a grid point, or a point in the search domains) of stored params."""
    if plan.grid_points is None:
        return to_point(study, plan, params)
    for point in plan.grid_points:
        flags = trial_flags(study, plan, point)
        if {k: v for k, v in flags.items() if k not in study.fixed_flags} == params:
            return point
    return None


class ResumingOptunaSearch(OptunaSearch):
    """Optuna's searcher told what a resumed study already knows: finished trials are added
    as evaluated, trials to run again are queued first."""

    def __init__(self, *args: Any, finished: list[tuple[dict[str, Any], list[float]]],
                 rerun: list[dict[str, Any]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._resume_finished = finished
        self._resume_rerun = rerun

    def _setup_study(self, mode: Any) -> None:
        super()._setup_study(mode)
        multi = isinstance(self._metric, list)
        for point, values in self._resume_finished:
            self.add_evaluated_point(point, values if multi else values[0])
        for point in self._resume_rerun:
            self._ot_study.enqueue_trial(point)


def run_mark(study: StudyConfig, database_url: str) -> dict[str, str]:
    """What ties a Tune experiment directory to a study's config and database (hashes: the
    URL may carry a password)."""
    # Not the Ray address: a study may be resumed from another shell or as a Ray job.
    dumped = study.model_dump(mode="json")
    dumped["cluster"].pop("address", None)
    config = json.dumps(dumped, sort_keys=True, default=str)
    return {"study": study.name,
            "config_sha256": hashlib.sha256(config.encode()).hexdigest(),
            "database_sha256": hashlib.sha256(database_url.encode()).hexdigest()}


def write_run_mark(experiment_dir: Path, study: StudyConfig, database_url: str) -> None:
    experiment_dir.mkdir(parents=True, exist_ok=True)
    (experiment_dir / RUN_MARK).write_text(json.dumps(run_mark(study, database_url)))


def tune_trial_states(experiment_dir: Path, study: StudyConfig,
                      database_url: str) -> dict[int, str] | str:
    """Tune's saved status of each trial (by trial number) of the study's experiment, or why
    there is no saved state to use."""
    if not experiment_dir.is_dir():
        return f"no Tune experiment directory at {experiment_dir}"
    try:
        mark = json.loads((experiment_dir / RUN_MARK).read_text())
    except (OSError, ValueError):
        return "Tune's experiment directory has no servetune run mark"
    if mark != run_mark(study, database_url):
        return "Tune's saved state belongs to another study config or database"
    try:
        return _saved_trial_states(experiment_dir)
    except Exception as e:  # noqa: BLE001 - any unreadable state falls back to the database
        logger.warning("Tune's saved state in %s is unreadable: %r", experiment_dir, e)
        return f"Tune's saved state is unreadable ({type(e).__name__})"


def restorable_states(experiment_dir: Path, study: StudyConfig, database_url: str,
                      latest: list[TrialRecord]) -> dict[int, str] | str:
    """Tune's saved trial states when ``Tuner.restore`` may resume the study from them,
    else why not (no usable state, or one that disagrees with the database)."""
    states = tune_trial_states(experiment_dir, study, database_url)
    if isinstance(states, str):
        return states
    return restore_verdict(states, latest) or states


def _saved_trial_states(experiment_dir: Path) -> dict[int, str] | str:
    # Tune's own readers of its experiment state (Ray is pinned; tests cover this version).
    from ray.tune.execution.experiment_state import _find_newest_experiment_checkpoint
    from ray.tune.experiment import Trial
    from ray.tune.utils.serialization import _loads_with_cloudpickle

    newest = _find_newest_experiment_checkpoint(str(experiment_dir))
    if newest is None:
        return "Tune saved no experiment state"
    state = _loads_with_cloudpickle(Path(newest).read_text())
    states: dict[int, str] = {}
    for trial_json, _ in state["trial_data"]:
        trial = Trial.from_json_state(trial_json, stub=True)
        states[trial_number(trial)] = str(trial.status)
    if not states:
        return "Tune saved no trials"
    return states


def restore_verdict(tune_states: dict[int, str], latest: list[TrialRecord]) -> str | None:
    """Why Tune's saved trial states cannot resume the study the database holds (its trials'
    latest attempts, ``driver_lost`` already marked), or None when they can."""
    for record in latest:
        if record.baseline:  # a Ray task of the driver's, not a Tune trial
            continue
        status = tune_states.get(record.number)
        if status is None:
            return (f"Tune's saved state predates trial {record.number} (saved before it "
                    "started)")
        if status in TUNE_FINISHED and not record.is_result:
            return (f"Tune has trial {record.number} {status.lower()}, the database has it "
                    f"{record.reason.value if record.reason else record.status.value} "
                    "(to run again)")
    return None
