"""Multi-objective values, SLO verdicts and baseline trials; the Pareto front of a study.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("trials") as batch:
        batch.add_column(sa.Column("objective_values", JSON, nullable=True))
        batch.add_column(sa.Column("slo", JSON, nullable=True))
        batch.add_column(sa.Column("baseline", sa.Boolean(), nullable=False,
                                   server_default=sa.false()))
    with op.batch_alter_table("studies") as batch:
        batch.add_column(sa.Column("pareto_front", JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("studies") as batch:
        batch.drop_column("pareto_front")
    with op.batch_alter_table("trials") as batch:
        batch.drop_column("baseline")
        batch.drop_column("slo")
        batch.drop_column("objective_values")
