"""Device health: a device's check-in (clock, spool), and devices silent while their counter is open.

A condition notifies the site's first tier once when it starts; it is raised again only after it
has cleared (DeviceHealth.raised remembers which are current), so a device left unplugged over a
weekend sends one notice, not one per scan.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from api.alerts import hours
from api.alerts import site as site_settings
from api.alerts.config import AlertSettings
from api.alerts.lifecycle import site_name
from api.alerts.message import health_payload
from api.alerts.outbox import enqueue
from api.core.audit import record_event
from api.core.models import Device, DeviceHealth, Recording, SiteAlerting, iso, utcnow
from evidence.audit_actions import Action
from evidence.text import neutral


def notify(session: Session, device: Device, condition: str, facts: dict[str, Any]) -> list[str]:
    """Tell the site's first tier about a device (in the caller's transaction), and log it."""
    tier = site_settings.next_tier(session, device.site_id, 0)
    contacts = site_settings.contacts(session, device.site_id, tier) if tier is not None else []
    event = f"device.{condition}"
    payload = health_payload(event, {"id": device.id, "name": device.name}, site_name(session, device.site_id), facts)
    deliveries = enqueue(session, contacts, event, payload, None)
    record_event(
        session,
        actor="system",
        action=Action.DEVICE_HEALTH,
        target=f"device:{device.id}",
        detail={"condition": condition, **facts, "deliveries": deliveries},
    )
    return deliveries


def _transition(
    session: Session,
    health: DeviceHealth,
    device: Device,
    condition: str,
    now_bad: bool,
    facts: dict[str, Any],
    now: datetime,
) -> None:
    raised = dict(health.raised or {})
    if now_bad and condition not in raised:
        notify(session, device, condition, facts)
        raised[condition] = iso(now)
    elif not now_bad:
        raised.pop(condition, None)
    health.raised = raised


def heartbeat(
    session: Session,
    device: Device,
    clock: datetime,
    spool_used: int,
    spool_max: int,
    unsent: int,
    config: AlertSettings,
) -> tuple[datetime, float]:
    now = utcnow()
    skew = (clock - now).total_seconds()
    health = session.get(DeviceHealth, device.id)
    if health is None:
        health = DeviceHealth(device_id=device.id, raised={})
        session.add(health)
    health.last_seen_at, health.skew_seconds = now, skew
    health.spool_used_bytes, health.spool_max_bytes, health.unsent_segments = spool_used, spool_max, unsent
    _transition(
        session, health, device, "clock_skew", abs(skew) > config.alerts_clock_skew_seconds, {"skew": skew}, now
    )
    ratio = spool_used / spool_max if spool_max else 0.0
    _transition(
        session,
        health,
        device,
        "spool_filling",
        ratio >= config.alerts_spool_fill_ratio,
        {"percent": 100 * ratio, "unsent": unsent},
        now,
    )
    _transition(session, health, device, "silent", False, {}, now)  # it spoke: no longer silent
    return now, skew


def _open(row: SiteAlerting, now: datetime) -> bool:
    try:
        return hours.is_open(row.opening_hours, row.timezone, now)
    except hours.HoursError:  # checked when set; a row that no longer reads (a zone removed) must not stop the others
        return False


def check_silent(sessions: sessionmaker[Session], config: AlertSettings) -> int:
    """Notify about devices that have checked in before but not lately, at sites open right now."""
    now = utcnow()
    cutoff = now - timedelta(seconds=config.alerts_silent_after_seconds)
    with sessions() as session:
        rows = session.scalars(select(SiteAlerting).where(SiteAlerting.opening_hours.is_not(None)))
        staffed = [row.site_id for row in rows if _open(row, now)]
        if not staffed:
            return 0
        quiet = session.scalars(
            select(DeviceHealth.device_id)
            .join(Device, Device.id == DeviceHealth.device_id)
            .where(Device.site_id.in_(staffed), Device.disabled.is_(False), DeviceHealth.last_seen_at < cutoff)
        ).all()
    count = 0
    for device_id in quiet:
        with sessions() as session, session.begin():
            health = session.get(DeviceHealth, device_id, with_for_update=True)
            device = session.get(Device, device_id)
            if health is None or device is None or "silent" in (health.raised or {}) or health.last_seen_at >= cutoff:
                continue
            silent = (now - health.last_seen_at).total_seconds()
            _transition(
                session, health, device, "silent", True, {"silent": silent, "last_seen": iso(health.last_seen_at)}, now
            )
            count += 1
    return count


def integrity_failure(sessions: sessionmaker[Session], recording_id: str, detail: str) -> bool:
    """A read found a recording failing its checks: tell the site once per recording (it will not heal)."""
    with sessions() as session, session.begin():
        recording = session.get(Recording, recording_id)
        device = session.get(Device, recording.device_id) if recording is not None else None
        if recording is None or device is None:
            return False
        health = session.get(DeviceHealth, device.id)
        if health is None:  # never checked in (an older agent): the row holds what was raised all the same
            health = DeviceHealth(device_id=device.id, raised={}, last_seen_at=recording.last_activity_at)
            session.add(health)
        condition = f"integrity:{recording_id}"
        if condition in (health.raised or {}):
            return False
        notify(session, device, "integrity", {"recording": recording_id, "detail": neutral(detail, 200)})
        health.raised = {**(health.raised or {}), condition: iso(utcnow())}
        return True
