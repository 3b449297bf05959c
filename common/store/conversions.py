"""Conversions between table rows and domain types, in both directions.

Writes produce column-value dicts (the store upserts them with INSERT ... ON CONFLICT);
reads take loaded rows. NaN floats are written as NULL and NULL floats read back as NaN,
except ``score`` and ``objective_value``, where NULL means "none" and reads back as ``None``.
NUL characters in ``message`` and ``log_excerpt`` are written as U+FFFD.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from common.benchmark import LevelMetrics, Stats
from common.results import FailureReason, TrialRecord, TrialStatus
from common.store.models import (
    LATENCY_METRICS,
    LATENCY_STATS,
    BenchmarkRunRow,
    StudyRow,
    TrialRow,
)
from common.store.study import StudyInfo, StudyStatus

# LevelMetrics float fields stored one column each, under the same name.
_LEVEL_FLOATS = ("duration_s", "input_tokens_per_s", "output_tokens_per_s",
                 "total_tokens_per_s", "requests_per_s", "mean_input_tokens",
                 "mean_output_tokens")


def record_to_values(record: TrialRecord, study_id: int) -> dict[str, Any]:
    """Column values of the ``trials`` row for ``record`` (its levels excluded).

    Raises ``ValueError`` for a naive timestamp or a status/reason outside the enums.
    """
    return {
        "study_id": study_id,
        "number": record.number,
        "attempt": record.attempt,
        "trial_id": record.trial_id,
        "params": dict(record.params),
        "intent": dict(record.intent),
        "argv": list(record.argv),
        "gpu_ids": list(record.gpu_ids),
        "node": record.node,
        "node_id": record.node_id,
        "status": TrialStatus(record.status).value,
        "reason": FailureReason(record.reason).value if record.reason is not None else None,
        "message": _storable_text(record.message),
        "score": _float_or_null(record.score),
        "objective_value": _float_or_null(record.objective_value),
        "objective_values": (None if record.objective_values is None
                             else [_float_or_null(v) for v in record.objective_values]),
        "slo": record.slo,
        "baseline": record.baseline,
        "phase_timings": dict(record.phase_timings_s),
        "started_at": _require_aware(record.started_at, "started_at"),
        "finished_at": (_require_aware(record.finished_at, "finished_at")
                        if record.finished_at is not None else None),
        "log_excerpt": _storable_text(record.log_excerpt),
    }


def level_to_values(level: LevelMetrics, trial_row_id: int) -> dict[str, Any]:
    """Column values of the ``benchmark_runs`` row for one level of a trial."""
    values: dict[str, Any] = {
        "trial_row_id": trial_row_id,
        "scenario": level.scenario,
        "concurrency": level.concurrency,
        "num_completed": level.num_completed,
        "num_errors": level.num_errors,
        "error_rate": _float_or_null(level.error_rate),
    }
    for name in _LEVEL_FLOATS:
        values[name] = _float_or_null(getattr(level, name))
    for metric in LATENCY_METRICS:
        stats: Stats = getattr(level, metric)
        for stat in LATENCY_STATS:
            values[f"{metric}_{stat}"] = _float_or_null(getattr(stats, stat))
    return values


def row_to_record(row: TrialRow, study: str) -> TrialRecord:
    """The ``TrialRecord`` of a trial row of study ``study``, with its benchmark runs as levels.

    ``row.benchmark_runs`` must be loaded (the store eager-loads it); levels keep its order.
    """
    return TrialRecord(
        study=study,
        number=row.number,
        attempt=row.attempt,
        trial_id=row.trial_id,
        params=dict(row.params),
        argv=list(row.argv),
        gpu_ids=list(row.gpu_ids),
        node=row.node,
        node_id=row.node_id or "",
        intent=dict(row.intent or {}),
        status=TrialStatus(row.status),
        reason=FailureReason(row.reason) if row.reason is not None else None,
        message=row.message,
        score=row.score,
        objective_value=row.objective_value,
        objective_values=(None if row.objective_values is None
                          else [_nan_if_null(v) for v in row.objective_values]),
        slo=row.slo,
        baseline=bool(row.baseline),
        phase_timings_s=dict(row.phase_timings),
        started_at=row.started_at,
        finished_at=row.finished_at,
        log_excerpt=row.log_excerpt,
        levels=[row_to_level(run) for run in row.benchmark_runs],
    )


def row_to_level(row: BenchmarkRunRow) -> LevelMetrics:
    """The ``LevelMetrics`` of one benchmark run row."""
    latencies = {
        metric: Stats(**{stat: _nan_if_null(getattr(row, f"{metric}_{stat}"))
                         for stat in LATENCY_STATS})
        for metric in LATENCY_METRICS
    }
    floats = {name: _nan_if_null(getattr(row, name)) for name in _LEVEL_FLOATS}
    return LevelMetrics(
        scenario=row.scenario,
        concurrency=row.concurrency,
        num_completed=row.num_completed,
        num_errors=row.num_errors,
        ttft_ms=latencies["ttft_ms"],
        tpot_ms=latencies["tpot_ms"],
        e2e_latency_ms=latencies["e2e_latency_ms"],
        **floats,
    )


def row_to_study_info(row: StudyRow, trial_counts: Mapping[TrialStatus, int]) -> StudyInfo:
    """The ``StudyInfo`` of a study row; statuses missing from ``trial_counts`` count 0."""
    return StudyInfo(
        name=row.name,
        config=dict(row.config),
        status=StudyStatus(row.status),
        created_at=row.created_at,
        finished_at=row.finished_at,
        best_trial_number=row.best_trial_number,
        pareto_front=list(row.pareto_front) if row.pareto_front is not None else None,
        trial_counts={status: trial_counts.get(status, 0) for status in TrialStatus},
    )


def _float_or_null(value: float | None) -> float | None:
    if value is None or math.isnan(value):
        return None
    return float(value)


def _nan_if_null(value: float | None) -> float:
    return math.nan if value is None else value


def _storable_text(text: str) -> str:
    # PostgreSQL text cannot hold NUL, which a crashing engine's log tail may contain; replace
    # it on every backend so both read back the same.
    return text.replace("\x00", "\ufffd")


def _require_aware(value: datetime, name: str) -> datetime:
    if value.tzinfo is None:
        raise ValueError(f"{name}={value.isoformat()} is naive: pass a timezone-aware UTC time")
    return value
