"""Scores: one number per trial, higher is better, finite for failures too.

The objective value is read from the benchmark levels (mean over levels: throughput totals, or
the chosen statistic of a latency); throughput can be divided by the trial's GPU count. The
score is the value for maximized metrics and its negative for minimized ones. A failed trial
gets a finite score below every successful one, graded by how far it got (a config that cannot
even start is worse than one that failed late), because ±inf scores blind a TPE searcher.
"""

from __future__ import annotations

from collections.abc import Sequence

from common.benchmark import LevelMetrics
from common.config import ObjectiveSection
from common.results import FailureReason

# How bad each failure is, in [0, 1]: 1 = worst (the config cannot run at all).
FAILURE_SEVERITY: dict[FailureReason, float] = {
    FailureReason.INFEASIBLE_CONFIG: 1.0,
    FailureReason.ENGINE_CRASH: 0.8,
    FailureReason.STARTUP_TIMEOUT: 0.7,
    FailureReason.BENCHMARK_ERROR: 0.5,
    FailureReason.SLO_VIOLATED: 0.2,
}
# Latency scores are −milliseconds; failures sit below any plausible latency (about 3 hours).
LATENCY_FAILURE_FLOOR_MS = 1e7


def objective_value(objective: ObjectiveSection, levels: Sequence[LevelMetrics],
                    num_gpus: int) -> float | None:
    """The objective over the levels that completed requests; None if none did."""
    usable = [level for level in levels if level.num_completed > 0]
    if not usable:
        return None
    values = [_metric(objective, level) for level in usable]
    value = sum(values) / len(values)
    if objective.per_gpu and objective.maximize:
        value /= max(num_gpus, 1)
    return value


def score(objective: ObjectiveSection, value: float) -> float:
    return value if objective.maximize else -value


def failure_score(objective: ObjectiveSection, reason: FailureReason) -> float:
    """A finite score below every success: throughput scores are >= 0, latency scores are
    > -LATENCY_FAILURE_FLOOR_MS."""
    severity = FAILURE_SEVERITY.get(reason, 0.6)
    if objective.maximize:
        return -(1.0 + severity)
    return -LATENCY_FAILURE_FLOOR_MS * (1.0 + severity)


def _metric(objective: ObjectiveSection, level: LevelMetrics) -> float:
    metric = objective.metric
    if metric == "output_throughput":
        return level.output_tokens_per_s
    if metric == "total_throughput":
        return level.total_tokens_per_s
    if metric == "requests_per_s":
        return level.requests_per_s
    stats = {"e2e_latency": level.e2e_latency_ms, "ttft": level.ttft_ms,
             "tpot": level.tpot_ms}[metric]
    return float(getattr(stats, objective.statistic))
