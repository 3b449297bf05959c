"""Warm start: seed a study's searcher with the trials of earlier, comparable studies.

Comparable means the same model, engine, GPU type, workload (scenarios, concurrency levels,
requests per level) and objective, so the stored scores mean the same thing. ``search.
warm_start: true`` takes every such study in the database; a list names the studies (each must
still be comparable). A trial seeds the searcher when its params are a point of this study's
search space (its parallel layout one of the plan's, every other value inside the domain);
the latest attempt of each trial counts, cancelled and infrastructure-failed attempts do not.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from ray.tune.search.sample import Categorical, Domain, Float, Integer

from common.config import StudyConfig
from common.errors import ConfigError
from common.params import parallel_key
from common.results import TrialRecord, latest_attempts
from common.store import Store
from manager.space import PARALLEL_PARAM, SearchPlan

logger = logging.getLogger(__name__)


def comparable_key(config: dict[str, Any]) -> str:
    """What two studies must share for their scores to be comparable."""
    bench = config.get("benchmark", {})
    key = {"model": config.get("model", {}).get("name"),
           "engine": config.get("engine", {}).get("name"),
           "gpu_type": config.get("cluster", {}).get("gpu_type"),
           "scenarios": bench.get("scenarios"), "concurrency": bench.get("concurrency"),
           "requests_per_level": bench.get("requests_per_level"),
           "objective": config.get("objective")}
    return json.dumps(key, sort_keys=True)


def warm_start_points(study: StudyConfig, plan: SearchPlan,
                      store: Store) -> list[tuple[dict[str, Any], float]]:
    """(Tune config, score) pairs from earlier comparable studies; empty without warm start."""
    wanted = study.search.warm_start
    if wanted is False or plan.grid_points is not None:
        return []
    mine = comparable_key(study.model_dump(mode="json"))
    sources = []
    for info in store.studies():
        if info.name == study.name:
            continue
        if isinstance(wanted, list) and info.name not in wanted:
            continue
        if comparable_key(info.config) != mine:
            if isinstance(wanted, list):
                raise ConfigError(
                    f"search.warm_start: study {info.name!r} is not comparable (its model, "
                    "engine, GPU type, workload or objective differ)",
                    path="search.warm_start", value=info.name)
            continue
        sources.append(info.name)
    if isinstance(wanted, list):
        missing = sorted(set(wanted) - set(sources))
        if missing:
            raise ConfigError(f"search.warm_start: no study named {missing} in the database",
                              path="search.warm_start", value=missing)
    points: dict[str, tuple[dict[str, Any], float]] = {}
    for name in sources:
        for record in _learnable(store.trials(name)):
            point = to_point(study, plan, record.params)
            if point is not None and record.score is not None:
                points.setdefault(json.dumps(point, sort_keys=True), (point, record.score))
    if points:
        print(f"warm start: {len(points)} trials from {', '.join(sources)}", flush=True)
    return list(points.values())


def to_point(study: StudyConfig, plan: SearchPlan,
             params: dict[str, Any]) -> dict[str, Any] | None:
    """The Tune config of stored params in this study's space, or None if it is not one."""
    engine = study.engine.name
    layout = {k: v for k, v in params.items() if parallel_key(engine, k) is not None}
    rest = {k: v for k, v in params.items() if k not in layout}
    point: dict[str, Any] = {}
    if PARALLEL_PARAM in plan.param_space:
        label = next((name for name, combo in plan.layouts.items() if combo == layout), None)
        if label is None:
            return None
        point[PARALLEL_PARAM] = label
    elif layout:
        return None
    expected = set(plan.param_space) - {PARALLEL_PARAM}
    if set(rest) != expected:
        return None
    for name, value in rest.items():
        if not _inside(plan.param_space[name], value):
            return None
        point[name] = value
    return point


def _inside(domain: Domain, value: Any) -> bool:
    if isinstance(domain, Categorical):
        return value in domain.categories
    if isinstance(domain, Integer):
        return isinstance(value, int) and domain.lower <= value < domain.upper
    if isinstance(domain, Float):
        return isinstance(value, (int, float)) and domain.lower <= value <= domain.upper
    return False


def _learnable(records: list[TrialRecord]) -> list[TrialRecord]:
    """The last attempt of each non-baseline trial, where it is a result a searcher learns
    from (``TrialRecord.is_result``)."""
    return [r for r in latest_attempts(records) if not r.baseline and r.is_result]
