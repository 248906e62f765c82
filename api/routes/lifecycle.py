"""Officer actions on a recording's life: flag it as an incident, extend it, delete it early, read its tombstone.

All within the officer's sites. Deleting goes through the same purge path as
the retention job (retention.purge) and is refused, for everyone, while any
active hold covers the recording: 409 naming the case references.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request

from api.audit import record_committed, record_event
from api.deps import OfficerDep, ServicesDep, SessionDep, live, recording_in_scope
from api.models import Recording, Tombstone, utcnow
from api.retention_schemas import DeletionPublic, ExtendBody, FlagBody, RetentionChange, TombstonePublic
from api.services import Services
from retention.decide import covering_holds
from retention.holds_sync import hold_if_covered
from retention.purge import purge
from retention.store import active_holds, facts_of, refresh_retention

router = APIRouter(prefix="/v1/evidence", tags=["lifecycle"])

DeleteReason = Annotated[
    str, Query(min_length=10, max_length=500, description="Why it must go before its time (logged).")
]
MAX_EXTENSION = timedelta(days=36500)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _change(recording: Recording) -> RetentionChange:
    return RetentionChange(
        id=recording.id,
        incident_category=recording.incident_category,
        retain_until=recording.retain_until,
        retain_reason=recording.retain_reason,
        retain_extended_until=recording.retain_extended_until,
    )


@router.post("/{recording_id}/flag", response_model=RetentionChange)
def flag(
    recording_id: uuid.UUID,
    body: FlagBody,
    request: Request,
    officer: OfficerDep,
    session: SessionDep,
    services: ServicesDep,
) -> RetentionChange:
    """Flag (or re-categorise) a recording as an incident; its retain-until date is recomputed."""
    recording = live(recording_in_scope(request, services, session, officer, recording_id))
    previous = recording.incident_category
    recording.incident_category = body.category
    old, new = refresh_retention(session, recording)
    record_event(
        session,
        actor=officer.actor,
        action="api:recording:flag",
        target=f"recording:{recording.id}",
        detail={"category": body.category, "previous": previous, "retain_until": [_iso(old), _iso(new)]},
    )
    hold_if_covered(session, services.store, recording)  # a scoped hold on this category: store hold before commit
    session.commit()
    return _change(recording)


@router.post("/{recording_id}/extend", response_model=RetentionChange)
def extend(
    recording_id: uuid.UUID,
    body: ExtendBody,
    request: Request,
    officer: OfficerDep,
    session: SessionDep,
    services: ServicesDep,
) -> RetentionChange:
    """Keep a recording at least until a date; no policy change can shorten it afterwards."""
    if body.until.tzinfo is None:
        raise HTTPException(422, "until needs a time zone, e.g. 2030-01-01T00:00:00+09:00")
    recording = live(recording_in_scope(request, services, session, officer, recording_id))
    now = utcnow()
    if not now < body.until <= now + MAX_EXTENSION:
        raise HTTPException(422, "until must be in the future (and within 100 years)")
    current = recording.retain_extended_until
    if current is not None and body.until < current:
        raise HTTPException(409, f"already extended to {current.isoformat()}; an extension is never shortened")
    recording.retain_extended_until = body.until
    old, new = refresh_retention(session, recording)
    record_event(
        session,
        actor=officer.actor,
        action="api:recording:extend",
        target=f"recording:{recording.id}",
        purpose=body.reason,
        detail={"until": body.until.isoformat(), "previous": _iso(current), "retain_until": [_iso(old), _iso(new)]},
    )
    session.commit()
    return _change(recording)


def _tombstone(services: Services, tomb: Tombstone) -> TombstonePublic:
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


@router.delete("/{recording_id}", response_model=DeletionPublic)
def delete_recording(
    recording_id: uuid.UUID,
    reason: DeleteReason,
    request: Request,
    officer: OfficerDep,
    session: SessionDep,
    services: ServicesDep,
) -> DeletionPublic:
    """Delete a recording before its time (made by mistake, a data-subject request). Never while held."""
    recording = live(recording_in_scope(request, services, session, officer, recording_id))
    target = f"recording:{recording.id}"

    def refuse_held(refs: tuple[str, ...] | list[str]) -> HTTPException:
        record_committed(
            services.sessions,
            actor=officer.actor,
            action="api:recording:delete",
            target=target,
            outcome="denied",
            purpose=reason,
            detail={"holds": list(refs)},
        )
        return HTTPException(409, f"recording is under legal hold ({', '.join(refs)}); it cannot be deleted")

    refs = sorted({h.case_ref for h in covering_holds(facts_of(recording), active_holds(session))})
    if refs:
        raise refuse_held(refs)
    session.close()  # the purge uses its own transactions; hold nothing open meanwhile
    key = services.keys.signing_key
    assert key is not None
    result = purge(
        services.sessions,
        services.store,
        key,
        [str(recording_id)],
        now=utcnow(),
        actor=officer.actor,
        early_reason=reason,
    )
    if result.shred.held:  # a hold arrived between the check above and the shredding
        raise refuse_held(result.shred.held[str(recording_id)])
    if str(recording_id) in result.shred.store_held:  # nothing was shredded: say which object, and why
        why = result.shred.store_held[str(recording_id)]
        record_committed(
            services.sessions,
            actor=officer.actor,
            action="api:recording:delete",
            target=target,
            outcome="denied",
            purpose=reason,
            detail={"store_hold": why},
        )
        raise HTTPException(409, f"recording cannot be deleted: {why}")
    if result.shred.not_claimed:
        raise HTTPException(410, f"recording {recording_id} is already being deleted")
    with services.sessions() as fresh:
        tomb = fresh.get(Tombstone, str(recording_id))
        return DeletionPublic(
            recording_id=str(recording_id),
            state="purged" if str(recording_id) in result.purged else "shredding",
            tombstone=_tombstone(services, tomb) if tomb else None,
        )


@router.get("/{recording_id}/tombstone", response_model=TombstonePublic)
def tombstone(
    recording_id: uuid.UUID, request: Request, officer: OfficerDep, session: SessionDep, services: ServicesDep
) -> TombstonePublic:
    """What remains of a deleted recording: times, hashes, why, and the signed deletion record."""
    recording = recording_in_scope(request, services, session, officer, recording_id)
    tomb = session.get(Tombstone, recording.id)
    if tomb is None:
        raise HTTPException(404, "this recording has not been deleted")
    return _tombstone(services, tomb)
