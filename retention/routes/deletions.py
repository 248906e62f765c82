"""Early deletion, by two officers or after a grace period (retention/deletion.py has the rules).

    POST /v1/evidence/{id}/deletion     one officer asks (202: pending)
    GET  /v1/deletions                   the requests of the officer's sites
    POST /v1/deletions/{id}/approve      a second officer of the site: carried out now
    POST /v1/deletions/{id}/cancel       any officer of the site, before it is carried out

Reasons travel in request bodies, never in URLs (URLs end up in proxy and server logs).
"""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, Request
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.core.audit import record_committed
from api.core.deps import OfficerDep, Principal, ServicesDep, SessionDep, deny, live, recording_in_scope
from api.core.responses import AUTHED, BODY, INPUT, answers
from api.core.services import Services
from evidence.audit_actions import Action
from retention import deletion
from retention.models import DeletionRequest, Tombstone
from retention.schemas import (
    CancelBody,
    DeletionDone,
    DeletionRequestBody,
    DeletionRequestPublic,
    TombstonePublic,
)

router = APIRouter(prefix="/v1", tags=["deletions"])


def public(req: DeletionRequest) -> DeletionRequestPublic:
    return DeletionRequestPublic(
        id=req.id,
        recording_id=req.recording_id,
        site=req.site_id,
        reason=req.reason,
        requested_by=req.requested_by,
        requested_at=req.requested_at,
        not_before=req.not_before,
        needs_approval=req.needs_approval,
        state=deletion.state_of(req),  # type: ignore[arg-type]
        approved_by=req.approved_by,
        cancelled_by=req.cancelled_by,
        cancel_reason=req.cancel_reason,
        executed_at=req.executed_at,
    )


def tombstone_public(services: Services, tomb: Tombstone) -> TombstonePublic:
    key = services.keys.signing_key
    assert key is not None
    return TombstonePublic(
        recording_id=tomb.recording_id,
        site=tomb.site_id,
        device=tomb.device_id,
        started_at=tomb.started_at,
        ended_at=tomb.ended_at,
        categories=tomb.categories,
        reason=tomb.reason,
        rule=tomb.rule,
        actor=tomb.actor,
        shredded_at=tomb.shredded_at,
        purged_at=tomb.purged_at,
        segment_count=tomb.segment_count,
        record=tomb.record,
        signature=tomb.signature.hex() if tomb.signature is not None else None,
        service_public_key=bytes(key.verify_key).hex(),
    )


def _refused(
    services: Services, exc: deletion.DeletionRefused, actor: str, recording_id: str, reason: str | None
) -> HTTPException:
    """The refusal to raise; one refused because of a hold is logged (someone tried to destroy held evidence)."""
    if exc.holds:
        record_committed(
            services.sessions,
            actor=actor,
            action=Action.RECORDING_DELETE,
            target=f"recording:{recording_id}",
            outcome="denied",
            purpose=reason,
            detail={"holds": exc.holds},
        )
    return HTTPException(exc.status, str(exc))


@router.post(
    "/evidence/{recording_id}/deletion",
    status_code=202,
    response_model=DeletionRequestPublic,
    responses=answers(
        AUTHED,
        BODY,
        {
            404: "No such recording (or not in your sites).",
            409: "Under legal hold, or a deletion is already requested.",
            410: "Already deleted.",
        },
    ),
)
def request_deletion(
    recording_id: uuid.UUID,
    body: DeletionRequestBody,
    request: Request,
    officer: OfficerDep,
    session: SessionDep,
    services: ServicesDep,
) -> DeletionRequestPublic:
    """Ask for a recording to be deleted before its time. It is carried out when a second officer of the
    site approves, or (not for incidents) once the grace period has passed without anyone cancelling."""
    recording = live(recording_in_scope(request, services, session, officer, recording_id))
    try:
        req = deletion.request_deletion(
            session,
            recording,
            actor=officer.actor,
            reason=body.reason,
            grace_seconds=services.settings.deletion_grace_seconds,
        )
    except deletion.DeletionRefused as exc:
        raise _refused(services, exc, officer.actor, recording.id, body.reason) from exc
    session.commit()
    return public(req)


@router.get("/deletions", response_model=list[DeletionRequestPublic], responses=answers(AUTHED, INPUT))
def list_deletions(
    officer: OfficerDep,
    session: SessionDep,
    state: Annotated[
        Literal["open", "all"], Query(description="open: pending or approved, not yet carried out")
    ] = "open",
) -> list[DeletionRequestPublic]:
    query = select(DeletionRequest).where(DeletionRequest.site_id.in_(sorted(officer.sites)))
    if state == "open":
        query = query.where(DeletionRequest.executed_at.is_(None), DeletionRequest.cancelled_by.is_(None))
    return [public(r) for r in session.scalars(query.order_by(DeletionRequest.requested_at))]


def _scoped(
    request: Request, services: Services, session: Session, officer: Principal, request_id: str
) -> DeletionRequest:
    req = session.get(DeletionRequest, request_id)
    if req is None:
        raise HTTPException(404, "no such deletion request")
    if not officer.may_see_site(req.site_id):
        reason = "deletion request belongs to a site outside your scope"
        raise deny(services, request, 404, reason, officer.actor, answer="no such deletion request")
    return req


@router.post(
    "/deletions/{request_id}/approve",
    response_model=DeletionDone,
    responses=answers(
        AUTHED,
        INPUT,
        {
            403: "The caller's role may not do this, or the caller asked for this deletion (a second officer must).",
            404: "No such request (or not in your sites).",
            409: "Not pending, or the recording is under legal hold (approved, it waits for the release).",
        },
    ),
)
def approve(
    request_id: uuid.UUID, request: Request, officer: OfficerDep, session: SessionDep, services: ServicesDep
) -> DeletionDone:
    """The second officer's approval: the recording is deleted now (never while held)."""
    req = _scoped(request, services, session, officer, str(request_id))
    try:
        deletion.approve_deletion(session, req, actor=officer.actor)
    except deletion.DeletionRefused as exc:
        raise _refused(services, exc, officer.actor, req.recording_id, req.reason) from exc
    session.commit()
    session.close()  # the purge uses its own transactions; hold nothing open meanwhile
    key = services.keys.signing_key
    assert key is not None
    done = deletion.execute(services.sessions, services.store, key, str(request_id))
    rid = done.request.recording_id
    if rid in done.result.shred.held:
        cases = ", ".join(done.result.shred.held[rid])
        raise HTTPException(409, f"recording is under legal hold ({cases}); approved, it waits for the release")
    if rid in done.result.shred.store_held:
        raise HTTPException(409, f"recording cannot be deleted: {done.result.shred.store_held[rid]}")
    with services.sessions() as fresh:
        tomb = fresh.get(Tombstone, rid)
        row = fresh.get(DeletionRequest, str(request_id))
        assert row is not None
        return DeletionDone(
            recording_id=rid,
            state="purged" if rid in done.result.purged else "shredding",
            tombstone=tombstone_public(services, tomb) if tomb else None,
            request=public(row),
        )


@router.post(
    "/deletions/{request_id}/cancel",
    response_model=DeletionRequestPublic,
    responses=answers(
        AUTHED,
        BODY,
        {404: "No such request (or not in your sites).", 409: "Already carried out or cancelled."},
    ),
)
def cancel(
    request_id: uuid.UUID,
    body: CancelBody,
    request: Request,
    officer: OfficerDep,
    session: SessionDep,
    services: ServicesDep,
) -> DeletionRequestPublic:
    """Stop a deletion that has not been carried out yet (any officer of the site, the requester too)."""
    req = _scoped(request, services, session, officer, str(request_id))
    try:
        deletion.cancel_deletion(session, req, actor=officer.actor, reason=body.reason)
    except deletion.DeletionRefused as exc:
        raise _refused(services, exc, officer.actor, req.recording_id, body.reason) from exc
    session.commit()
    return public(req)
