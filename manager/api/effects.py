"""Parameter effects for the report: Optuna's PED-ANOVA importances and per-value mean scores.

The stored trials are replayed into an in-memory Optuna study (no sampler runs, nothing is
written anywhere), so the importance is Optuna's own. Results are cached per study state
(the fingerprint tag), so a report refreshing every few seconds does not recompute them.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.importance import PedAnovaImportanceEvaluator

from common.results import TrialStatus
from common.store.queries import ScorePoint
from manager.api.schemas import ParamEffectOut

logger = logging.getLogger(__name__)
MAX_TRIALS = 300  # the most recent succeeded trials: ~50 ms of PED-ANOVA, not ~250 ms at 1,000
MIN_TRIALS = 3
CACHE_SIZE = 64


class EffectsCache:
    """Thread-safe LRU of ``param_effects`` results keyed by (study, fingerprint tag)."""

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self._size = size
        self._lock = threading.Lock()
        self._items: OrderedDict[tuple[str, str], tuple[list[ParamEffectOut], str]] = (
            OrderedDict())

    def get(self, study: str, tag: str, points: Sequence[ScorePoint], maximize: bool
            ) -> tuple[list[ParamEffectOut], str]:
        key = (study, tag)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        value = param_effects(points, maximize)
        with self._lock:
            self._items[key] = value
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        return value


def param_effects(points: Sequence[ScorePoint], maximize: bool
                  ) -> tuple[list[ParamEffectOut], str]:
    """Per-param effects over the succeeded trials, most important first, and the method
    that ranked them (``ped-anova``, or ``none`` with too few trials or no varying param)."""
    done = [p for p in points if p.status is TrialStatus.SUCCEEDED
            and p.objective_value is not None and math.isfinite(p.objective_value)]
    done = done[-MAX_TRIALS:]
    names = sorted({name for p in done for name in p.params})
    distributions = {name: d for name in names
                     if (d := _distribution([p.params.get(name) for p in done])) is not None}
    importances: dict[str, float] = {}
    method = "none"
    if len(done) >= MIN_TRIALS and distributions:
        try:
            importances = _importances(done, distributions, maximize)
            method = "ped-anova"
        except (ValueError, RuntimeError, TypeError, ImportError) as e:  # degenerate sample
            logger.info("parameter importance unavailable: %s", e)
    effects = [_effect(name, done, importances.get(name)) for name in names]
    effects.sort(key=lambda e: (-(e.importance or 0.0), e.param))
    return effects, method


def _importances(points: Sequence[ScorePoint], distributions: dict[str, BaseDistribution],
                 maximize: bool) -> dict[str, float]:
    previous = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(direction="maximize" if maximize else "minimize")
        for p in points:
            params = {n: p.params[n] for n in distributions if n in p.params}
            if len(params) != len(distributions):
                continue
            study.add_trial(optuna.trial.create_trial(
                params=params, distributions=distributions, value=p.objective_value))
        evaluator = PedAnovaImportanceEvaluator()
        return dict(optuna.importance.get_param_importances(study, evaluator=evaluator))
    finally:
        optuna.logging.set_verbosity(previous)


def _distribution(values: list[Any]) -> BaseDistribution | None:
    present = [v for v in values if v is not None]  # trials without it are left out
    if len({_key(v) for v in present}) < 2:
        return None  # constant: nothing to attribute
    if all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return IntDistribution(min(present), max(present))
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
        return FloatDistribution(float(min(present)), float(max(present)))
    if all(isinstance(v, str | bool) for v in present):
        return CategoricalDistribution(sorted(set(present), key=_key))
    return None  # mixed or structured values: shown per value, not ranked


def _effect(name: str, points: Sequence[ScorePoint], importance: float | None
            ) -> ParamEffectOut:
    groups: dict[str, list[float]] = {}
    order: dict[str, Any] = {}
    for p in points:
        value = p.params.get(name)
        label = _key(value)
        order.setdefault(label, value)
        groups.setdefault(label, []).append(float(p.objective_value or 0.0))
    labels = sorted(groups, key=lambda k: _sort_key(order[k]))
    return ParamEffectOut(param=name, importance=importance, values=labels,
                          mean_scores=[sum(groups[k]) / len(groups[k]) for k in labels],
                          counts=[len(groups[k]) for k in labels])


def _key(value: Any) -> str:
    return "null" if value is None else str(value)


def _sort_key(value: Any) -> tuple[int, float, str]:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (0, float(value), "")
    return (1, 0.0, _key(value))
