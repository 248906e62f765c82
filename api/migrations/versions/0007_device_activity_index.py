"""A device's last contact is one index probe: ix_recordings_device_activity (device_id, last_activity_at).

/metrics reports how many devices were seen in the last 5 minutes, hour and day, and how long
the quietest one has been silent (api.core.metrics). Each device's newest activity is the max of
last_activity_at over its recordings: with this index, one probe per device, at any history size.
It replaces ix_recordings_device_id (device_id alone), which it serves as well, so the table keeps
the same number of indexes. Building it reads the recordings table once.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_recordings_device_activity", "recordings", ["device_id", "last_activity_at"])
    op.drop_index("ix_recordings_device_id", table_name="recordings")


def downgrade() -> None:
    op.create_index("ix_recordings_device_id", "recordings", ["device_id"])
    op.drop_index("ix_recordings_device_activity", table_name="recordings")
