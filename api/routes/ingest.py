"""Device endpoints: open a recording, upload its segments, close it as interrupted."""

from __future__ import annotations

import functools
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Request, Response
from sqlalchemy.orm import Session
from starlette.background import BackgroundTask, BackgroundTasks
from starlette.concurrency import run_in_threadpool

from api.alerts.lifecycle import incident_alert, wake_worker
from api.core.deps import DeviceDep, ServicesDep, SessionDep
from api.core.models import Device
from api.core.responses import AUTHED, BODY, INPUT, answers
from api.ingest import (
    CheckedSegment,
    OverQuota,
    Quotas,
    SegmentUpload,
    check_segment,
    create_recording,
    own_recording,
    refuse_over_quota,
    write_segment,
)
from api.schemas import IncidentFlag, RecordingCreate
from evidence import wire
from evidence.errors import FormatError
from retention import lifecycle

# Full paths from evidence.wire (the recorder builds its URLs from the same constants).
router = APIRouter(tags=["ingest"])
NOT_OURS = {404: "No such recording for this device (another device's looks the same)."}
GONE = {410: "The recording has been deleted."}
# Per-device quotas (api.ingest.Quotas; COUNTERSIGN_MAX_OPEN_RECORDINGS, _DEVICE_BYTES_PER_DAY, _MAX_HEADER_BYTES).
OPEN_QUOTAS = {
    413: "The request body, or the recording header's signed JSON, is over the service's limit.",
    429: "The device holds as many open recordings as it may, or has sent its bytes for today (UTC; then"
    " Retry-After), or too many failed attempts came from this address.",
}
BYTE_QUOTA = {
    429: "The device has sent its bytes for today (UTC), or too many failed attempts came from this address;"
    " retry after Retry-After seconds."
}
REOPENED = {200: {"description": "Already open (a repeat of the same request).", "model": dict[str, str]}}
SEGMENT = {
    201: {"description": "Stored."},
    200: {"description": "Already stored, byte for byte (a repeat of the same upload)."},
    400: "A header has the wrong length, or the Content-Length is malformed.",
    409: "Out of order, not chained to the last segment, a different copy of a stored one, or the recording is closed.",
}


def _hex_header(name: str) -> Any:
    # Non-hex is a 422 from validation; a wrong length is a 400 from wire.UploadHeaders.parse.
    return Header(alias=name, pattern=r"^[0-9a-f]+$", max_length=128)


def _device(session: Session, principal_id: str) -> Device:
    device = session.get(Device, principal_id)
    if device is None:  # cannot happen after authentication, but never trust a dangling id
        raise HTTPException(403, "device unknown")
    return device


@router.post(
    wire.RECORDINGS,
    status_code=201,
    responses=answers(REOPENED, AUTHED, BODY, {409: "A different recording already has this id."}, OPEN_QUOTAS),
)
def open_recording(
    body: RecordingCreate, principal: DeviceDep, session: SessionDep, services: ServicesDep, response: Response
) -> dict[str, str]:
    quotas = Quotas.from_settings(services.settings)
    recording, created = create_recording(session, _device(session, principal.id), body, quotas)
    session.commit()
    if not created:
        response.status_code = 200
    return {"id": recording.id, "status": recording.status}


async def _read_limited(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"segment larger than {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"segment larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


@router.put(
    wire.SEGMENT,
    status_code=201,
    response_class=Response,
    responses=answers(AUTHED, BODY, NOT_OURS, GONE, SEGMENT, BYTE_QUOTA),
)
async def upload_segment(
    recording_id: uuid.UUID,
    index: int,
    request: Request,
    principal: DeviceDep,
    services: ServicesDep,
    x_segment_final: Annotated[str, Header(alias=wire.SEGMENT_FINAL, pattern=r"^[01]$")],
    x_plaintext_sha256: Annotated[str, _hex_header(wire.PLAINTEXT_SHA256)],
    x_prev_hash: Annotated[str, _hex_header(wire.PREV_HASH)],
    x_signature: Annotated[str, _hex_header(wire.SIGNATURE)],
) -> Response:
    if not 0 <= index < 2**31:
        raise HTTPException(422, "segment index out of range")
    body = await _read_limited(request, services.settings.max_segment_bytes)
    received = {
        wire.SEGMENT_FINAL: x_segment_final,
        wire.PLAINTEXT_SHA256: x_plaintext_sha256,
        wire.PREV_HASH: x_prev_hash,
        wire.SIGNATURE: x_signature,
    }
    try:
        fields = wire.UploadHeaders.parse(received)
    except FormatError as exc:
        raise HTTPException(400, exc.detail) from exc
    upload = SegmentUpload(
        index=index,
        final=fields.final,
        plaintext_sha256=fields.plaintext_sha256,
        prev_hash=fields.prev_hash,
        signature=fields.signature,
        body=body,
    )

    quotas = Quotas.from_settings(services.settings)

    # Reading, verifying and the object's fsync are blocking: one thread of the pool, with a read
    # session of its own (authentication closed its own before the body was read, so a slow body
    # holds none), and no write lock.
    def check() -> CheckedSegment | None:
        with services.sessions() as session:
            return check_segment(session, services.store, principal, recording_id, upload, quotas)

    checked = await run_in_threadpool(check)
    if checked is None:  # an idempotent repeat: nothing to write
        return Response(status_code=200)
    # The writes join whatever other uploads are committing now (api.core.group_commit); the
    # answer waits for that commit, so a 201 still means the segment and its audit entry are durable.
    try:
        committed = await services.writer().run(functools.partial(write_segment, checked=checked, quotas=quotas))
    except OverQuota as exc:
        used = exc.used

        def refuse() -> HTTPException:
            with services.sessions() as session:
                return refuse_over_quota(session, checked, used, quotas)

        raise await run_in_threadpool(refuse) from None
    # An audit checkpoint that fell due is signed after the answer has gone out (api.core.audit).
    deferred = committed.deferred
    background = BackgroundTasks([BackgroundTask(job) for job in deferred]) if deferred else None
    return Response(status_code=201, background=background)


@router.post(wire.INTERRUPT, responses=answers(AUTHED, INPUT, NOT_OURS))
def interrupt(recording_id: uuid.UUID, principal: DeviceDep, session: SessionDep) -> dict[str, str]:
    """The device says the recording was cut short (crash, power loss) and nothing more will come."""
    recording = own_recording(session, principal.id, recording_id)
    lifecycle.mark_interrupted(session, recording, principal.actor, "device reported the recording was cut short")
    session.commit()
    return {"id": recording.id, "status": recording.status}


@router.post(wire.INCIDENT, responses=answers(AUTHED, BODY, NOT_OURS, GONE))
def flag_incident(
    recording_id: uuid.UUID,
    body: IncidentFlag,
    principal: DeviceDep,
    session: SessionDep,
    services: ServicesDep,
    request: Request,
) -> dict[str, str]:
    """Staff flagged the interaction as an incident at the counter (and, if the site says so, called for help)."""
    recording = own_recording(session, principal.id, recording_id)
    try:
        lifecycle.flag_incident(session, services.store, recording, body.category, principal.actor)
    except lifecycle.RecordingGone as exc:
        raise HTTPException(410, "this recording has been deleted") from exc
    alerted = incident_alert(session, services.store, _device(session, principal.id), recording, body.category)
    session.commit()
    if alerted:
        wake_worker(request)
    return {"id": recording.id, "incident_category": body.category}
