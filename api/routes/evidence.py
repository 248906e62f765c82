"""Officer endpoints on /v1/evidence, within their sites: search, inspect, retrieve; then the
recording's life: flag it as an incident, extend it, read its tombstone.

Every read is logged, with its purpose for audio, and the log entry is
committed before any byte of audio is sent (fail closed). Deleting a recording
early takes two officers or a grace period: retention/routes/deletions.py.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.core.audit import record_committed, record_event
from api.core.deps import OfficerDep, Principal, ServicesDep, SessionDep, live, recording_in_scope
from api.core.keys import ZeroKnowledgeRefusal
from api.core.models import Device, Recording, iso, utcnow
from api.core.responses import AUTHED, BODY, INPUT, answers, json_refusals
from api.core.services import Services
from api.retrieval import audio_state, prepare_audio, segments_of
from api.schemas import AudioRequest, RecordingDetail, RecordingPublic, SegmentPublic
from api.search import Narrowing, evidence_search
from evidence import audio
from evidence.audit_actions import Action
from evidence.errors import EvidenceError, IntegrityError, NoAudio
from retention.decide import HoldFacts, covering_holds
from retention.lifecycle import flag_incident, shown_status
from retention.models import Tombstone
from retention.routes.deletions import tombstone_public
from retention.schemas import ExtendBody, FlagBody, RetentionChange, TombstonePublic
from retention.store import active_holds, facts_of, refresh_retention

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/evidence", tags=["evidence"])
GONE = answers({404: "No such recording (or not in your sites).", 410: "The recording was deleted; see its tombstone."})


def _duration(r: Recording) -> float | None:
    """The audio's length: segments received times the signed header's segment_seconds (the last
    segment may be shorter). Without segment_seconds, ended_at - started_at; the end is when the
    service received the last segment, so a spooled upload makes that longer than the audio."""
    seconds = r.header.get("segment_seconds")
    if isinstance(seconds, int | float) and not isinstance(seconds, bool):
        return float(r.segment_count * seconds)
    if r.segment_count == 0:
        return 0.0  # an objection record (no audio parameters at all), or nothing captured
    if r.ended_at is not None:
        return max(0.0, (r.ended_at - r.started_at).total_seconds())
    return None


def _staff_code(r: Recording) -> str | None:
    code = r.header.get("consent", {}).get("staff_code")
    return code if isinstance(code, str) else None


def _public(
    r: Recording, stale_after: int, holds: Sequence[HoldFacts] = (), device_name: str | None = None
) -> RecordingPublic:
    return RecordingPublic(
        id=r.id,
        device_id=r.device_id,
        device_name=device_name,
        site=r.site_id,
        started_at=r.started_at,
        status=shown_status(r, stale_after),  # a lost device's upload shows as interrupted; the job records it
        consent_outcome=r.consent_outcome,
        audio=audio_state(r),  # an objection record, or nothing captured, is shown as that: not a failure
        consent=r.header.get("consent", {}),
        incident_category=r.incident_category,
        segment_count=r.segment_count,
        sample_rate=r.header.get("sample_rate"),
        ended_at=r.ended_at,
        duration_seconds=_duration(r),
        staff_code=_staff_code(r),
        retain_until=r.retain_until,
        retain_reason=r.retain_reason,
        held_by=sorted({h.case_ref for h in covering_holds(facts_of(r), holds)}),
    )


@router.get("", response_model=list[RecordingPublic], responses=answers(AUTHED, INPUT))
def list_evidence(
    officer: OfficerDep,
    session: SessionDep,
    services: ServicesDep,
    site: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    incident: bool | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    id_prefix: Annotated[
        str | None,
        Query(
            pattern=r"^[0-9a-f][0-9a-f-]{3,35}$",
            description="Only recordings whose id starts with this (at least 4 characters, lowercase hex): "
            "how a short id is resolved, within your sites like every other search.",
        ),
    ] = None,
) -> list[RecordingPublic]:
    return search_evidence(officer, session, services, site, since, until, incident, limit, id_prefix)


def search_evidence(
    officer: Principal,
    session: Session,
    services: Services,
    site: str | None,
    since: datetime | None,
    until: datetime | None,
    incident: bool | None,
    limit: int,
    id_prefix: str | None = None,
    narrowing: Narrowing | None = None,
) -> list[RecordingPublic]:
    """GET /v1/evidence's search, and the console's with its further filters (`narrowing`, in the
    same SQL statement): scoped to the officer's sites, logged, newest first, at most `limit`."""
    if (since is not None and since.tzinfo is None) or (until is not None and until.tzinfo is None):
        raise HTTPException(422, "since and until need a time zone, e.g. 2024-05-01T00:00:00+09:00")
    sites = officer.sites if site is None else officer.sites & {site}
    holds = active_holds(session)  # before the query: the held filter is about these very holds
    rows = list(session.execute(evidence_search(sites, since, until, incident, limit, id_prefix, narrowing, holds)))
    detail: dict[str, object] = {"site": site, "results": len(rows)}
    if id_prefix is not None:
        detail["id_prefix"] = id_prefix
    if narrowing is not None:  # which filters, never their values (note words could echo a note's text)
        detail["narrowed_by"] = narrowing.used()
    record_event(session, actor=officer.actor, action=Action.EVIDENCE_LIST, detail=detail)
    session.commit()
    return [_public(r, services.settings.interrupted_after_seconds, holds, name) for r, name in rows]


@router.get("/{recording_id}", response_model=RecordingDetail, responses=answers(AUTHED, INPUT, GONE))
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
        **_public(
            recording,
            services.settings.interrupted_after_seconds,
            active_holds(session),
            session.scalar(select(Device.name).where(Device.id == recording.device_id)),
        ).model_dump(),
        segments=segments,
    )


class ReleaseAborted(Exception):
    """A streamed read failed a check after its first byte: the server must cut the response off."""


def released(
    chunks: Iterator[bytes], services: Services, actor: str, target: str, seq: int, via: str | None = None
) -> Iterator[bytes]:
    """The stream, audited if a segment fails its checks after the response started.

    The request's session is closed by then: the failure is written in a session of its own.
    Raising makes the server abort the response (uvicorn closes the connection without the
    last chunk, or short of Content-Length), which every HTTP client reports as incomplete.
    """
    try:
        yield from chunks
    except EvidenceError as exc:
        try:
            with services.sessions() as session:
                record_event(
                    session,
                    actor=actor,
                    action=Action.EVIDENCE_INTEGRITY,
                    target=target,
                    outcome="failed",
                    detail={"error": str(exc), "read": seq, "streamed": True, **({"via": via} if via else {})},
                )
                session.commit()
        except Exception:
            log.exception("the integrity failure of read %s could not be logged", seq)
        # Not the EvidenceError itself: its handler would try to answer 409 on a started response.
        raise ReleaseAborted(f"read {seq} aborted mid-stream: {exc}") from exc


@router.post(
    "/{recording_id}/audio",
    response_class=StreamingResponse,
    responses=answers(
        {
            200: {
                "description": "The verified audio, streamed. Everything checkable before decryption was checked "
                "before the first byte; a segment failing its decryption or plaintext check later ends the "
                "response incomplete (short of Content-Length for WAV, without the last chunk for FLAC).",
                "content": {"audio/flac": {}, "audio/wav": {}},
            }
        },
        json_refusals(
            answers(
                AUTHED,
                BODY,
                GONE,
                {
                    400: "The evidence is malformed, or the body is not JSON.",
                    409: "Integrity check failed: nothing is released. Or (a detail starting 'No audio to "
                    "release') the recording verified but holds no audio: an objection record, or consent "
                    "given and nothing captured; that is what it is, not an integrity failure. Or the service "
                    "is in zero-knowledge mode and cannot decrypt: read with POST .../sealed and the offline key.",
                    503: "The access log cannot be written, or no evidence key can open it: nothing is read.",
                },
            )
        ),
    ),
)
def get_audio(
    recording_id: uuid.UUID,
    body: AudioRequest,
    request: Request,
    officer: OfficerDep,
    session: SessionDep,
    services: ServicesDep,
) -> StreamingResponse:
    """Read a recording's audio, verified, for a stated purpose (logged before the first byte).

    A POST with the purpose in the body: a purpose in a URL would end up in proxy and server logs.
    """
    purpose, format = body.purpose, body.format
    recording = live(recording_in_scope(request, services, session, officer, recording_id))
    if services.keys.zero_knowledge:  # nothing to read here: refused before the log, since nothing is read
        raise HTTPException(409, str(ZeroKnowledgeRefusal()))
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
    shown = shown_status(recording, services.settings.interrupted_after_seconds)
    try:
        verified = prepare_audio(session, services.store, services.keys, recording, format, shown)
    except NoAudio as exc:
        # Every check passed and there is nothing to play: logged as that, never as a failed check.
        session.rollback()
        record_event(
            session,
            actor=officer.actor,
            action=Action.EVIDENCE_NO_AUDIO,
            target=target,
            detail={"reason": exc.detail, "status": shown, "read": seq},
        )
        session.commit()
        raise
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
    # The stream needs nothing from the database: give the connection back now rather than when
    # the dependency closes the session, after the last byte (FastAPI's yield dependencies end then).
    session.close()
    headers = {
        "Content-Disposition": f'attachment; filename="{recording_id}.{format}"',
        "X-Countersign-Access-Log": str(seq),
        "X-Countersign-Frames": str(verified.frames),
    }
    if verified.length is not None:
        headers["Content-Length"] = str(verified.length)
    return StreamingResponse(
        released(verified.chunks(), services, officer.actor, target, seq),
        media_type=audio.media_type(format),
        headers=headers,
    )


MAX_EXTENSION = timedelta(days=36500)


def _change(recording: Recording) -> RetentionChange:
    return RetentionChange(
        id=recording.id,
        incident_category=recording.incident_category,
        retain_until=recording.retain_until,
        retain_reason=recording.retain_reason,
        retain_extended_until=recording.retain_extended_until,
    )


@router.post("/{recording_id}/flag", response_model=RetentionChange, responses=answers(AUTHED, BODY, GONE))
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


@router.post(
    "/{recording_id}/extend",
    response_model=RetentionChange,
    responses=answers(AUTHED, BODY, GONE, {409: "Already extended further: an extension is never shortened."}),
)
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
        detail={"until": body.until.isoformat(), "previous": iso(current), "retain_until": [iso(old), iso(new)]},
    )
    session.commit()
    return _change(recording)


@router.get(
    "/{recording_id}/tombstone",
    response_model=TombstonePublic,
    responses=answers(AUTHED, INPUT, {404: "No such recording, or it has not been deleted."}),
)
def tombstone(
    recording_id: uuid.UUID, request: Request, officer: OfficerDep, session: SessionDep, services: ServicesDep
) -> TombstonePublic:
    """What remains of a deleted recording: times, hashes, why, and the signed deletion record."""
    recording = recording_in_scope(request, services, session, officer, recording_id)
    tomb = session.get(Tombstone, recording.id)
    if tomb is None:
        raise HTTPException(404, "this recording has not been deleted")
    return tombstone_public(services, tomb)
