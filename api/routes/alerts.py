"""Help alerts: devices raise and follow them, officers of the site answer, administrators set them up."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.responses import StreamingResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.alerts import lifecycle, monitor
from api.alerts import site as site_settings
from api.alerts.config import AlertSettings
from api.alerts.schemas import (
    AlertAck,
    AlertingPublic,
    AlertingUpdate,
    AlertRaise,
    AlertView,
    ContactCreate,
    ContactCreated,
    DeviceSettings,
    Heartbeat,
    HeartbeatReply,
)
from api.alerts.stream import events
from api.alerts.webhook import new_secret
from api.core.audit import record_event
from api.core.deps import (
    AdminDep,
    DeviceDep,
    OfficerDep,
    Principal,
    ServicesDep,
    SessionDep,
    deny,
    require,
)
from api.core.models import Alert, AlertContact, Device, Site, SiteAlerting, User, utcnow
from api.core.responses import AUTHED, BODY, INPUT, answers
from api.core.services import Services
from api.ingest import own_recording
from evidence import wire
from evidence.audit_actions import Action

router = APIRouter(tags=["alerts"])
NO_ALERT = {404: "No such alert (another site's or another device's looks the same)."}
NO_SITE = {404: "No such site."}
DeviceOrOfficer = Annotated[Principal, Depends(require("device", "officer"))]


def _device(session: Session, principal: Principal) -> Device:
    device = session.get(Device, principal.id)
    if device is None:
        raise HTTPException(403, "device unknown")
    return device


def _alert_in_scope(
    request: Request, services: Services, session: Session, principal: Principal, alert_id: uuid.UUID
) -> Alert:
    """The alert if the caller may see it: the device that raised it, or an officer of its site (denials logged)."""
    alert = session.get(Alert, str(alert_id))
    if alert is None:
        raise HTTPException(404, "no such alert")
    if principal.kind == "device" and alert.device_id != principal.id:
        raise deny(services, request, 404, "alert raised by another device", principal.actor, answer="no such alert")
    if principal.kind == "user" and not principal.may_see_site(alert.site_id):
        why = "alert belongs to a site outside your scope"
        raise deny(services, request, 404, why, principal.actor, answer="no such alert")
    return alert


# --------------------------------------------------------------------------- devices


@router.post(
    wire.ALERTS,
    status_code=201,
    response_model=AlertView,
    responses=answers(
        AUTHED,
        BODY,
        {200: {"description": "This alert is already open (the button pressed twice).", "model": AlertView}},
        {404: "No such recording for this device."},
    ),
)
def raise_alert(
    body: AlertRaise,
    principal: DeviceDep,
    session: SessionDep,
    services: ServicesDep,
    request: Request,
    response: Response,
) -> dict[str, Any]:
    """Staff call for help (or flag an incident): the site's first tier is told; the recording becomes an incident."""
    device = _device(session, principal)
    recording = own_recording(session, device.id, body.recording_id) if body.recording_id is not None else None
    same = Alert.recording_id == recording.id if recording is not None else Alert.recording_id.is_(None)
    waiting = (Alert.device_id == device.id, Alert.kind == body.kind, Alert.state != "acknowledged", same)
    repeat = session.scalar(select(Alert).where(*waiting).limit(1))
    if repeat is not None:  # a second press while the first waits: the same alert, nobody told twice
        response.status_code = 200
        return lifecycle.view(session, repeat, device.name)
    alert = lifecycle.raise_alert(session, services.store, device, body.kind, recording, body.category)
    session.commit()
    lifecycle.wake_worker(request)
    return lifecycle.view(session, alert, device.name)


@router.post(wire.HEARTBEAT, response_model=HeartbeatReply, responses=answers(AUTHED, BODY))
def heartbeat(body: Heartbeat, principal: DeviceDep, session: SessionDep, request: Request) -> dict[str, Any]:
    """The device checks in: its clock and spool; a clock far off or a spool filling up notifies the site."""
    device = _device(session, principal)
    now, skew = monitor.heartbeat(
        session, device, body.clock, body.spool_used_bytes, body.spool_max_bytes, body.unsent_segments, AlertSettings()
    )
    session.commit()
    lifecycle.wake_worker(request)
    return {"server_time": now, "skew_seconds": skew}


@router.get(wire.DEVICE_SETTINGS, response_model=DeviceSettings, responses=answers(AUTHED))
def device_settings(principal: DeviceDep, session: SessionDep) -> dict[str, Any]:
    """What the kiosk shows: the site's incident categories; whether an incident flag also calls for help."""
    device = _device(session, principal)
    row = site_settings.alerting(session, device.site_id)
    return {
        "site": device.site_id,
        "incident_categories": site_settings.categories(row),
        "incident_alerts": row.incident_alerts,
        "escalate_after_seconds": row.escalate_after_seconds,
    }


# --------------------------------------------------------------------------- officers (and the device that raised it)


@router.get(wire.ALERTS, response_model=list[AlertView], responses=answers(AUTHED, INPUT))
def list_alerts(
    principal: OfficerDep,
    session: SessionDep,
    state: Literal["open", "escalated", "acknowledged"] | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[dict[str, Any]]:
    """The alerts of your sites, newest first."""
    query = select(Alert).where(Alert.site_id.in_(principal.sites))
    if state is not None:
        query = query.where(Alert.state == state)
    alerts = session.scalars(query.order_by(Alert.created_at.desc()).limit(limit)).all()
    return [lifecycle.view(session, a) for a in alerts]


# Not in the OpenAPI document: a live event stream has no response body schema to check, and a fuzzer
# would hold it open for its whole timeout. docs/alerts.md describes it; the role table tests it.
@router.get(wire.ALERT_STREAM, response_class=StreamingResponse, include_in_schema=False)
async def alert_stream(
    principal: OfficerDep,
    services: ServicesDep,
    request: Request,
    timeout: Annotated[
        float, Query(ge=0, le=3600, description="Seconds before the stream ends (then reconnect).")
    ] = 600,
) -> StreamingResponse:
    """Live: the alerts of your sites still waiting, then every change, as server-sent events."""
    stream = events(services.sessions, principal.sites, timeout, request.is_disconnected)
    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}  # proxies must not buffer a live stream
    return StreamingResponse(stream, media_type="text/event-stream", headers=headers)


@router.get(wire.ALERT, response_model=AlertView, responses=answers(AUTHED, INPUT, NO_ALERT))
def show_alert(
    alert_id: uuid.UUID, principal: DeviceOrOfficer, session: SessionDep, services: ServicesDep, request: Request
) -> dict[str, Any]:
    """The kiosk polls this: acknowledged, by whom, with what message; or escalated."""
    return lifecycle.view(session, _alert_in_scope(request, services, session, principal, alert_id))


@router.post(
    wire.ALERT_ACK,
    response_model=AlertView,
    responses=answers(AUTHED, BODY, NO_ALERT, {409: "Already acknowledged (the detail names by whom)."}),
)
def acknowledge(
    alert_id: uuid.UUID,
    body: AlertAck,
    principal: OfficerDep,
    session: SessionDep,
    services: ServicesDep,
    request: Request,
) -> dict[str, Any]:
    """Answer an alert of your site ("Sato is coming"): the kiosk shows it; escalation stops."""
    alert = _alert_in_scope(request, services, session, principal, alert_id)
    user = session.get(User, principal.id)
    name = user.name if user is not None else principal.id
    try:
        lifecycle.acknowledge(session, alert, principal.id, name, body.message)
    except lifecycle.AlreadyAcknowledged as exc:
        raise HTTPException(409, str(exc)) from exc
    session.commit()
    return lifecycle.view(session, alert)


# --------------------------------------------------------------------------- administrators


def _site(session: Session, site_id: str) -> Site:
    site = session.get(Site, site_id)
    if site is None:
        raise HTTPException(404, f"no site {site_id!r}")
    return site


def _public(session: Session, site_id: str) -> dict[str, Any]:
    row = site_settings.alerting(session, site_id)
    return {
        "site": site_id,
        "escalate_after_seconds": row.escalate_after_seconds,
        "incident_alerts": row.incident_alerts,
        "opening_hours": row.opening_hours,
        "timezone": row.timezone,
        "incident_categories": site_settings.categories(row),
        "contacts": [
            {"id": c.id, "tier": c.tier, "channel": c.channel, "target": c.target}  # never the secret
            for c in site_settings.contacts(session, site_id)
        ],
    }


@router.get(wire.SITE_ALERTING, response_model=AlertingPublic, responses=answers(AUTHED, INPUT, NO_SITE))
def show_alerting(site_id: str, principal: AdminDep, session: SessionDep) -> dict[str, Any]:
    """A site's alerting settings and contacts (webhook secrets are never shown again)."""
    _site(session, site_id)
    return _public(session, site_id)


@router.put(wire.SITE_ALERTING, response_model=AlertingPublic, responses=answers(AUTHED, BODY, NO_SITE))
def set_alerting(site_id: str, body: AlertingUpdate, principal: AdminDep, session: SessionDep) -> dict[str, Any]:
    """Change a site's escalation time, incident alerts, opening hours, time zone or incident categories."""
    _site(session, site_id)
    row = session.get(SiteAlerting, site_id)
    if row is None:
        row = SiteAlerting(site_id=site_id, **site_settings.DEFAULTS, updated_by=principal.actor)
        session.add(row)
    changes = body.model_dump(exclude_unset=True)
    if "incident_categories" in changes and changes["incident_categories"] is not None:
        codes = [c["code"] for c in changes["incident_categories"]]
        if len(set(codes)) != len(codes):
            raise HTTPException(422, "incident category codes must be unique")
    for name, value in changes.items():
        if name in ("escalate_after_seconds", "incident_alerts", "timezone") and value is None:
            continue  # these have no "unset": null keeps the value
        setattr(row, name, value)
    row.updated_at, row.updated_by = utcnow(), principal.actor
    record_event(session, actor=principal.actor, action=Action.ALERTING_SET, target=f"site:{site_id}", detail=changes)
    session.commit()
    return _public(session, site_id)


@router.post(
    wire.ALERT_CONTACTS, status_code=201, response_model=ContactCreated, responses=answers(AUTHED, BODY, NO_SITE)
)
def add_contact(site_id: str, body: ContactCreate, principal: AdminDep, session: SessionDep) -> dict[str, Any]:
    """Add an e-mail address or a webhook (http/https) to a tier; a webhook's signing secret is shown once."""
    _site(session, site_id)
    if (body.email is None) == (body.webhook is None):
        raise HTTPException(422, "give exactly one of email and webhook")
    channel, target = ("email", body.email) if body.email is not None else ("webhook", body.webhook)
    assert target is not None
    secret = new_secret() if channel == "webhook" else None
    contact = AlertContact(
        id=str(uuid.uuid4()),
        site_id=site_id,
        tier=body.tier,
        channel=channel,
        target=target,
        secret=secret,
        created_by=principal.actor,
    )
    session.add(contact)
    record_event(
        session,
        actor=principal.actor,
        action=Action.ALERT_CONTACT_ADD,
        target=f"site:{site_id}",
        detail={"contact": contact.id, "tier": body.tier, "channel": channel, "target": target},  # never the secret
    )
    session.commit()
    return {"id": contact.id, "tier": contact.tier, "channel": channel, "target": target, "secret": secret}


@router.delete(
    wire.ALERT_CONTACT,
    response_model=AlertingPublic,
    responses=answers(AUTHED, INPUT, {404: "No such site or contact."}),
)
def remove_contact(site_id: str, contact_id: uuid.UUID, principal: AdminDep, session: SessionDep) -> dict[str, Any]:
    """Remove a contact; notifications already queued for it are not sent (its secret goes with it)."""
    contact = session.get(AlertContact, str(contact_id))
    if contact is None or contact.site_id != site_id:
        raise HTTPException(404, "no such contact at this site")
    session.delete(contact)
    record_event(
        session,
        actor=principal.actor,
        action=Action.ALERT_CONTACT_REMOVE,
        target=f"site:{site_id}",
        detail={"contact": contact.id, "tier": contact.tier, "channel": contact.channel, "target": contact.target},
    )
    session.commit()
    return _public(session, site_id)
