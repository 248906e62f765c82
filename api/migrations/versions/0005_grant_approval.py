"""Granting access takes two people: users.pending_approval, approved_by, approved_at.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        # Users that exist already were granted before this rule: they stay as they are.
        batch.add_column(sa.Column("pending_approval", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("approved_by", sa.String(80), nullable=True))
        batch.add_column(sa.Column("approved_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("approved_at")
        batch.drop_column("approved_by")
        batch.drop_column("pending_approval")
