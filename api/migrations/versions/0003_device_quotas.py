"""Per-device quotas: a daily usage counter per device, and a partial index of open recordings.

device_usage holds one row per device and UTC day; each upload bumps it with one conditional
UPDATE on its primary key (the daily byte quota), instead of summing the day's segments.
ix_recordings_device_open indexes only open recordings, so counting a device's open ones
(the open-recording quota) never reads its closed history. Both are small: the table starts
empty and the index holds a handful of rows per device, so the upgrade is quick on a live database.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OPEN = sa.text("status = 'open'")


def upgrade() -> None:
    op.create_table(
        "device_usage",
        sa.Column("device_id", sa.String(length=36), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("uploaded_bytes", sa.BigInteger(), nullable=False),
        sa.Column("uploads", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["device_id"], ["devices.id"]),
        sa.PrimaryKeyConstraint("device_id", "day"),
    )
    op.create_index(
        "ix_recordings_device_open", "recordings", ["device_id"], postgresql_where=_OPEN, sqlite_where=_OPEN
    )


def downgrade() -> None:
    op.drop_index("ix_recordings_device_open", table_name="recordings")
    op.drop_table("device_usage")
