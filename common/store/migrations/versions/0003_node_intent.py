"""The Ray node id of each trial attempt (nodes of one cluster can share an address), the
parallel/quantization intent it ran, and a study's cancel request (``servetune cancel``).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("trials") as batch:
        batch.add_column(sa.Column("node_id", sa.String(64), nullable=False,
                                   server_default=""))
        batch.add_column(sa.Column("intent", JSON, nullable=True))
    with op.batch_alter_table("studies") as batch:
        batch.add_column(sa.Column("cancel_requested_at", sa.DateTime(timezone=True),
                                   nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("studies") as batch:
        batch.drop_column("cancel_requested_at")
    with op.batch_alter_table("trials") as batch:
        batch.drop_column("intent")
        batch.drop_column("node_id")
