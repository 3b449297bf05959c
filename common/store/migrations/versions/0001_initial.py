"""Initial schema: studies, trials (one row per attempt) and benchmark runs.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Types and names are spelled out here rather than imported from models.py, so this revision
# keeps creating the same schema when the models move on.
JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
LATENCY_COLUMNS = [f"{metric}_{stat}"
                   for metric in ("ttft_ms", "tpot_ms", "e2e_latency_ms")
                   for stat in ("mean", "p50", "p90", "p95", "p99", "min", "max")]


def upgrade() -> None:
    op.create_table(
        "studies",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("config", JSON, nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("best_trial_number", sa.Integer(), nullable=True),
        sa.CheckConstraint("status IN ('running', 'succeeded', 'failed', 'cancelled')",
                           name=op.f("ck_studies_status")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_studies")),
        sa.UniqueConstraint("name", name=op.f("uq_studies_name")),
    )
    op.create_table(
        "trials",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("trial_id", sa.String(length=255), nullable=False),
        sa.Column("params", JSON, nullable=False),
        sa.Column("argv", JSON, nullable=False),
        sa.Column("gpu_ids", JSON, nullable=False),
        sa.Column("node", sa.String(length=255), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("score", sa.Double(), nullable=True),
        sa.Column("objective_value", sa.Double(), nullable=True),
        sa.Column("phase_timings", JSON, nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("log_excerpt", sa.Text(), nullable=False),
        sa.CheckConstraint("status IN ('running', 'succeeded', 'failed')",
                           name=op.f("ck_trials_status")),
        sa.ForeignKeyConstraint(["study_id"], ["studies.id"],
                                name=op.f("fk_trials_study_id_studies"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_trials")),
        sa.UniqueConstraint("study_id", "number", "attempt",
                            name=op.f("uq_trials_study_id_number_attempt")),
    )
    op.create_table(
        "benchmark_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("trial_row_id", sa.Integer(), nullable=False),
        sa.Column("scenario", sa.String(length=255), nullable=False),
        sa.Column("concurrency", sa.Integer(), nullable=False),
        sa.Column("num_completed", sa.Integer(), nullable=False),
        sa.Column("num_errors", sa.Integer(), nullable=False),
        sa.Column("error_rate", sa.Double(), nullable=True),
        sa.Column("duration_s", sa.Double(), nullable=True),
        *[sa.Column(name, sa.Double(), nullable=True) for name in LATENCY_COLUMNS],
        sa.Column("input_tokens_per_s", sa.Double(), nullable=True),
        sa.Column("output_tokens_per_s", sa.Double(), nullable=True),
        sa.Column("total_tokens_per_s", sa.Double(), nullable=True),
        sa.Column("requests_per_s", sa.Double(), nullable=True),
        sa.Column("mean_input_tokens", sa.Double(), nullable=True),
        sa.Column("mean_output_tokens", sa.Double(), nullable=True),
        sa.ForeignKeyConstraint(["trial_row_id"], ["trials.id"],
                                name=op.f("fk_benchmark_runs_trial_row_id_trials"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_benchmark_runs")),
        sa.UniqueConstraint("trial_row_id", "scenario", "concurrency",
                            name=op.f("uq_benchmark_runs_trial_row_id_scenario_concurrency")),
    )


def downgrade() -> None:
    op.drop_table("benchmark_runs")
    op.drop_table("trials")
    op.drop_table("studies")
