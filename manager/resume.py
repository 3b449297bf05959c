"""Resuming a study whose driver died, from the database (the system of record).

``servetune resume`` reads what the store holds: attempts still ``running`` have no live
trial (their driver, which owned the trial actors, is gone) and become ``driver_lost``;
trials whose last attempt ended for a platform reason (driver or node lost, infrastructure
error) or was cancelled run again under their own number, as their next attempt; finished
trials are not run again, and their results seed the searcher. New trials continue the
numbering. Tune's experiment directory is not needed: it may be on a node that is gone, and
the database has everything the search needs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ray.tune.search.optuna import OptunaSearch

from common.config import StudyConfig
from common.results import FailureReason, TrialRecord, TrialStatus, latest_attempts
from common.store import Store
from manager.space import SearchPlan, trial_flags
from manager.warm_start import to_point


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
                      baseline_done=baseline_done, driver_lost=lost)


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
