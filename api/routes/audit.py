"""The audit log: auditors read and export it; anyone may fetch the signed checkpoints.

Checkpoints and the service public key are public on purpose: publishing them
is what lets outsiders notice if the log is ever rewritten.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy import select

from api.core.audit import checkpoint_now, entry_fields, record_committed, record_event
from api.core.deps import AuditorDep, Principal, ServicesDep, SessionDep, recording_in_scope, require
from api.core.models import AccessLog, AuditCheckpoint, AuditHead
from api.core.responses import AUTHED, INPUT, NDJSONResponse, answers, json_refusals
from api.schemas import AccessLogPublic, CheckpointPublic
from evidence.audit_actions import Action
from evidence.audit_log import EXPORT_FORMAT, GENESIS, timestamp

router = APIRouter(prefix="/v1/audit", tags=["audit"])
MAX_SEQ = 2**62  # sequence numbers fit a signed 64-bit column on every backend
AfterSeq = Annotated[int, Query(ge=0, le=MAX_SEQ, description="Only entries after this sequence number.")]
CustodyReader = Annotated[Principal, Depends(require("officer", "auditor"))]
EXPORTED = {200: {"description": "The log as JSON Lines: a header, the entries, the checkpoints."}}
NO_RECORDING = {404: "No such recording (one outside an officer's sites looks the same)."}


@router.get("", response_model=list[AccessLogPublic], responses=answers(AUTHED, INPUT))
def read_log(
    auditor: AuditorDep,
    session: SessionDep,
    services: ServicesDep,
    after: AfterSeq = 0,
    limit: Annotated[int, Query(ge=1, le=10000)] = 1000,
    target: str | None = None,
) -> list[AccessLogPublic]:
    query = select(AccessLog).where(AccessLog.seq > after)
    if target is not None:
        query = query.where(AccessLog.target == target)
    rows = session.scalars(query.order_by(AccessLog.seq).limit(limit))
    result = [AccessLogPublic.model_validate(r, from_attributes=True) for r in rows]
    record_committed(
        services.sessions, actor=auditor.actor, action=Action.AUDIT_READ, detail={"after": after, "rows": len(result)}
    )
    return result


def _checkpoint_public(c: AuditCheckpoint) -> CheckpointPublic:
    return CheckpointPublic(seq=c.seq, chain_hash=c.chain_hash.hex(), at=timestamp(c.at), signature=c.signature.hex())


@router.get("/checkpoints", response_model=list[CheckpointPublic], responses=INPUT)
def checkpoints(
    session: SessionDep, after: AfterSeq = 0, limit: Annotated[int, Query(ge=1, le=10000)] = 1000
) -> list[CheckpointPublic]:
    """Signed checkpoints (public): sequence number, chain head, time, Ed25519 signature."""
    rows = session.scalars(
        select(AuditCheckpoint).where(AuditCheckpoint.seq > after).order_by(AuditCheckpoint.seq).limit(limit)
    )
    return [_checkpoint_public(c) for c in rows]


@router.get("/public-key")
def public_key(services: ServicesDep) -> dict[str, str]:
    """The service's Ed25519 public key, which signs checkpoints (public)."""
    assert services.keys.signing_key is not None
    return {"algorithm": "ed25519", "public_key": bytes(services.keys.signing_key.verify_key).hex()}


def _entry_line(e: AccessLog) -> str:
    record = {"type": "entry", **entry_fields(e), "entry_hash": e.entry_hash.hex(), "chain_hash": e.chain_hash.hex()}
    # ASCII only: U+2028, U+0085 and friends travel as \u escapes, so no reader splits a line on them.
    return json.dumps(record, ensure_ascii=True) + "\n"


@router.get(
    "/export", response_class=NDJSONResponse, responses=answers(EXPORTED, json_refusals(answers(AUTHED, INPUT)))
)
def export(
    auditor: AuditorDep,
    services: ServicesDep,
    after: AfterSeq = 0,
    until: Annotated[
        int | None, Query(ge=1, le=MAX_SEQ, description="Up to here (extended to the next checkpoint).")
    ] = None,
) -> StreamingResponse:
    """The log (or a range) as JSON Lines, with the checkpoints that cover it; the service signs one now.

    A full export (no `until`) carries every entry up to the current head and
    every checkpoint, so entries the service did not write itself (never signed)
    and entries removed after signing both show up in `audit verify`.
    """
    with services.sessions() as session, session.begin():
        record_event(session, actor=auditor.actor, action=Action.AUDIT_EXPORT, detail={"after": after, "until": until})
        checkpoint_now(session)
        end = session.scalar(select(AuditHead.seq).where(AuditHead.id == 1)) or 0
    complete = until is None or until >= end
    if not complete:
        covering = select(AuditCheckpoint.seq).where(AuditCheckpoint.seq >= until).order_by(AuditCheckpoint.seq)
        with services.sessions() as session:
            end = session.scalar(covering.limit(1)) or end
    assert services.keys.signing_key is not None
    service_key = bytes(services.keys.signing_key.verify_key).hex()

    def lines() -> Iterator[str]:
        with services.sessions() as session:
            prev = session.scalar(select(AccessLog.chain_hash).where(AccessLog.seq == after)) if after else GENESIS
            header = {
                "type": "header",
                "format": EXPORT_FORMAT,
                "service_public_key": service_key,
                "first_seq": after + 1,
                "prev_chain_hash": (prev or GENESIS).hex(),
                "complete": complete,
            }
            yield json.dumps(header) + "\n"
            entries = select(AccessLog).where(AccessLog.seq > after, AccessLog.seq <= end).order_by(AccessLog.seq)
            for entry in session.execute(entries.execution_options(yield_per=2000)).scalars():
                yield _entry_line(entry)
            cps = select(AuditCheckpoint).where(AuditCheckpoint.seq > after)
            if not complete:
                cps = cps.where(AuditCheckpoint.seq <= end)
            for cp in session.scalars(cps.order_by(AuditCheckpoint.seq)):
                yield json.dumps({"type": "checkpoint", **_checkpoint_public(cp).model_dump()}) + "\n"

    return StreamingResponse(lines(), media_type="application/x-ndjson")


@router.get(
    "/custody/{recording_id}", response_model=list[AccessLogPublic], responses=answers(AUTHED, INPUT, NO_RECORDING)
)
def custody(
    recording_id: uuid.UUID, request: Request, reader: CustodyReader, session: SessionDep, services: ServicesDep
) -> list[AccessLogPublic]:
    """Every event about one recording, oldest first (officers of its site, auditors)."""
    recording = recording_in_scope(request, services, session, reader, recording_id)
    target = f"recording:{recording.id}"
    rows = session.scalars(select(AccessLog).where(AccessLog.target == target).order_by(AccessLog.seq))
    result = [AccessLogPublic.model_validate(r, from_attributes=True) for r in rows]
    record_committed(services.sessions, actor=reader.actor, action=Action.EVIDENCE_CUSTODY, target=target)
    return result
