"""Legal holds: officers place and release them within their sites.

A hold names a case and a reason, covers explicit recordings and/or a scope
(site, device, time range, incident category) that also catches recordings
made later, never expires, and is released only by an audited action with a
reason. A held recording cannot be deleted by anyone (retention.purge), and
its objects carry the store's own legal hold too (retention.holds_sync), so a
client going around the service cannot delete them either.
"""

from __future__ import annotations

import logging
import uuid
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from api.core.audit import record_event
from api.core.deps import OfficerDep, Principal, ServicesDep, SessionDep, deny
from api.core.models import Device, Recording, utcnow
from api.core.responses import AUTHED, BODY, INPUT, WRONG_ROLE, answers
from api.core.services import Services
from evidence.audit_actions import Action
from retention.holds_sync import catch_up, covered_ids, covers_clause, place_store_holds, release_store_holds
from retention.models import Hold, HoldRecording
from retention.schemas import HoldCreate, HoldPublic, HoldRelease

router = APIRouter(prefix="/v1/holds", tags=["holds"])
log = logging.getLogger(__name__)
NO_HOLD = {404: "No such hold (one outside the officer's sites looks the same)."}
PLACED = {
    403: f"{WRONG_ROLE} Or the site is outside the officer's sites.",
    404: "No such device or recording (one outside the officer's sites looks the same).",
    410: "A named recording was already deleted; nothing was held.",
    503: "The object store could not place its legal hold; nothing was held, retry.",
}


def _public(hold: Hold, covers: int | None = None) -> HoldPublic:
    return HoldPublic(
        id=hold.id,
        case_ref=hold.case_ref,
        reason=hold.reason,
        site=hold.site_id,
        scoped=hold.scoped,
        device=hold.device_id,
        started_from=hold.started_from,
        started_to=hold.started_to,
        incident_category=hold.incident_category,
        recordings=sorted(r.recording_id for r in hold.recordings),
        created_at=hold.created_at,
        created_by=hold.created_by,
        active=hold.released_at is None,
        released_at=hold.released_at,
        released_by=hold.released_by,
        release_reason=hold.release_reason,
        covers=covers,
    )


def covered_count(session: Session, hold: Hold) -> int:
    """How many live recordings the hold covers now (SQL mirror of retention.decide.hold_covers)."""
    query = select(func.count()).where(Recording.purge_state.is_(None), covers_clause(hold))
    return session.scalar(query) or 0


def _site_for(
    request: Request, services: Services, session: Session, officer: Principal, body: HoldCreate
) -> tuple[str, list[str]]:
    """The one site the hold belongs to, checked against the officer's scope; and its explicit recordings."""
    sites: set[str] = set()
    if body.site is not None:
        sites.add(body.site)
    if body.device is not None:
        device = session.get(Device, body.device)
        if device is None:
            raise HTTPException(404, f"no device {body.device!r}")
        sites.add(device.site_id)
    ids = sorted({str(r) for r in body.recordings})
    for rid in ids:
        recording = session.get(Recording, rid)
        if recording is None:
            raise HTTPException(404, f"no such recording {rid}")
        if not officer.may_see_site(recording.site_id):
            reason = "recording belongs to a site outside your scope"
            raise deny(services, request, 404, reason, officer.actor, answer=f"no such recording {rid}")
        if recording.purge_state is not None:
            raise HTTPException(410, f"recording {rid} was already deleted; it cannot be held")
        sites.add(recording.site_id)
    if not sites and len(officer.sites) == 1:
        sites = set(officer.sites)
    if len(sites) != 1:
        detail = "name the site (--site)" if not sites else f"a hold covers one site, these span {sorted(sites)}"
        raise HTTPException(422, detail)
    site = sites.pop()
    if not officer.may_see_site(site):
        raise deny(services, request, 403, "site outside your scope", officer.actor)
    return site, ids


@router.post("", status_code=201, response_model=HoldPublic, responses=answers(AUTHED, BODY, PLACED))
def create_hold(
    body: HoldCreate, request: Request, officer: OfficerDep, session: SessionDep, services: ServicesDep
) -> HoldPublic:
    scoped = any(
        v is not None for v in (body.site, body.device, body.started_from, body.started_to, body.incident_category)
    )
    if not scoped and not body.recordings:
        raise HTTPException(422, "a hold needs recordings or a scope (site, device, time range, incident category)")
    for name, value in (("started_from", body.started_from), ("started_to", body.started_to)):
        if value is not None and value.tzinfo is None:
            raise HTTPException(422, f"{name} needs a time zone")
    if body.started_from and body.started_to and body.started_from >= body.started_to:
        raise HTTPException(422, "started_from must be before started_to")
    site, ids = _site_for(request, services, session, officer, body)
    hold = Hold(
        id=str(uuid.uuid4()),
        case_ref=body.case_ref,
        reason=body.reason,
        site_id=site,
        scoped=scoped,
        device_id=body.device,
        started_from=body.started_from,
        started_to=body.started_to,
        incident_category=body.incident_category,
        created_by=officer.actor,
        recordings=[HoldRecording(recording_id=rid) for rid in ids],
    )
    session.add(hold)
    session.flush()  # takes the write lock: no purge can shred these recordings until we commit...
    purged = session.scalars(
        select(Recording.id).where(Recording.id.in_(ids), Recording.purge_state.is_not(None))
    ).all()
    if purged:  # ...and one that got there first is reported, not silently "held"
        session.rollback()
        raise HTTPException(410, f"recording(s) already deleted: {', '.join(purged)}")
    record_event(
        session,
        actor=officer.actor,
        action=Action.HOLD_CREATE,
        target=f"hold:{hold.id}",
        purpose=body.reason,
        detail={
            "case": body.case_ref,
            "site": site,
            "scoped": scoped,
            "device": body.device,
            "from": body.started_from.isoformat() if body.started_from else None,
            "to": body.started_to.isoformat() if body.started_to else None,
            "incident_category": body.incident_category,
            "recordings": ids,
        },
    )
    # The store's holds go on before the hold commits, so that "held here ⇒ held in the store" holds
    # across a crash (a crash leaves extra store holds, never missing ones; retention.holds_sync).
    try:
        seen = place_store_holds(session, services.store, covered_ids(session, hold))
    except Exception as exc:
        session.rollback()
        log.warning("hold not placed: the object store failed", exc_info=True)
        detail = f"the object store could not place its legal hold ({exc}); nothing was held, retry"
        raise HTTPException(503, detail) from exc
    session.commit()
    catch_up(services.sessions, services.store, hold.id, seen)  # segments uploaded while we were at it
    return _public(hold, covered_count(session, hold))


def _scoped_hold(request: Request, services: Services, session: Session, officer: Principal, hold_id: str) -> Hold:
    hold = session.get(Hold, hold_id)
    if hold is None:
        raise HTTPException(404, "no such hold")
    if not officer.may_see_site(hold.site_id):
        reason = "hold belongs to a site outside your scope"
        raise deny(services, request, 404, reason, officer.actor, answer="no such hold")
    return hold


@router.get("", response_model=list[HoldPublic], responses=answers(AUTHED, INPUT))
def list_holds(
    officer: OfficerDep,
    session: SessionDep,
    active: Annotated[bool | None, Query(description="Only active (true) or released (false) holds.")] = True,
) -> list[HoldPublic]:
    query = select(Hold).where(Hold.site_id.in_(officer.sites))
    if active is not None:
        query = query.where(Hold.released_at.is_(None) if active else Hold.released_at.is_not(None))
    return [_public(h) for h in session.scalars(query.order_by(Hold.created_at))]


@router.get("/{hold_id}", response_model=HoldPublic, responses=answers(AUTHED, INPUT, NO_HOLD))
def show_hold(
    hold_id: uuid.UUID, request: Request, officer: OfficerDep, session: SessionDep, services: ServicesDep
) -> HoldPublic:
    hold = _scoped_hold(request, services, session, officer, str(hold_id))
    return _public(hold, covered_count(session, hold) if hold.released_at is None else None)


@router.post(
    "/{hold_id}/release",
    response_model=HoldPublic,
    responses=answers(AUTHED, BODY, NO_HOLD, {409: "The hold was already released."}),
)
def release_hold(
    hold_id: uuid.UUID,
    body: HoldRelease,
    request: Request,
    officer: OfficerDep,
    session: SessionDep,
    services: ServicesDep,
) -> HoldPublic:
    hold = _scoped_hold(request, services, session, officer, str(hold_id))
    if hold.released_at is not None:
        raise HTTPException(409, f"hold {hold.id} was already released at {hold.released_at.isoformat()}")
    hold.released_at, hold.released_by, hold.release_reason = utcnow(), officer.actor, body.reason
    record_event(
        session,
        actor=officer.actor,
        action=Action.HOLD_RELEASE,
        target=f"hold:{hold.id}",
        purpose=body.reason,
        detail={"case": hold.case_ref},
    )
    # Released here first, in the store after: a crash in between leaves store holds that this
    # released hold explains, which the purge releases; never a recording held here but not there.
    session.commit()
    release_store_holds(services.sessions, services.store, hold.id)
    return _public(hold)
