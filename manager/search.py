"""Searchers by name: what Ray Tune gets for each ``search.algorithm``.

A registry of lazy factories (``SEARCHERS``): grid (the plan's explicit points), random
(uniform samples), tpe (Optuna's TPE; multi-objective TPE when the objective has
``pareto_with``) and nsga2 (Optuna's NSGA-II). Single-objective studies report ``score``
(higher is better); multi-objective ones report ``objective_<i>`` per objective, each in its
own direction. ``make_sampler`` is shared with the virtual-time benchmark of the searchers, so
what ``bench/`` measures is what a study runs.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna
from ray import tune
from ray.tune.search import BasicVariantGenerator, Searcher

from common.config import StudyConfig
from common.errors import ConfigError
from manager.resume import ResumingOptunaSearch, Resumption, point_key
from manager.space import SearchPlan

SCORE = "score"


@dataclass(frozen=True)
class SearchSetup:
    """The searcher and what the Tuner needs with it."""

    searcher: Searcher | BasicVariantGenerator
    num_samples: int
    param_space: dict[str, Any]
    metric: str | None
    mode: str | None


def objective_metrics(study: StudyConfig) -> tuple[list[str], list[str]]:
    """Result keys the searcher optimizes and their modes (``max``/``min``)."""
    if not study.objective.multi:
        return [SCORE], ["max"]
    terms = study.objective.terms
    return ([f"objective_{i}" for i in range(len(terms))],
            ["max" if t.maximize else "min" for t in terms])


def make_searcher(study: StudyConfig, plan: SearchPlan,
                  warm_points: list[tuple[dict[str, Any], float]] | None = None,
                  resume: Resumption | None = None) -> SearchSetup:
    """The searcher of ``study.search.algorithm`` over ``plan``; for a resumed study, the
    trials to run again come first and finished ones are not run again."""
    factory = SEARCHERS.get("grid" if plan.grid_points is not None else study.search.algorithm)
    if factory is None:
        raise ConfigError(f"search.algorithm: unknown searcher {study.search.algorithm!r}",
                          path="search.algorithm", value=study.search.algorithm,
                          allowed=sorted(SEARCHERS))
    return factory(study, plan, warm_points or [], resume)


class PicklableNSGAIISampler(optuna.samplers.NSGAIISampler):
    """Optuna's NSGA-II sampler, picklable again: Tune pickles the searcher with its sampler
    (``tuner.pkl``, searcher checkpoints), and Optuna 5.1's genetic samplers hold a
    ``threading.Lock`` without pickle support. The lock is left out and made anew."""

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        if state.pop("_thread_lock", None) is not None:
            state["_servetune_had_lock"] = True
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        had_lock = state.pop("_servetune_had_lock", False)
        self.__dict__.update(state)
        if had_lock:
            self._thread_lock = threading.Lock()


def make_sampler(study: StudyConfig) -> Any:
    """The Optuna sampler of a tpe or nsga2 study (seeded; TPE's random startup trials)."""
    # Multivariate TPE and the constant liar (for trials running side by side) are marked
    # experimental, and warn once per trial otherwise.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    search = study.search
    if search.algorithm == "nsga2":
        population = search.population_size or max(4, search.max_trials // 4)
        return PicklableNSGAIISampler(seed=search.seed, population_size=population)
    return optuna.samplers.TPESampler(seed=search.seed, n_startup_trials=search.startup_trials,
                                      multivariate=True, constant_liar=True)


def _single_metric(study: StudyConfig) -> tuple[str | None, str | None]:
    return (None, None) if study.objective.multi else (SCORE, "max")


def _grid(study: StudyConfig, plan: SearchPlan, warm: list[Any],
          resume: Resumption | None) -> SearchSetup:
    points = plan.grid_points or []
    space = {key: tune.choice(sorted({p[key] for p in points}, key=str)) for key in points[0]}
    if resume is not None:
        again = [point for _, point in resume.rerun]
        skip = resume.done_points | {point_key(p) for p in again}
        points = again + [p for p in points if point_key(p) not in skip]
    searcher = BasicVariantGenerator(points_to_evaluate=points,
                                     max_concurrent=study.search.max_concurrent_trials)
    # The points are given explicitly; Tune still wants each key declared in the space.
    return SearchSetup(searcher, len(points), space, *_single_metric(study))


def _random(study: StudyConfig, plan: SearchPlan, warm: list[Any],
            resume: Resumption | None) -> SearchSetup:
    again = [point for _, point in resume.rerun] if resume else []
    searcher = BasicVariantGenerator(points_to_evaluate=again or None,
                                     random_state=study.search.seed,
                                     max_concurrent=study.search.max_concurrent_trials)
    return SearchSetup(searcher, _budget(study, resume), plan.param_space,
                       *_single_metric(study))


def _budget(study: StudyConfig, resume: Resumption | None) -> int:
    """Trials still to start: the study's budget less those that finished before."""
    if resume is None:
        return study.search.max_trials
    return max(study.search.max_trials - resume.finished_count, len(resume.rerun))


def _optuna(study: StudyConfig, plan: SearchPlan, warm: list[tuple[dict[str, Any], float]],
            resume: Resumption | None) -> SearchSetup:
    from ray.tune.search.optuna import OptunaSearch

    metrics, modes = objective_metrics(study)
    if resume is not None:
        finished = [*resume.finished, *((point, [score]) for point, score in warm)]
        rerun = [point for _, point in resume.rerun]
        multi = study.objective.multi
        searcher = ResumingOptunaSearch(
            metric=metrics if multi else SCORE, mode=modes if multi else "max",
            sampler=make_sampler(study), finished=finished, rerun=rerun)
        return SearchSetup(searcher, _budget(study, resume), plan.param_space,
                           *_single_metric(study))
    kwargs: dict[str, Any] = {}
    if warm:
        kwargs = {"points_to_evaluate": [p for p, _ in warm],
                  "evaluated_rewards": [r for _, r in warm]}
    if study.objective.multi:
        searcher = OptunaSearch(metric=metrics, mode=modes, sampler=make_sampler(study))
    else:
        searcher = OptunaSearch(metric=SCORE, mode="max", sampler=make_sampler(study), **kwargs)
    return SearchSetup(searcher, study.search.max_trials, plan.param_space,
                       *_single_metric(study))


SEARCHERS: dict[str, Callable[..., SearchSetup]] = {
    "grid": _grid, "random": _random, "tpe": _optuna, "nsga2": _optuna,
}
