"""Device endpoints: open a recording, upload its segments, close it as interrupted."""

from __future__ import annotations

import functools
import re
import uuid
from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from sqlalchemy.orm import Session
from starlette.background import BackgroundTask, BackgroundTasks
from starlette.concurrency import run_in_threadpool

from api.alerts.lifecycle import incident_alert, wake_worker
from api.core.deps import DeviceDep, ServicesDep, SessionDep, authenticate_sync
from api.core.models import Device
from api.core.responses import AUTHED, BODY, INPUT, answers
from api.core.services import Services
from api.ingest import (
    CheckedRecording,
    CheckedSegment,
    OpenQuotaFull,
    OverQuota,
    Quotas,
    SegmentUpload,
    check_recording,
    check_segment,
    own_recording,
    refuse_over_quota,
    refuse_recording,
    write_recording,
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
async def open_recording(
    body: RecordingCreate, principal: DeviceDep, services: ServicesDep, response: Response, tasks: BackgroundTasks
) -> dict[str, str]:
    quotas = Quotas.from_settings(services.settings)

    # As a segment's upload: the checks (parsing, the header's signature, the reads) in a thread
    # with a read session, then the writes as one job of the uploads' group commit. Devices open
    # their next recording as one ends, and 500 doing so together, each with a commit of its own,
    # held the uploads behind them for seconds (README, the soak).
    def check() -> CheckedRecording | tuple[str, str]:
        with services.sessions() as session:
            checked = check_recording(session, _device(session, principal.id), body, quotas)
            return checked if isinstance(checked, CheckedRecording) else (checked.id, checked.status)

    checked = await services.offload(check)
    if not isinstance(checked, CheckedRecording):  # a repeat of the same request: already open
        response.status_code = 200
        return {"id": checked[0], "status": checked[1]}

    def write(session: Session) -> tuple[str, str, bool]:
        recording, created = write_recording(session, checked, quotas)
        return recording.id, recording.status, created

    try:
        committed = await services.writer().run(write)
    except (OverQuota, OpenQuotaFull) as exc:
        refused = exc

        def refuse() -> HTTPException:
            with services.sessions() as session:
                return refuse_recording(session, checked, refused, quotas)

        raise await services.offload(refuse) from None
    for job in committed.deferred:  # an audit checkpoint that fell due: after the answer
        tasks.add_task(job)
    recording_id, status, created = committed.value
    if not created:
        response.status_code = 200
    return {"id": recording_id, "status": status}


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


# The upload's inputs, checked by the route itself (see upload_segment) and documented as FastAPI
# would document them: the same rules, the same 422s.
_HEX = r"^[0-9a-f]+$"
_INDEX = re.compile(r"[+-]?[0-9]{1,4000}")  # an int path parameter; its range is checked after
_HEADER_RULES: dict[str, tuple[re.Pattern[str], int | None]] = {
    wire.SEGMENT_FINAL: (re.compile(r"^[01]$"), None),
    wire.PLAINTEXT_SHA256: (re.compile(_HEX), 128),  # a wrong length is a 400 from wire.UploadHeaders.parse
    wire.PREV_HASH: (re.compile(_HEX), 128),
    wire.SIGNATURE: (re.compile(_HEX), 128),
}


def _parameter(name: str, where: str, schema: dict[str, Any], title: str | None = None) -> dict[str, Any]:
    return {"name": name, "in": where, "required": True, "schema": {**schema, "title": title or name}}


_UPLOAD_PARAMETERS = [
    _parameter("recording_id", "path", {"type": "string", "format": "uuid"}, "Recording Id"),
    _parameter("index", "path", {"type": "integer"}, "Index"),
] + [
    _parameter(name, "header", {"type": "string", "pattern": rule.pattern} | ({"maxLength": n} if n else {}))
    for name, (rule, n) in _HEADER_RULES.items()
]


def _invalid(where: str, name: str, kind: str, message: str, value: str | None, **context: Any) -> dict[str, Any]:
    """One error as pydantic (and so FastAPI's other routes) reports it."""
    error: dict[str, Any] = {"type": kind, "loc": (where, name), "msg": message, "input": value}
    return error | ({"ctx": context} if context else {})


def _upload_inputs(request: Request) -> tuple[uuid.UUID, int, dict[str, str]]:
    """The path's recording id and index and the four segment headers, or a 422 naming each bad one."""
    errors, path = [], request.path_params
    recording_id, index = None, None
    try:
        recording_id = uuid.UUID(path["recording_id"])
    except ValueError:
        errors.append(
            _invalid("path", "recording_id", "uuid_parsing", "Input should be a valid UUID", path["recording_id"])
        )
    raw_index = path["index"]
    if _INDEX.fullmatch(raw_index):  # bounded: int() refuses (ValueError) past 4,300 digits
        index = int(raw_index)
    else:
        message = "Input should be a valid integer, unable to parse string as an integer"
        errors.append(_invalid("path", "index", "int_parsing", message, raw_index))
    received = {}
    for name, (rule, longest) in _HEADER_RULES.items():
        value = request.headers.get(name)
        if value is None:
            errors.append(_invalid("header", name, "missing", "Field required", None))
        elif longest is not None and len(value) > longest:
            message = f"String should have at most {longest} characters"
            errors.append(_invalid("header", name, "string_too_long", message, value, max_length=longest))
        elif rule.fullmatch(value) is None:
            message = f"String should match pattern '{rule.pattern}'"
            errors.append(_invalid("header", name, "string_pattern_mismatch", message, value, pattern=rule.pattern))
        else:
            received[name] = value
    if errors or recording_id is None or index is None:
        raise RequestValidationError(errors)
    return recording_id, index, received


@router.put(
    wire.SEGMENT,
    status_code=201,
    response_class=Response,
    responses=answers(AUTHED, BODY, NOT_OURS, GONE, SEGMENT, BYTE_QUOTA),
    openapi_extra={"parameters": _UPLOAD_PARAMETERS},
)
async def upload_segment(request: Request) -> Response:
    # The hot path of every device: its inputs are read here rather than through FastAPI's
    # dependency solving (a tenth of the server's CPU per upload in the profile, README), and its
    # blocking steps are two hand-offs to the service's upload threads, then one group commit.
    # Authentication still comes first, before the path, the headers or the body are looked at.
    services: Services = request.app.state.services
    principal = await services.offload(authenticate_sync, request, services, ("device",))
    recording_id, index, received = _upload_inputs(request)
    if not 0 <= index < 2**31:
        raise HTTPException(422, "segment index out of range")
    body = await _read_limited(request, services.settings.max_segment_bytes)
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

    # Reading, verifying and the object's fsync are blocking: one upload thread, with a read
    # session of its own (authentication closed its own before the body was read, so a slow body
    # holds none), and no write lock.
    def check() -> CheckedSegment | None:
        with services.sessions() as session:
            return check_segment(session, services.store, principal, recording_id, upload, quotas)

    checked = await services.offload(check)
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
