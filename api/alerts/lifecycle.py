"""An alert's life: raised by a device, acknowledged by an officer of its site (escalation: escalation.py).

Each step changes the alert, writes its audit entry and queues its notifications in one transaction.
"""

from __future__ import annotations

import contextlib
import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from api.alerts import site as site_settings
from api.alerts.message import alert_payload
from api.alerts.outbox import enqueue, rows
from api.core.audit import record_event
from api.core.models import Alert, Device, Recording, Site, iso, utcnow
from api.core.storage import BlobStore
from evidence.audit_actions import Action
from retention import lifecycle as retention


def view(session: Session, alert: Alert, device_name: str | None = None) -> dict[str, Any]:
    """evidence.wire's ALERT_VIEW, JSON-ready."""
    if device_name is None:
        device = session.get(Device, alert.device_id)
        device_name = device.name if device is not None else ""
    return {
        "id": alert.id,
        "kind": alert.kind,
        "site": alert.site_id,
        "device_id": alert.device_id,
        "device_name": device_name,
        "recording_id": alert.recording_id,
        "category": alert.category,
        "state": alert.state,
        "tier": alert.tier,
        "created_at": iso(alert.created_at),
        "escalated_at": iso(alert.escalated_at),
        "acknowledged_at": iso(alert.acknowledged_at),
        "acknowledged_by": alert.acknowledged_by,
        "message": alert.message,
    }


def site_name(session: Session, site_id: str) -> str:
    site = session.get(Site, site_id)
    return site.name if site is not None else site_id


def _mark_incident(session: Session, store: BlobStore, recording: Recording, category: str | None, actor: str) -> None:
    """The recording becomes an incident; a category it already has is kept (staff chose it first)."""
    if recording.incident_category is not None:
        return
    # A deleted recording cannot be flagged; the call for help must go out all the same.
    with contextlib.suppress(retention.RecordingGone):
        retention.flag_incident(session, store, recording, category or "help-call", actor)


def raise_alert(
    session: Session,
    store: BlobStore,
    device: Device,
    kind: str,
    recording: Recording | None,
    category: str | None,
    flag: bool = True,
) -> Alert:
    """A new alert, its audit entry and its tier-1 notifications, in the caller's transaction."""
    settings = site_settings.alerting(session, device.site_id)
    now = utcnow()
    tier = 1
    first = site_settings.contacts(session, device.site_id, tier)
    if not first:  # tier numbers are the administrator's; the first one that has anyone is notified
        lowest = site_settings.next_tier(session, device.site_id, 0)
        tier = lowest or 1
        first = site_settings.contacts(session, device.site_id, tier) if lowest else []
    later = site_settings.next_tier(session, device.site_id, tier)
    alert = Alert(
        id=str(uuid.uuid4()),
        kind=kind,
        site_id=device.site_id,
        device_id=device.id,
        recording_id=recording.id if recording is not None else None,
        category=category,
        state="open",
        tier=tier,
        created_at=now,
        updated_at=now,
        escalate_at=now + timedelta(seconds=settings.escalate_after_seconds) if later is not None else None,
    )
    session.add(alert)
    actor = f"device:{device.id}"
    if recording is not None and flag:
        _mark_incident(session, store, recording, category, actor)
    session.flush()
    shown = view(session, alert, device.name)
    deliveries = enqueue(
        session,
        first,
        "alert.raised",
        alert_payload("alert.raised", shown, site_name(session, device.site_id)),
        alert.id,
    )
    record_event(
        session,
        actor=actor,
        action=Action.ALERT_RAISE,
        target=f"alert:{alert.id}",
        detail={
            "kind": kind,
            "site": device.site_id,
            "recording": alert.recording_id,
            "category": category,
            "tier": tier,
            "deliveries": deliveries,
        },
    )
    return alert


def incident_alert(session: Session, store: BlobStore, device: Device, recording: Recording, category: str) -> bool:
    """An incident flag calls for help too when the site says so (once while an alert for it is unanswered)."""
    if not site_settings.alerting(session, device.site_id).incident_alerts:
        return False
    waiting = select(Alert.id).where(Alert.recording_id == recording.id, Alert.state != "acknowledged").limit(1)
    if session.scalar(waiting) is not None:
        return False
    raise_alert(session, store, device, "incident", recording, category, flag=False)  # already flagged
    return True


def wake_worker(request: Any) -> None:
    """Tell this process's delivery worker that something was queued (it would find it at its next scan anyway)."""
    worker = getattr(request.app.state, "alert_worker", None)
    if worker is not None:
        worker.wake()


class AlreadyAcknowledged(Exception):
    def __init__(self, alert: Alert) -> None:
        super().__init__(f"already acknowledged by {alert.acknowledged_by}")


def acknowledge(session: Session, alert: Alert, user_id: str, user_name: str, message: str) -> Alert:
    """A compare-and-set on the state: of two supervisors answering at once, one wins, the other hears who."""
    now = utcnow()
    won = rows(
        session.execute(
            update(Alert)
            .where(Alert.id == alert.id, Alert.state != "acknowledged")
            .values(
                state="acknowledged",
                acknowledged_at=now,
                escalate_at=None,
                updated_at=now,
                acknowledged_by=user_name,
                acknowledged_by_id=user_id,
                message=message,
            )
            .execution_options(synchronize_session=False)
        )
    )
    session.refresh(alert)
    if won != 1:
        raise AlreadyAcknowledged(alert)
    record_event(
        session,
        actor=f"user:{user_id}",
        action=Action.ALERT_ACK,
        target=f"alert:{alert.id}",
        detail={"message": message, "tier": alert.tier, "seconds": round((now - alert.created_at).total_seconds(), 3)},
    )
    return alert
