"""Help alerts: site alerting settings, contacts, alerts, the delivery outbox, device health.

Staff at the counter call for help from the kiosk; the service notifies the site's contacts
(e-mail, signed webhook) through alert_deliveries, an outbox written in the same transaction
as the alert and its audit entry (api/alerts). New tables only: nothing existing is rewritten.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "site_alerting",
        sa.Column("site_id", sa.String(64), sa.ForeignKey("sites.id"), primary_key=True),
        sa.Column("escalate_after_seconds", sa.Integer(), nullable=False),
        sa.Column("incident_alerts", sa.Boolean(), nullable=False),
        sa.Column("opening_hours", sa.String(200), nullable=True),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("incident_categories", sa.JSON(), nullable=True),
        sa.Column("updated_at", _TIME, nullable=False),
        sa.Column("updated_by", sa.String(80), nullable=False),
    )
    op.create_table(
        "alert_contacts",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("site_id", sa.String(64), sa.ForeignKey("sites.id"), nullable=False),
        sa.Column("tier", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("target", sa.String(500), nullable=False),
        sa.Column("secret", sa.String(128), nullable=True),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("created_by", sa.String(80), nullable=False),
    )
    op.create_index("ix_alert_contacts_site_id", "alert_contacts", ["site_id"])
    op.create_table(
        "alerts",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("site_id", sa.String(64), sa.ForeignKey("sites.id"), nullable=False),
        sa.Column("device_id", sa.String(36), sa.ForeignKey("devices.id"), nullable=False),
        sa.Column("recording_id", sa.String(36), sa.ForeignKey("recordings.id"), nullable=True),
        sa.Column("category", sa.String(64), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("tier", sa.Integer(), nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("escalate_at", _TIME, nullable=True),
        sa.Column("escalated_at", _TIME, nullable=True),
        sa.Column("acknowledged_at", _TIME, nullable=True),
        sa.Column("acknowledged_by", sa.String(100), nullable=True),
        sa.Column("acknowledged_by_id", sa.String(36), nullable=True),
        sa.Column("message", sa.String(500), nullable=True),
        sa.Column("updated_at", _TIME, nullable=False),
    )
    op.create_index("ix_alerts_device_id", "alerts", ["device_id"])
    op.create_index("ix_alerts_escalation_due", "alerts", ["state", "escalate_at"])
    op.create_index("ix_alerts_site_created", "alerts", ["site_id", sa.text("created_at DESC")])
    op.create_table(
        "alert_deliveries",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("alert_id", sa.String(36), sa.ForeignKey("alerts.id"), nullable=True),
        sa.Column("contact_id", sa.String(36), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("target", sa.String(500), nullable=False),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", _TIME, nullable=False),
        sa.Column("claimed_until", _TIME, nullable=True),
        sa.Column("claimed_by", sa.String(64), nullable=True),
        sa.Column("last_error", sa.String(300), nullable=True),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("delivered_at", _TIME, nullable=True),
    )
    op.create_index("ix_alert_deliveries_alert_id", "alert_deliveries", ["alert_id"])
    op.create_index("ix_alert_deliveries_due", "alert_deliveries", ["state", "next_attempt_at"])
    op.create_table(
        "device_health",
        sa.Column("device_id", sa.String(36), sa.ForeignKey("devices.id"), primary_key=True),
        sa.Column("last_seen_at", _TIME, nullable=False),
        sa.Column("skew_seconds", sa.Float(), nullable=False),
        sa.Column("spool_used_bytes", sa.BigInteger(), nullable=False),
        sa.Column("spool_max_bytes", sa.BigInteger(), nullable=False),
        sa.Column("unsent_segments", sa.Integer(), nullable=False),
        sa.Column("raised", sa.JSON(), nullable=False),
    )


def downgrade() -> None:
    for table in ("device_health", "alert_deliveries", "alerts", "alert_contacts", "site_alerting"):
        op.drop_table(table)
