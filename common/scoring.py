"""Scores: what a trial's benchmark levels are worth under the study's objective and SLOs.

Per level, every SLO that applies there is checked (``judge_level``): a hard SLO above its
threshold fails the level; a soft one adds ``weight · exp(violation / steepness)`` to the level's
penalty, with violation = (actual − threshold) / threshold, and fails the level once the
violation passes its ``fail_ratio``. Failed levels are left out; the objective is aggregated over
the compliant ones (``evaluate``): their mean, or the value at the best compliant level. A soft
penalty makes a level's value worse by the factor (1 + Σ penalties): latencies are multiplied by
it, throughputs divided by it. Throughput may be divided by the trial's GPU count.

The score (one number, higher is better) is the primary objective's value, negated for latency
objectives. Failed trials get finite scores below every success (``failure_score``), graded by
cause and by how far the trial got, because ±inf scores blind a TPE searcher: a config that
cannot start is worse than one whose benchmark broke late, and a trial that missed its SLOs by a
little is better than one that missed by a lot. Multi-objective studies report one value per
objective in its own direction (``failure_values`` for failures).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from common.benchmark import LevelMetrics
from common.config import ObjectiveSection, ObjectiveTerm, SloSection
from common.results import FailureReason

# How bad each failure cause is, in [0, 1]: 1 = the config cannot run at all.
CAUSE_SEVERITY: dict[FailureReason, float] = {
    FailureReason.INFEASIBLE_CONFIG: 1.0,
    FailureReason.ENGINE_CRASH: 0.8,
    FailureReason.STARTUP_TIMEOUT: 0.7,
    FailureReason.BENCHMARK_ERROR: 0.5,
    FailureReason.TRIAL_TIMEOUT: 0.6,
    FailureReason.UNSCHEDULABLE: 1.0,
}
DEFAULT_SEVERITY = 0.6
# A failure late in the benchmark is milder: severity × (1 − PROGRESS_RELIEF × progress).
PROGRESS_RELIEF = 0.5
# Missing the SLOs is the mildest failure: severity in (0, SLO_SEVERITY], by the violation.
SLO_SEVERITY = 0.2
# Latency scores are −milliseconds; failures sit below any plausible latency (about 3 hours).
LATENCY_FAILURE_FLOOR_MS = 1e7


@dataclass(frozen=True)
class LevelVerdict:
    """How one benchmark level fared against the SLOs."""

    scenario: str
    concurrency: int
    compliant: bool
    penalty: float = 0.0
    violations: dict[str, float] = field(default_factory=dict)
    failed: tuple[str, ...] = ()

    @property
    def worst_violation(self) -> float:
        return max(self.violations.values(), default=0.0)

    def to_dict(self) -> dict[str, object]:
        return {"scenario": self.scenario, "concurrency": self.concurrency,
                "compliant": self.compliant, "penalty": self.penalty,
                "violations": dict(self.violations), "failed": list(self.failed)}


@dataclass(frozen=True)
class Evaluation:
    """A trial's objective values (primary first) and the verdict of each level."""

    values: tuple[float, ...] | None
    verdicts: tuple[LevelVerdict, ...]
    best_level: tuple[str, int] | None = None

    @property
    def compliant(self) -> bool:
        return self.values is not None

    @property
    def worst_violation(self) -> float:
        return max((v.worst_violation for v in self.verdicts), default=0.0)

    @property
    def least_violation(self) -> float:
        """The smallest worst-violation over the levels: how close the trial came."""
        return min((v.worst_violation for v in self.verdicts), default=0.0)

    def slo_report(self) -> dict[str, object]:
        return {"levels": [v.to_dict() for v in self.verdicts],
                "worst_violation": self.worst_violation,
                "best_level": list(self.best_level) if self.best_level else None}


def judge_level(level: LevelMetrics, slos: Sequence[SloSection],
                max_error_rate: float = 1.0) -> LevelVerdict:
    """Check one level against the SLOs that apply to it; a level that completed no request,
    or whose error rate exceeds ``max_error_rate``, is never compliant."""
    violations: dict[str, float] = {}
    failed: list[str] = []
    penalty = 0.0
    for slo in slos:
        if slo.concurrency is not None and level.concurrency not in slo.concurrency:
            continue
        actual = latency_stat(level, slo.metric, slo.statistic)
        if math.isnan(actual) or actual <= slo.max_ms:
            continue
        violation = (actual - slo.max_ms) / slo.max_ms
        violations[slo.label] = max(violation, violations.get(slo.label, 0.0))
        if slo.kind == "hard" or (slo.fail_ratio is not None and violation > slo.fail_ratio):
            failed.append(slo.label)
        else:
            penalty += soft_penalty(violation, slo.weight, slo.steepness)
    if level.num_completed == 0:
        failed.append("no_completed_requests")
    elif level.error_rate > max_error_rate:
        failed.append("error_rate")
    return LevelVerdict(level.scenario, level.concurrency, not failed, penalty, violations,
                        tuple(failed))


def soft_penalty(violation: float, weight: float, steepness: float) -> float:
    """``weight · exp(violation / steepness)`` for a violation ratio > 0, else 0."""
    if violation <= 0:
        return 0.0
    return weight * math.exp(min(violation / steepness, 700.0))


def evaluate(objective: ObjectiveSection, levels: Sequence[LevelMetrics],
             num_gpus: int) -> Evaluation:
    """The objective values over the SLO-compliant levels (``values`` is None if none is)."""
    verdicts = tuple(judge_level(level, objective.slos, objective.max_error_rate)
                     for level in levels)
    compliant = [(level, verdict) for level, verdict in zip(levels, verdicts, strict=True)
                 if verdict.compliant]
    if not compliant:
        return Evaluation(None, verdicts)
    terms = objective.terms
    per_level = [tuple(term_value(term, level, num_gpus, verdict.penalty) for term in terms)
                 for level, verdict in compliant]
    if objective.aggregate == "best_level":
        primary = terms[0]
        best = (max if primary.maximize else min)(range(len(per_level)),
                                                  key=lambda i: per_level[i][0])
        level = compliant[best][0]
        return Evaluation(per_level[best], verdicts, (level.scenario, level.concurrency))
    means = tuple(sum(values[i] for values in per_level) / len(per_level)
                  for i in range(len(terms)))
    return Evaluation(means, verdicts)


def term_value(term: ObjectiveTerm, level: LevelMetrics, num_gpus: int,
               penalty: float = 0.0) -> float:
    """One objective at one level, per GPU if asked, made worse by a soft SLO penalty."""
    if term.maximize:
        value = {"output_throughput": level.output_tokens_per_s,
                 "total_throughput": level.total_tokens_per_s,
                 "requests_per_s": level.requests_per_s}[term.metric]
        if term.per_gpu:
            value /= max(num_gpus, 1)
        return value / (1.0 + penalty)
    return latency_stat(level, term.metric, term.statistic) * (1.0 + penalty)


def latency_stat(level: LevelMetrics, metric: str, statistic: str) -> float:
    stats = {"e2e_latency": level.e2e_latency_ms, "ttft": level.ttft_ms,
             "tpot": level.tpot_ms}[metric]
    return float(getattr(stats, statistic))


def score(objective: ObjectiveSection, value: float) -> float:
    """The primary objective's value as a score: higher is better."""
    return value if objective.maximize else -value


def severity(reason: FailureReason, progress: float = 0.0, violation: float = 0.0) -> float:
    """How bad a failure is, in (0, 1]: by cause, milder the further the trial got
    (``progress``: the share of benchmark levels it completed); an SLO miss by how far the
    closest level was from compliance (``violation`` ratio)."""
    if reason is FailureReason.SLO_VIOLATED:
        return SLO_SEVERITY * (1.0 - math.exp(-max(violation, 1e-6)))
    progress = min(max(progress, 0.0), 1.0)
    return CAUSE_SEVERITY.get(reason, DEFAULT_SEVERITY) * (1.0 - PROGRESS_RELIEF * progress)


def failure_score(objective: ObjectiveSection, reason: FailureReason, progress: float = 0.0,
                  violation: float = 0.0) -> float:
    """A finite score below every success: throughput scores of successes are >= 0 and
    failures lie in [-2, -1); latency scores of successes are > -LATENCY_FAILURE_FLOOR_MS."""
    return -_failure_magnitude(objective.terms[0], severity(reason, progress, violation))


def failure_values(objective: ObjectiveSection, reason: FailureReason, progress: float = 0.0,
                   violation: float = 0.0) -> tuple[float, ...]:
    """Per-objective values of a failed trial, each in its own direction and worse than any
    success: throughputs negative, latencies past LATENCY_FAILURE_FLOOR_MS."""
    grade = severity(reason, progress, violation)
    return tuple(-_failure_magnitude(term, grade) if term.maximize
                 else _failure_magnitude(term, grade) for term in objective.terms)


def _failure_magnitude(term: ObjectiveTerm, grade: float) -> float:
    if term.maximize:
        return 1.0 + grade
    return LATENCY_FAILURE_FLOOR_MS * (1.0 + grade)


def stops_early(verdict: LevelVerdict) -> bool:
    """Whether a failed level means higher levels of the same scenario need not run: a hard
    failure (SLO beyond its limit, or nothing completed) only gets worse with more load."""
    return not verdict.compliant


def pareto_front(points: Sequence[tuple[int, Sequence[float]]],
                 maximize: Sequence[bool]) -> list[int]:
    """Ids of the points no other point dominates (at least as good in every objective and
    better in one), in the given order."""
    signed = [(pid, [v if up else -v for v, up in zip(values, maximize, strict=True)])
              for pid, values in points]
    front = []
    for pid, values in signed:
        dominated = any(
            all(o >= v for o, v in zip(other, values, strict=True))
            and any(o > v for o, v in zip(other, values, strict=True))
            for oid, other in signed if oid != pid)
        if not dominated:
            front.append(pid)
    return front
