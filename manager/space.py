"""From a study's search space to what Ray Tune searches, with infeasible layouts pruned.

Parallelism flags are searched jointly: every combination of their values is one choice of a
single categorical param, ``parallel``, and combinations that break an engine constraint
(``common.constraints``: SGLang's ep-size must divide tp-size, ...) or need more GPUs than the
largest node has are removed before any trial runs (Ray would leave such a trial PENDING
forever); each pruned combination keeps the reason it was removed. Flags tied to a dimension
(SGLang ``ep: true``: ep-size = tp-size) take its value in every layout. A grid is
expanded here into explicit points (cut at ``max_trials``); random and TPE search get Tune
domains (lists → choice, ranges → uniform / log-uniform / quantized / integer).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ray import tune

from common.config import NumericRange, StudyConfig
from common.constraints import violations
from common.errors import ConfigError
from common.params import parallel_key, parallel_sizes, world_size

PARALLEL_PARAM = "parallel"


class Pruned(NamedTuple):
    """A parallel layout removed before any trial, with the reason (the constraint's id and
    rule, or the GPU limit)."""

    combo: dict[str, Any]
    gpus: int
    reason: str


@dataclass(frozen=True)
class SearchPlan:
    """What the driver hands to Tune, and what ``servetune validate`` prints."""

    param_space: dict[str, Any]
    grid_points: list[dict[str, Any]] | None
    layouts: dict[str, dict[str, Any]]
    infeasible: list[Pruned]
    size: int | None
    max_node_gpus: int
    truncated_from: int | None = None
    gpu_counts: list[int] = field(default_factory=list)
    layout_gpus: dict[str, int] = field(default_factory=dict)
    """Each remaining layout's GPU count (fixed flags included)."""

    @property
    def num_samples(self) -> int:
        return len(self.grid_points) if self.grid_points is not None else -1


def build_plan(study: StudyConfig, max_node_gpus: int) -> SearchPlan:
    """Validate feasibility against the largest node and build the Tune search inputs."""
    engine = study.engine.name
    parallel_space = {f: spec for f, spec in study.search_space.items()
                      if parallel_key(engine, f) is not None}
    other_space = {f: spec for f, spec in study.search_space.items() if f not in parallel_space}
    fixed_world = world_size(engine, study.fixed_flags)
    layouts, infeasible = _layouts(engine, parallel_space, study.fixed_flags, max_node_gpus,
                                   study.layout_ties)
    if not layouts:
        invalid = sorted({p.reason for p in infeasible if p.gpus <= max_node_gpus})
        if invalid:
            raise ConfigError(f"no parallel layout is valid for {engine}: " + "; ".join(invalid),
                              path="search_space", value=infeasible[0].combo, allowed=invalid)
        smallest = min(infeasible, key=lambda item: item.gpus)
        raise ConfigError(
            f"no parallel layout fits the largest node ({max_node_gpus} GPUs): the smallest, "
            f"{_label(smallest.combo) or 'the fixed flags'}, needs {smallest.gpus} GPUs "
            f"(fixed flags give {fixed_world}); lower tp/pp/dp or add GPUs per node",
            path="search_space", value=smallest.combo, allowed=[f"<= {max_node_gpus} GPUs"])
    layout_gpus = {label: world_size(engine, {**study.fixed_flags, **combo})
                   for label, combo in layouts.items()}
    gpu_counts = sorted(set(layout_gpus.values()))
    space: dict[str, Any] = {}
    if parallel_space:
        space[PARALLEL_PARAM] = list(layouts)
    space.update(other_space)
    if study.search.algorithm == "grid":
        points, total = _grid(space)
        cut = None
        if len(points) > study.search.max_trials:
            points, cut = points[:study.search.max_trials], total
        return SearchPlan({}, points, layouts, infeasible, total, max_node_gpus, cut, gpu_counts,
                          layout_gpus)
    domains = {name: _domain(name, spec) for name, spec in space.items()}
    return SearchPlan(domains, None, layouts, infeasible, _size(space), max_node_gpus, None,
                      gpu_counts, layout_gpus)


def trial_flags(study: StudyConfig, plan: SearchPlan, config: dict[str, Any]) -> dict[str, Any]:
    """The engine flags of one trial: fixed flags, then the sampled params (layout expanded)."""
    flags: dict[str, Any] = dict(study.fixed_flags)
    for name, value in config.items():
        if name == PARALLEL_PARAM:
            flags.update(plan.layouts[value])
        elif isinstance(value, float):
            flags[name] = round(value, 6)  # quantized samples carry float noise (0.81000001)
        else:
            flags[name] = value
    return flags


def _layouts(engine: str, parallel_space: dict[str, Any], fixed: dict[str, Any],
             max_gpus: int, ties: dict[str, str] | None = None,
             ) -> tuple[dict[str, dict[str, Any]], list[Pruned]]:
    names = list(parallel_space)
    choices = [_values(parallel_space[n]) for n in names]
    feasible: dict[str, dict[str, Any]] = {}
    infeasible: list[Pruned] = []
    for values in itertools.product(*choices):
        combo: dict[str, Any] = {n: v if isinstance(v, bool) else int(v)
                                 for n, v in zip(names, values, strict=True)}
        for flag, dim in (ties or {}).items():
            combo[flag] = parallel_sizes(engine, {**fixed, **combo})[dim]
        flags = {**fixed, **combo}
        gpus = world_size(engine, flags)
        broken = violations(engine, flags)
        if broken:
            infeasible.append(Pruned(combo, gpus, str(broken[0])))
        elif gpus > max_gpus:
            infeasible.append(Pruned(combo, gpus, f"needs {gpus} GPUs > {max_gpus} "
                                                  "(largest node)"))
        else:
            feasible[_label(combo) or "fixed"] = combo
    return feasible, infeasible


def _label(combo: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in combo.items())


def _values(spec: Any) -> list[Any]:
    if isinstance(spec, NumericRange):
        return spec.grid() if spec.step is not None else _integer_range(spec)
    return list(spec)


def _integer_range(spec: NumericRange) -> list[int]:
    if not spec.is_int:
        raise ConfigError("a continuous range cannot be enumerated; give it a step",
                          value=spec.model_dump())
    return list(range(int(spec.low), int(spec.high) + 1))


def _grid(space: dict[str, Any]) -> tuple[list[dict[str, Any]], int]:
    names = list(space)
    axes = []
    for name in names:
        spec = space[name]
        if isinstance(spec, NumericRange) and spec.step is None:
            raise ConfigError(f"search_space.{name}: grid search needs a list or a range with a "
                              "step", path=f"search_space.{name}", value=spec.model_dump())
        axes.append(_values(spec))
    points = [dict(zip(names, values, strict=True)) for values in itertools.product(*axes)]
    return points, len(points)


def _domain(name: str, spec: Any) -> Any:
    if not isinstance(spec, NumericRange):
        return tune.choice(list(spec))
    low, high, step = spec.low, spec.high, spec.step
    if spec.is_int:
        if step is not None:
            return (tune.qlograndint(int(low), int(high), int(step)) if spec.log
                    else tune.qrandint(int(low), int(high), int(step)))
        return (tune.lograndint(int(low), int(high) + 1) if spec.log
                else tune.randint(int(low), int(high) + 1))
    if step is not None:
        return (tune.qloguniform(low, high, step) if spec.log
                else tune.quniform(low, high, step))
    return tune.loguniform(low, high) if spec.log else tune.uniform(low, high)


def _size(space: dict[str, Any]) -> int | None:
    total = 1
    for spec in space.values():
        if isinstance(spec, NumericRange):
            if spec.step is None and not spec.is_int:
                return None
            total *= len(_values(spec))
        else:
            total *= len(spec)
    return total


def describe(plan: SearchPlan) -> list[str]:
    """Human-readable lines for ``servetune validate``."""
    size = "continuous" if plan.size is None else f"{plan.size:,} configurations"
    lines = [f"search space: {size}"]
    if plan.truncated_from:
        lines.append(f"grid cut to max_trials: {len(plan.grid_points or [])} of "
                     f"{plan.truncated_from} points")
    lines.append(f"GPUs per trial: {', '.join(str(g) for g in plan.gpu_counts)} "
                 f"(largest node: {plan.max_node_gpus})")
    if plan.layouts and list(plan.layouts) != ["fixed"]:
        lines.append(f"parallel layouts ({len(plan.layouts)}): " + "; ".join(
            f"{label} ({_gpus(gpus)})"
            for label, gpus in plan.layout_gpus.items()))
    for pruned in plan.infeasible:
        lines.append(f"pruned: {_label(pruned.combo) or 'the fixed flags'} "
                     f"({_gpus(pruned.gpus)}): {pruned.reason}")
    return lines


def _gpus(count: int) -> str:
    return f"{count} GPU" + ("" if count == 1 else "s")
