"""Evidence key custody states: current | previous | retired | destroyed, and custody service | offline.

The `active` flag is migrated and dropped (one source of truth): the newest active key becomes
"current", any other active key "previous" (devices sealed to all of them; reads still open them),
an inactive one "retired". A partial unique index keeps at most one current service-held key.
Downgrade restores `active` as state in (current, previous).

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_CURRENT = sa.text("state = 'current' AND custody = 'service'")


def upgrade() -> None:
    with op.batch_alter_table("evidence_keys") as batch:
        batch.add_column(sa.Column("state", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("custody", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("destroyed_at", sa.DateTime(timezone=True), nullable=True))
    keys = sa.table(
        "evidence_keys",
        sa.column("key_id", sa.String),
        sa.column("created_at", sa.DateTime(timezone=True)),
        sa.column("active", sa.Boolean),
        sa.column("state", sa.String),
        sa.column("custody", sa.String),
        sa.column("retired_at", sa.DateTime(timezone=True)),
    )
    op.execute(keys.update().values(custody="service", state="previous").where(keys.c.active == sa.true()))
    op.execute(
        keys.update()
        .values(custody="service", state="retired", retired_at=sa.func.now())
        .where(keys.c.active == sa.false())
    )
    newest = (
        sa.select(keys.c.key_id)
        .where(keys.c.active == sa.true())
        .order_by(keys.c.created_at.desc(), keys.c.key_id)
        .limit(1)
        .scalar_subquery()
    )
    op.execute(keys.update().values(state="current").where(keys.c.key_id == newest))
    with op.batch_alter_table("evidence_keys") as batch:
        batch.alter_column("state", existing_type=sa.String(length=16), nullable=False)
        batch.alter_column("custody", existing_type=sa.String(length=16), nullable=False)
        batch.drop_column("active")
    op.create_index(
        "ix_evidence_keys_one_current",
        "evidence_keys",
        ["state"],
        unique=True,
        postgresql_where=_CURRENT,
        sqlite_where=_CURRENT,
    )


def downgrade() -> None:
    op.drop_index("ix_evidence_keys_one_current", table_name="evidence_keys")
    with op.batch_alter_table("evidence_keys") as batch:
        batch.add_column(sa.Column("active", sa.Boolean(), nullable=True))
    op.execute(sa.text("UPDATE evidence_keys SET active = (state IN ('current', 'previous'))"))
    with op.batch_alter_table("evidence_keys") as batch:
        batch.alter_column("active", existing_type=sa.Boolean(), nullable=False)
        batch.drop_column("destroyed_at")
        batch.drop_column("retired_at")
        batch.drop_column("custody")
        batch.drop_column("state")
