"""Officer endpoints on /v1/evidence, within their sites: search, inspect, retrieve; then the
recording's life: flag it as an incident, extend it, delete it early, read its tombstone.

Every read is logged, with its purpose for audio, and the log entry is
committed before any byte of audio is sent (fail closed). Deleting goes through
the same purge path as the retention job (retention.purge) and is refused, for
everyone, while any active hold covers the recording: 409 naming the case references.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, Request, Response

from api.core.audit import record_committed, record_event
from api.core.models import Recording, utcnow
from api.core.services import Services
from api.deps import OfficerDep, ServicesDep, SessionDep, live, recording_in_scope
from api.retrieval import read_audio, segments_of
from api.schemas import RecordingDetail, RecordingPublic, SegmentPublic
from api.search import evidence_search
from evidence import audio
from evidence.audit_actions import Action
from evidence.errors import IntegrityError
from retention.decide import HoldFacts, covering_holds
from retention.lifecycle import flag_incident, shown_status
from retention.models import Tombstone
from retention.purge import purge
from retention.schemas import DeletionPublic, ExtendBody, FlagBody, RetentionChange, TombstonePublic
from retention.store import active_holds, facts_of, refresh_retention

router = APIRouter(prefix="/v1/evidence", tags=["evidence"])

Purpose = Annotated[str, Query(min_length=10, max_length=500, description="Why you need this evidence (logged).")]


def _public(r: Recording, stale_after: int, holds: Sequence[HoldFacts] = ()) -> RecordingPublic:
    return RecordingPublic(
        id=r.id,
        device_id=r.device_id,
        site=r.site_id,
        started_at=r.started_at,
        status=shown_status(r, stale_after),  # a lost device's upload shows as interrupted; the job records it
        consent_outcome=r.consent_outcome,
        consent=r.header.get("consent", {}),
        incident_category=r.incident_category,
        segment_count=r.segment_count,
        sample_rate=r.header.get("sample_rate"),
        ended_at=r.ended_at,
        retain_until=r.retain_until,
        retain_reason=r.retain_reason,
        held_by=sorted({h.case_ref for h in covering_holds(facts_of(r), holds)}),
    )


@router.get("", response_model=list[RecordingPublic])
def list_evidence(
    officer: OfficerDep,
    session: SessionDep,
    services: ServicesDep,
    site: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    incident: bool | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[RecordingPublic]:
    if (since is not None and since.tzinfo is None) or (until is not None and until.tzinfo is None):
        raise HTTPException(422, "since and until need a time zone, e.g. 2024-05-01T00:00:00+09:00")
    sites = officer.sites if site is None else officer.sites & {site}
    rows = list(session.scalars(evidence_search(sites, since, until, incident, limit)))
    record_event(session, actor=officer.actor, action=Action.EVIDENCE_LIST, detail={"site": site, "results": len(rows)})
    session.commit()
    holds = active_holds(session)
    return [_public(r, services.settings.interrupted_after_seconds, holds) for r in rows]


@router.get("/{recording_id}", response_model=RecordingDetail)
def show_evidence(
    recording_id: uuid.UUID, request: Request, officer: OfficerDep, session: SessionDep, services: ServicesDep
) -> RecordingDetail:
    recording = live(recording_in_scope(request, services, session, officer, recording_id))
    record_committed(
        services.sessions, actor=officer.actor, action=Action.EVIDENCE_SHOW, target=f"recording:{recording.id}"
    )
    segments = [
        SegmentPublic(
            index=s.index,
            final=s.final,
            size=s.size,
            ciphertext_sha256=s.ciphertext_sha256.hex(),
            plaintext_sha256=s.plaintext_sha256.hex(),
            received_at=s.received_at,
        )
        for s in segments_of(session, recording.id)
    ]
    return RecordingDetail(
        **_public(recording, services.settings.interrupted_after_seconds, active_holds(session)).model_dump(),
        segments=segments,
    )


@router.get("/{recording_id}/audio", responses={200: {"content": {"audio/flac": {}, "audio/wav": {}}}})
def get_audio(
    recording_id: uuid.UUID,
    purpose: Purpose,
    request: Request,
    officer: OfficerDep,
    session: SessionDep,
    services: ServicesDep,
    format: Literal["flac", "wav"] = "flac",
) -> Response:
    if len(purpose.strip()) < 10:  # ten spaces are not a reason
        raise HTTPException(422, "purpose must say why you need this evidence (at least 10 characters)")
    recording = live(recording_in_scope(request, services, session, officer, recording_id))
    target = f"recording:{recording.id}"
    # Audit first, committed before anything is read: if this fails, nothing is read. The
    # request's own session, not a second connection (two per request exhaust the pool).
    try:
        seq = record_event(
            session,
            actor=officer.actor,
            action=Action.EVIDENCE_READ,
            target=target,
            purpose=purpose,
            detail={"format": format},
        ).seq
        session.commit()
    except Exception as exc:  # any failure to log is a refusal to read
        session.rollback()
        raise HTTPException(503, "the access log cannot be written, so evidence cannot be read") from exc
    try:
        data, frames = read_audio(session, services.store, services.keys, recording, format)
    except IntegrityError as exc:
        session.rollback()
        record_event(
            session,
            actor=officer.actor,
            action=Action.EVIDENCE_INTEGRITY,
            target=target,
            outcome="failed",
            detail={"error": str(exc), "read": seq},
        )
        session.commit()
        raise
    return Response(
        content=data,
        media_type=audio.media_type(format),
        headers={
            "Content-Disposition": f'attachment; filename="{recording.id}.{format}"',
            "X-Countersign-Access-Log": str(seq),
            "X-Countersign-Frames": str(frames),
        },
    )


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
    flag_incident(session, services.store, recording, body.category, officer.actor)  # live(): never RecordingGone
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
        action=Action.RECORDING_EXTEND,
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
            action=Action.RECORDING_DELETE,
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
            action=Action.RECORDING_DELETE,
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
