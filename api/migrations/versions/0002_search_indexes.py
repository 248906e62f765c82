"""Officer search indexes: (site, started_at DESC) and a partial one for live incidents.

Measured with bench/search.py over 1,000,000 recordings in PostgreSQL. Building
them blocks writes to recordings for a few seconds per million rows (3.2 s at
1M here): on a large live database run the upgrade in a maintenance window.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_LIVE_INCIDENTS = sa.text("incident_category IS NOT NULL AND purge_state IS NULL")


def upgrade() -> None:
    op.create_index("ix_recordings_site_started", "recordings", ["site_id", sa.text("started_at DESC")])
    op.create_index(
        "ix_recordings_site_incidents",
        "recordings",
        ["site_id", sa.text("started_at DESC")],
        postgresql_where=_LIVE_INCIDENTS,
        sqlite_where=_LIVE_INCIDENTS,
    )


def downgrade() -> None:
    op.drop_index("ix_recordings_site_incidents", table_name="recordings")
    op.drop_index("ix_recordings_site_started", table_name="recordings")
