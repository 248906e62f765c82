"""POST /v1/evidence/{id}/export: an evidence bundle for the police, a lawyer or a court.

An export is a read like any other: officers of the recording's site only, a
purpose and a case reference, audited and committed before anything is read
(fail closed). The service then signs a tree head that covers that entry, so
the bundle proves its own export, verifies everything as a read does, and
answers with the bundle encrypted to the recipient's key (docs/evidence-bundle.md).
A second entry records which bundle left: the SHA-256 of its signed SHA256SUMS.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from api.bundle.export import ExportRequest, build, gather
from api.bundle.report import render_report
from api.bundle.timestamp import TimestampError, fetch_timestamp
from api.core.audit import checkpoint_now, record_event
from api.core.deps import OfficerDep, ServicesDep, SessionDep, live, recording_in_scope
from api.core.fields import CaseRef, DisplayName, PurposeText
from api.core.responses import AUTHED, BODY, answers, json_refusals
from evidence.audit_actions import Action
from evidence.errors import IntegrityError

router = APIRouter(prefix="/v1/evidence", tags=["evidence"])
Hex32 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$", description="32 bytes, lowercase hex.")]
CHUNK = 1 << 20


class PassphraseKdf(BaseModel):
    """How the officer's client turned a passphrase into the recipient key (copied into the bundle)."""

    alg: Literal["argon2id13"] = "argon2id13"  # evidence.bundle.crypto.KDF_ALG
    salt: Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]
    opslimit: Annotated[int, Field(ge=1, le=2**32)]
    memlimit: Annotated[int, Field(ge=8192, le=2**40)]


class ExportBody(BaseModel):
    """What an officer sends to export a recording."""

    purpose: PurposeText = Field(description="Why the evidence leaves (at least 10 visible characters; logged).")
    case_ref: CaseRef = Field(description="The case the bundle is for (logged, printed in the bundle).")
    recipient: DisplayName | None = Field(None, description="Who receives it, e.g. a police station (logged).")
    recipient_public_key: Hex32 = Field(
        description="X25519 public key the bundle is encrypted to: the recipient's, or one derived from a passphrase."
    )
    kdf: PassphraseKdf | None = Field(None, description="Set when recipient_public_key stands for a passphrase.")


EXPORTED = {
    200: {"description": "The evidence bundle (a zip, encrypted to the recipient).", "content": {"application/zip": {}}}
}
ZK_EXPORT = (
    "this service cannot decrypt (zero-knowledge mode), so it cannot build an evidence bundle; "
    "read the recording with 'countersign evidence get ID --key OFFLINE_KEY_FILE' instead"
)
REFUSED = {
    404: "No such recording (or not in your sites).",
    409: "Integrity check failed: nothing is released. Or the service is in zero-knowledge mode (no bundles).",
    410: "The recording was deleted; see its tombstone.",
    503: "The access log cannot be written, no evidence key can open it, or the time-stamping authority failed.",
}


@router.post(
    "/{recording_id}/export",
    response_class=StreamingResponse,
    responses=answers(EXPORTED, json_refusals(answers(AUTHED, BODY, REFUSED))),
)
def export_bundle(
    recording_id: uuid.UUID,
    body: ExportBody,
    request: Request,
    officer: OfficerDep,
    session: SessionDep,
    services: ServicesDep,
) -> StreamingResponse:
    """Export a recording as a verifiable evidence bundle (audited before anything is read)."""
    recording = live(recording_in_scope(request, services, session, officer, recording_id))
    if services.keys.zero_knowledge:
        # A bundle holds the decrypted segment FLACs, which this service cannot make (README
        # "Zero-knowledge mode"): refused before the log, since nothing is read.
        raise HTTPException(409, ZK_EXPORT)
    target = f"recording:{recording.id}"
    wanted = ExportRequest(
        case_ref=body.case_ref,
        purpose=body.purpose,
        recipient=body.recipient,
        recipient_key=bytes.fromhex(body.recipient_public_key),
        kdf=body.kdf.model_dump() if body.kdf is not None else None,
    )
    try:
        seq = record_event(
            session,
            actor=officer.actor,
            action=Action.EVIDENCE_EXPORT,
            target=target,
            purpose=body.purpose,
            detail={
                "case_ref": body.case_ref,
                "recipient": body.recipient,
                "recipient_key": body.recipient_public_key,
                "passphrase": body.kdf is not None,
            },
        ).seq
        session.commit()
        checkpoint_now(session)  # a tree head that covers the export entry itself
        session.commit()
    except Exception as exc:  # any failure to log is a refusal to read
        session.rollback()
        raise HTTPException(503, "the access log cannot be written, so evidence cannot be exported") from exc
    tsa = services.settings.tsa_url
    try:
        inputs = gather(session, services, recording, officer.actor, wanted, seq)
        exported = build(
            inputs,
            services,
            wanted,
            report=render_report,
            timestamp=(lambda digest: fetch_timestamp(tsa, digest)) if tsa else None,
        )
    except (IntegrityError, TimestampError) as exc:
        session.rollback()
        record_event(
            session,
            actor=officer.actor,
            action=Action.EVIDENCE_INTEGRITY if isinstance(exc, IntegrityError) else Action.EVIDENCE_EXPORT,
            target=target,
            outcome="failed",
            detail={"error": str(exc), "export": seq},
        )
        session.commit()
        if isinstance(exc, TimestampError):
            raise HTTPException(503, f"the time-stamping authority failed, so no bundle was made: {exc}") from exc
        raise
    record_event(
        session,
        actor=officer.actor,
        action=Action.EVIDENCE_EXPORTED,
        target=target,
        detail={
            "export": seq,
            "sha256sums": exported.sums_sha256,
            "bytes": exported.size,
            "complete": exported.complete,
        },
    )
    session.commit()

    def chunks() -> Iterator[bytes]:
        with exported.file as f:
            while piece := f.read(CHUNK):
                yield piece

    return StreamingResponse(
        chunks(),
        media_type="application/zip",
        headers={
            "Content-Disposition": f'attachment; filename="evidence-{recording.id}.zip"',
            "Content-Length": str(exported.size),
            "X-Countersign-Access-Log": str(seq),
            "X-Countersign-Bundle-Sha256sums": exported.sums_sha256,
        },
    )
