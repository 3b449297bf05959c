"""Table rows of the results database: studies, trials (one row per attempt), benchmark runs.

Rows are storage shapes only; ``common.store.conversions`` turns them into domain types.
Every change here needs a new Alembic revision under ``migrations/versions`` (never edit an
applied one); ``tests/common/test_store.py`` fails while the two disagree.

Conventions: timestamps are timezone-aware UTC (``UTCDateTime``); JSON columns are JSONB on
PostgreSQL and JSON text on SQLite; latencies are milliseconds. Float columns are nullable and
NULL stands for the domain's NaN (e.g. a latency statistic of a level without samples),
because SQLite stores NaN as NULL and both backends must read back the same.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Stable constraint names, so migrations can refer to them on every backend.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

STUDY_STATUSES = ("running", "succeeded", "failed", "cancelled")
TRIAL_STATUSES = ("running", "succeeded", "failed")
# The latency metrics of a benchmark run and the statistics kept for each; column names are
# f"{metric}_{stat}", e.g. ``ttft_ms_p90``.
LATENCY_METRICS = ("ttft_ms", "tpot_ms", "e2e_latency_ms")
LATENCY_STATS = ("mean", "p50", "p90", "p95", "p99", "min", "max")

JSONType = JSON().with_variant(JSONB(), "postgresql")


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend.

    Writes refuse naive datetimes (their zone is unknown) and store UTC; reads return aware
    UTC datetimes (SQLite keeps no zone, so its values are marked UTC on the way out).
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value.isoformat()}: pass a timezone-aware one")
        return value.astimezone(timezone.utc)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _in(values: tuple[str, ...]) -> str:
    return ", ".join(f"'{v}'" for v in values)


class StudyRow(Base):
    """One study: its submitted configuration and how it ended."""

    __tablename__ = "studies"
    __table_args__ = (CheckConstraint(f"status IN ({_in(STUDY_STATUSES)})", name="status"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    config: Mapped[dict[str, Any]] = mapped_column(JSONType)
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    best_trial_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # Multi-objective studies: the numbers of the trials on the Pareto front (else NULL).
    pareto_front: Mapped[list[int] | None] = mapped_column(JSONType, nullable=True)
    # ``servetune cancel``: the running driver stops the study when it sees this set.
    cancel_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    trials: Mapped[list[TrialRow]] = relationship(
        back_populates="study", cascade="all, delete-orphan", passive_deletes=True)


class TrialRow(Base):
    """One attempt of one trial; a retried trial has one row per attempt."""

    __tablename__ = "trials"
    __table_args__ = (
        UniqueConstraint("study_id", "number", "attempt"),
        CheckConstraint(f"status IN ({_in(TRIAL_STATUSES)})", name="status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    attempt: Mapped[int] = mapped_column(Integer)
    trial_id: Mapped[str] = mapped_column(String(255))
    params: Mapped[dict[str, Any]] = mapped_column(JSONType)
    intent: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    argv: Mapped[list[str]] = mapped_column(JSONType)
    gpu_ids: Mapped[list[str]] = mapped_column(JSONType)
    node: Mapped[str] = mapped_column(String(255))
    node_id: Mapped[str] = mapped_column(String(64), default="", server_default="")
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    message: Mapped[str] = mapped_column(Text)
    score: Mapped[float | None]
    objective_value: Mapped[float | None]
    objective_values: Mapped[list[float] | None] = mapped_column(JSONType, nullable=True)
    slo: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    baseline: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    phase_timings: Mapped[dict[str, float]] = mapped_column(JSONType)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    log_excerpt: Mapped[str] = mapped_column(Text)

    study: Mapped[StudyRow] = relationship(back_populates="trials")
    benchmark_runs: Mapped[list[BenchmarkRunRow]] = relationship(
        back_populates="trial", cascade="all, delete-orphan", passive_deletes=True,
        order_by=lambda: [BenchmarkRunRow.scenario, BenchmarkRunRow.concurrency])


class BenchmarkRunRow(Base):
    """One benchmark run of a trial's deployment: one scenario at one concurrency level."""

    __tablename__ = "benchmark_runs"
    __table_args__ = (UniqueConstraint("trial_row_id", "scenario", "concurrency"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    trial_row_id: Mapped[int] = mapped_column(ForeignKey("trials.id", ondelete="CASCADE"))
    scenario: Mapped[str] = mapped_column(String(255))
    concurrency: Mapped[int] = mapped_column(Integer)
    num_completed: Mapped[int] = mapped_column(Integer)
    num_errors: Mapped[int] = mapped_column(Integer)
    # Derived from the counts; stored so queries can filter on it.
    error_rate: Mapped[float | None]
    duration_s: Mapped[float | None]

    ttft_ms_mean: Mapped[float | None]
    ttft_ms_p50: Mapped[float | None]
    ttft_ms_p90: Mapped[float | None]
    ttft_ms_p95: Mapped[float | None]
    ttft_ms_p99: Mapped[float | None]
    ttft_ms_min: Mapped[float | None]
    ttft_ms_max: Mapped[float | None]

    tpot_ms_mean: Mapped[float | None]
    tpot_ms_p50: Mapped[float | None]
    tpot_ms_p90: Mapped[float | None]
    tpot_ms_p95: Mapped[float | None]
    tpot_ms_p99: Mapped[float | None]
    tpot_ms_min: Mapped[float | None]
    tpot_ms_max: Mapped[float | None]

    e2e_latency_ms_mean: Mapped[float | None]
    e2e_latency_ms_p50: Mapped[float | None]
    e2e_latency_ms_p90: Mapped[float | None]
    e2e_latency_ms_p95: Mapped[float | None]
    e2e_latency_ms_p99: Mapped[float | None]
    e2e_latency_ms_min: Mapped[float | None]
    e2e_latency_ms_max: Mapped[float | None]

    input_tokens_per_s: Mapped[float | None]
    output_tokens_per_s: Mapped[float | None]
    total_tokens_per_s: Mapped[float | None]
    requests_per_s: Mapped[float | None]
    mean_input_tokens: Mapped[float | None]
    mean_output_tokens: Mapped[float | None]

    trial: Mapped[TrialRow] = relationship(back_populates="benchmark_runs")
