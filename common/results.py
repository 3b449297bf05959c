"""Domain types of a study's outcome: trial status, failure reasons and the trial record.

A ``TrialRecord`` is what one trial attempt leaves behind, from the moment it starts (status
``running``) to its terminal state; the store persists it keyed by (study, number, attempt), so
writing the same record twice never duplicates a row.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from common.benchmark import LevelMetrics


class TrialStatus(str, enum.Enum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class FailureReason(str, enum.Enum):
    """Why a trial failed. Deterministic reasons are results the searcher learns from;
    infrastructure reasons are retried (``retryable``)."""

    INFEASIBLE_CONFIG = "infeasible_config"  # e.g. OOM at startup, invalid flag combination
    STARTUP_TIMEOUT = "startup_timeout"
    ENGINE_CRASH = "engine_crash"
    BENCHMARK_ERROR = "benchmark_error"
    SLO_VIOLATED = "slo_violated"
    NODE_LOST = "node_lost"
    DRIVER_LOST = "driver_lost"
    INFRA_ERROR = "infra_error"
    # The trial ran past its deadline (``benchmark.timeouts.trial_s``).
    TRIAL_TIMEOUT = "trial_timeout"
    # Stopped between benchmark levels by the search's scheduler (ASHA): scored on the
    # levels it ran, below the trials that went on.
    PRUNED = "pruned"
    # No live node can ever hold the trial's GPUs (capacity lost after the study started).
    UNSCHEDULABLE = "unschedulable"
    CANCELLED = "cancelled"

    @property
    def retryable(self) -> bool:
        return self in (FailureReason.NODE_LOST, FailureReason.DRIVER_LOST,
                        FailureReason.INFRA_ERROR)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class TrialRecord:
    """One attempt of one trial of a study."""

    study: str
    number: int
    attempt: int = 0
    trial_id: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    # The study's parallel/quantization section values this attempt ran (``parallel.tp``: 4),
    # beside the native flags in ``params`` and ``argv``; empty without those sections.
    intent: dict[str, Any] = field(default_factory=dict)
    argv: list[str] = field(default_factory=list)
    gpu_ids: list[str] = field(default_factory=list)
    node: str = ""
    # Ray's id of the node (several nodes can share an address, e.g. in a local test cluster).
    node_id: str = ""
    status: TrialStatus = TrialStatus.RUNNING
    reason: FailureReason | None = None
    message: str = ""
    score: float | None = None
    objective_value: float | None = None
    # One value per objective, the primary first (multi-objective studies; failures included).
    objective_values: list[float] | None = None
    # Per-level SLO verdicts and the worst violation (``Evaluation.slo_report``).
    slo: dict[str, Any] | None = None
    # The engine-defaults reference trial the study's gain is measured against.
    baseline: bool = False
    phase_timings_s: dict[str, float] = field(default_factory=dict)
    started_at: datetime = field(default_factory=utcnow)
    finished_at: datetime | None = None
    log_excerpt: str = ""
    levels: list[LevelMetrics] = field(default_factory=list)

    @property
    def is_result(self) -> bool:
        """Whether this attempt is a result of its config: a success or a deterministic
        failure. Not one: still running, lost to the platform (retried) or cancelled (a
        resumed study runs those again; searchers learn only from results)."""
        if self.status is TrialStatus.SUCCEEDED:
            return True
        return (self.status is TrialStatus.FAILED and self.reason is not None
                and not self.reason.retryable and self.reason is not FailureReason.CANCELLED)


def latest_attempts(records: list[TrialRecord]) -> list[TrialRecord]:
    """The last attempt of each trial number, in number order: a study's outcome (earlier
    attempts of a retried trial stay in the store as its history)."""
    latest: dict[int, TrialRecord] = {}
    for record in records:
        if record.number not in latest or record.attempt > latest[record.number].attempt:
            latest[record.number] = record
    return [latest[n] for n in sorted(latest)]
