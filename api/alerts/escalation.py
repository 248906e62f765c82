"""Escalation: an alert nobody acknowledged within the site's time goes to the next tier of contacts."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from api.alerts import site as site_settings
from api.alerts.lifecycle import site_name, view
from api.alerts.message import alert_payload
from api.alerts.outbox import enqueue, rows
from api.core.audit import record_event
from api.core.models import Alert, utcnow
from evidence.audit_actions import Action

BATCH = 50


def escalate_due(sessions: sessionmaker[Session]) -> int:
    """Escalate every alert whose time is up; returns how many. Safe with several workers at once."""
    now = utcnow()
    with sessions() as session:
        due = session.scalars(
            select(Alert.id)
            .where(Alert.state.in_(("open", "escalated")), Alert.escalate_at.is_not(None), Alert.escalate_at <= now)
            .limit(BATCH)
        ).all()
    return sum(_escalate(sessions, alert_id) for alert_id in due)


def _escalate(sessions: sessionmaker[Session], alert_id: str) -> bool:
    with sessions() as session, session.begin():
        alert = session.get(Alert, alert_id)
        if alert is None or alert.state == "acknowledged" or alert.escalate_at is None:
            return False
        tier = site_settings.next_tier(session, alert.site_id, alert.tier)
        now = utcnow()
        if tier is None:  # the contacts changed since: nobody further to tell
            session.execute(
                update(Alert).where(Alert.id == alert_id, Alert.tier == alert.tier).values(escalate_at=None)
            )
            return False
        after = site_settings.alerting(session, alert.site_id).escalate_after_seconds
        further = site_settings.next_tier(session, alert.site_id, tier)
        # Compare-and-set on (tier, state): a second worker, or an acknowledgment meanwhile, makes this a no-op.
        won = rows(
            session.execute(
                update(Alert)
                .where(Alert.id == alert_id, Alert.tier == alert.tier, Alert.state != "acknowledged")
                .values(
                    tier=tier,
                    state="escalated",
                    escalated_at=now,
                    updated_at=now,
                    escalate_at=now + timedelta(seconds=after) if further is not None else None,
                )
                .execution_options(synchronize_session=False)
            )
        )
        if won != 1:
            return False
        session.refresh(alert)
        shown = view(session, alert)
        payload = alert_payload("alert.escalated", shown, site_name(session, alert.site_id))
        deliveries = enqueue(
            session, site_settings.contacts(session, alert.site_id, tier), "alert.escalated", payload, alert.id
        )
        record_event(
            session,
            actor="system",
            action=Action.ALERT_ESCALATE,
            target=f"alert:{alert.id}",
            detail={"tier": tier, "after_seconds": after, "deliveries": deliveries},
        )
        return True
