"""Officer endpoints: search, inspect and retrieve evidence, within their sites.

Every read is logged, with its purpose for audio, and the log entry is
committed before any byte of audio is sent (fail closed).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, Request, Response

from api.audit import record_committed, record_event
from api.deps import OfficerDep, ServicesDep, SessionDep, live, recording_in_scope
from api.ingest import expire_stale
from api.models import Recording
from api.retrieval import read_audio, segments_of
from api.schemas import RecordingDetail, RecordingPublic, SegmentPublic
from api.search import evidence_search
from evidence import audio
from evidence.errors import IntegrityError
from retention.decide import HoldFacts, covering_holds
from retention.store import active_holds, facts_of

router = APIRouter(prefix="/v1/evidence", tags=["evidence"])

Purpose = Annotated[str, Query(min_length=10, max_length=500, description="Why you need this evidence (logged).")]


def _public(r: Recording, holds: Sequence[HoldFacts] = ()) -> RecordingPublic:
    return RecordingPublic(
        id=r.id,
        device_id=r.device_id,
        site=r.site_id,
        started_at=r.started_at,
        status=r.status,
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
    if expire_stale(session, services.settings.interrupted_after_seconds):
        session.commit()
    sites = officer.sites if site is None else officer.sites & {site}
    rows = list(session.scalars(evidence_search(sites, since, until, incident, limit)))
    record_event(session, actor=officer.actor, action="api:evidence:list", detail={"site": site, "results": len(rows)})
    session.commit()
    holds = active_holds(session)
    return [_public(r, holds) for r in rows]


@router.get("/{recording_id}", response_model=RecordingDetail)
def show_evidence(
    recording_id: uuid.UUID, request: Request, officer: OfficerDep, session: SessionDep, services: ServicesDep
) -> RecordingDetail:
    if expire_stale(session, services.settings.interrupted_after_seconds):
        session.commit()
    recording = live(recording_in_scope(request, services, session, officer, recording_id))
    record_committed(
        services.sessions, actor=officer.actor, action="api:evidence:show", target=f"recording:{recording.id}"
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
    return RecordingDetail(**_public(recording, active_holds(session)).model_dump(), segments=segments)


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
            action="api:evidence:read",
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
            action="api:evidence:integrity",
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
