"""Early deletion takes two people or time.

One officer *requests* the deletion of a recording before its retention date,
with a reason. It is carried out either

- at once, when a second officer of the same site (never the requester) approves; or
- by the retention job, once a grace period (COUNTERSIGN_DELETION_GRACE_SECONDS,
  three days by default) has passed without anyone cancelling it.

A recording flagged as an incident always needs the second officer: the grace
period alone never deletes it. Any officer of the site may cancel a pending
request, the requester included. Holds win throughout: a held recording cannot
be requested, approved or executed, and a request waiting on a hold stays
pending until the hold is released (or someone cancels it). Every step is an
audit entry; the purge itself is the retention job's path (retention.purge).

No web framework here: the routes (retention/routes/deletions.py) and the job
(retention/job.py) call these and translate `DeletionRefused` into their answer.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import nacl.signing
from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session, sessionmaker

from api.core.audit import record_committed, record_event
from api.core.models import Recording, utcnow
from api.core.storage import BlobStore
from evidence.audit_actions import Action
from retention.decide import covering_holds
from retention.models import DeletionRequest
from retention.purge import PurgeResult, purge
from retention.store import active_holds, facts_of


class DeletionRefused(Exception):
    """The deletion cannot go ahead"""

    def __init__(self, status: int, message: str, holds: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.status, self.holds = status, list(holds)


@dataclass
class Executed:
    """What happened to one request that was carried out (or tried)."""

    request: DeletionRequest
    result: PurgeResult


def state_of(req: DeletionRequest) -> str:
    if req.executed_at is not None:
        return "executed"
    if req.cancelled_by is not None:
        return "cancelled"
    return "approved" if req.approved_by is not None else "pending"


def _held_by(session: Session, recording: Recording) -> list[str]:
    return sorted({h.case_ref for h in covering_holds(facts_of(recording), active_holds(session))})


def open_request(session: Session, recording_id: str) -> DeletionRequest | None:
    return session.scalar(
        select(DeletionRequest).where(
            DeletionRequest.recording_id == recording_id,
            DeletionRequest.executed_at.is_(None),
            DeletionRequest.cancelled_by.is_(None),
        )
    )


def request_deletion(
    session: Session, recording: Recording, *, actor: str, reason: str, grace_seconds: int, now: datetime | None = None
) -> DeletionRequest:
    """Record one officer's request (the caller has checked scope and that the recording is live)."""
    refs = _held_by(session, recording)
    if refs:
        raise DeletionRefused(409, f"recording is under legal hold ({', '.join(refs)}); it cannot be deleted", refs)
    existing = open_request(session, recording.id)
    if existing is not None:
        raise DeletionRefused(409, f"a deletion of this recording is already requested ({existing.id})")
    now = now or utcnow()
    req = DeletionRequest(
        id=str(uuid.uuid4()),
        recording_id=recording.id,
        site_id=recording.site_id,
        reason=reason,
        requested_by=actor,
        requested_at=now,
        not_before=now + timedelta(seconds=grace_seconds),
        needs_approval=recording.incident_category is not None,
    )
    session.add(req)
    record_event(
        session,
        actor=actor,
        action=Action.DELETION_REQUEST,
        target=f"recording:{recording.id}",
        purpose=reason,
        detail={
            "request": req.id,
            "not_before": req.not_before.isoformat(),
            "needs_approval": req.needs_approval,
        },
    )
    return req


def cancel_deletion(session: Session, req: DeletionRequest, *, actor: str, reason: str) -> None:
    if state_of(req) not in ("pending", "approved"):  # approved, yet still waiting on a hold: may be cancelled
        raise DeletionRefused(409, f"this request is {state_of(req)}; it can no longer be cancelled")
    req.cancelled_by, req.cancel_reason, req.decided_at = actor, reason, utcnow()
    record_event(
        session,
        actor=actor,
        action=Action.DELETION_CANCEL,
        target=f"recording:{req.recording_id}",
        purpose=reason,
        detail={"request": req.id},
    )


def approve_deletion(session: Session, req: DeletionRequest, *, actor: str) -> None:
    """The second officer's approval (the caller checks the site; this checks it is a second person)."""
    if state_of(req) != "pending":
        raise DeletionRefused(409, f"this request is {state_of(req)}; only a pending one can be approved")
    if actor == req.requested_by:
        raise DeletionRefused(403, "the officer who requested a deletion cannot approve it: a second officer must")
    recording = session.get(Recording, req.recording_id)
    if recording is not None:
        refs = _held_by(session, recording)
        if refs:
            raise DeletionRefused(409, f"recording is under legal hold ({', '.join(refs)}); it cannot be deleted", refs)
    req.approved_by, req.decided_at = actor, utcnow()
    record_event(
        session,
        actor=actor,
        action=Action.DELETION_APPROVE,
        target=f"recording:{req.recording_id}",
        detail={"request": req.id, "requested_by": req.requested_by},
    )


def execute(
    sessions: sessionmaker[Session],
    store: BlobStore,
    key: nacl.signing.SigningKey,
    request_id: str,
    *,
    now: datetime | None = None,
) -> Executed:
    """Carry out an approved (or grace-expired) request through the purge path; mark it executed if it went."""
    now = now or utcnow()
    with sessions() as session:
        req = session.get(DeletionRequest, request_id)
        if req is None:
            raise DeletionRefused(404, "no such deletion request")
        session.expunge(req)
    actor = req.approved_by or "system"  # the second officer, or the job after the grace period
    result = purge(sessions, store, key, [req.recording_id], now=now, actor=actor, early_reason=req.reason)
    rid = req.recording_id
    refused: dict[str, object] | None = None
    if result.shred.held:  # a hold arrived meanwhile: the request waits (it was refused, nothing shredded)
        refused = {"holds": list(result.shred.held[rid])}
    elif rid in result.shred.store_held:
        refused = {"store_hold": result.shred.store_held[rid]}
    if refused is not None:
        record_committed(
            sessions,
            actor=actor,
            action=Action.RECORDING_DELETE,
            target=f"recording:{rid}",
            outcome="denied",
            purpose=req.reason,
            detail={**refused, "request": req.id},
        )
    else:  # shredded now, or already by an earlier try: either way the request is done
        with sessions() as session, session.begin():
            row = session.get(DeletionRequest, request_id)
            if row is not None and row.executed_at is None:
                row.executed_at = now
    return Executed(req, result)


@dataclass
class DueRun:
    executed: list[str] = field(default_factory=list)  # recording ids
    waiting: dict[str, str] = field(default_factory=dict)  # request id -> why it still waits


def due_requests(session: Session, now: datetime) -> Sequence[DeletionRequest]:
    """Requests to carry out now: approved ones still waiting (a hold was in the way), and pending
    ones whose grace period has passed uncancelled and that need no second officer."""
    grace_over = and_(DeletionRequest.needs_approval.is_(False), DeletionRequest.not_before <= now)
    return session.scalars(
        select(DeletionRequest)
        .where(
            DeletionRequest.executed_at.is_(None),
            DeletionRequest.cancelled_by.is_(None),
            or_(DeletionRequest.approved_by.is_not(None), grace_over),
        )
        .order_by(DeletionRequest.requested_at)
    ).all()


def execute_due(
    sessions: sessionmaker[Session], store: BlobStore, key: nacl.signing.SigningKey, now: datetime
) -> DueRun:
    """The retention job's part: carry out every request whose grace period passed uncancelled."""
    run = DueRun()
    with sessions() as session:
        ids = [r.id for r in due_requests(session, now)]
    for request_id in ids:
        done = execute(sessions, store, key, request_id, now=now)
        rid = done.request.recording_id
        if rid in done.result.shred.held:
            run.waiting[request_id] = f"held: {', '.join(done.result.shred.held[rid])}"
        elif rid in done.result.shred.store_held:
            run.waiting[request_id] = done.result.shred.store_held[rid]
        else:
            run.executed.append(rid)
    return run
