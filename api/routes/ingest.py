"""Device endpoints: open a recording, upload its segments, close it as interrupted."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Request, Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from api.core.models import Device
from api.deps import DeviceDep, ServicesDep, SessionDep
from api.ingest import SegmentUpload, add_segment, create_recording, own_recording
from api.schemas import IncidentFlag, RecordingCreate
from retention import lifecycle

router = APIRouter(prefix="/v1/recordings", tags=["ingest"])

HexHeader = Annotated[str, Header(pattern=r"^[0-9a-f]+$", max_length=128)]


def _device(session: Session, principal_id: str) -> Device:
    device = session.get(Device, principal_id)
    if device is None:  # cannot happen after authentication, but never trust a dangling id
        raise HTTPException(403, "device unknown")
    return device


@router.post("", status_code=201)
def open_recording(
    body: RecordingCreate, principal: DeviceDep, session: SessionDep, response: Response
) -> dict[str, str]:
    recording, created = create_recording(session, _device(session, principal.id), body)
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


def _hex(value: str, length: int, name: str) -> bytes:
    if len(value) != 2 * length:
        raise HTTPException(400, f"{name} must be {length} bytes of hex")
    return bytes.fromhex(value)


@router.put("/{recording_id}/segments/{index}")
async def upload_segment(
    recording_id: uuid.UUID,
    index: int,
    request: Request,
    principal: DeviceDep,
    services: ServicesDep,
    session: SessionDep,
    x_segment_final: Annotated[str, Header(pattern=r"^[01]$")],
    x_plaintext_sha256: HexHeader,
    x_prev_hash: HexHeader,
    x_signature: HexHeader,
) -> Response:
    if not 0 <= index < 2**31:
        raise HTTPException(422, "segment index out of range")
    body = await _read_limited(request, services.settings.max_segment_bytes)
    upload = SegmentUpload(
        index=index,
        final=x_segment_final == "1",
        plaintext_sha256=_hex(x_plaintext_sha256, 32, "X-Plaintext-Sha256"),
        prev_hash=_hex(x_prev_hash, 32, "X-Prev-Hash"),
        signature=_hex(x_signature, 64, "X-Signature"),
        body=body,
    )

    # The database and the fsync are blocking: keep them off the event loop. Reuse the
    # request's session (authentication already holds its connection): a second one per
    # upload exhausted the pool at ~15 concurrent uploads (deadlock, then 500s).
    def store() -> bool:
        created = add_segment(session, services.store, _device(session, principal.id), recording_id, upload)
        session.commit()
        return created

    created = await run_in_threadpool(store)
    return Response(status_code=201 if created else 200)


@router.post("/{recording_id}/interrupt")
def interrupt(recording_id: uuid.UUID, principal: DeviceDep, session: SessionDep) -> dict[str, str]:
    """The device says the recording was cut short (crash, power loss) and nothing more will come."""
    recording = own_recording(session, principal.id, recording_id)
    lifecycle.mark_interrupted(session, recording, principal.actor, "device reported the recording was cut short")
    session.commit()
    return {"id": recording.id, "status": recording.status}


@router.post("/{recording_id}/incident")
def flag_incident(
    recording_id: uuid.UUID, body: IncidentFlag, principal: DeviceDep, session: SessionDep, services: ServicesDep
) -> dict[str, str]:
    """Staff flagged the interaction as an incident at the counter."""
    recording = own_recording(session, principal.id, recording_id)
    try:
        lifecycle.flag_incident(session, services.store, recording, body.category, principal.actor)
    except lifecycle.RecordingGone as exc:
        raise HTTPException(410, "this recording has been deleted") from exc
    session.commit()
    return {"id": recording.id, "incident_category": body.category}
