"""POST /v1/evidence/{id}/export: an evidence bundle for the police, a lawyer or a court.

An export is a read like any other: officers of the recording's site only, a
purpose and a case reference, audited and committed before anything is read
(fail closed). The service then signs a tree head that covers that entry, so
the bundle proves its own export, verifies everything as a read does, and
answers with the bundle encrypted to the recipient's key (docs/evidence-bundle.md).
A second entry records which bundle left: the SHA-256 of its signed SHA256SUMS.

POST /v1/evidence/{id}/export/sealed is the same export for a service that cannot
decrypt (zero-knowledge mode): the signed bundle without its segment audio, which
SHA256SUMS lists by the hashes the device signed, and the sealed read document the
officer's client decrypts that audio from (`countersign evidence export --key FILE`).
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from api.bundle.export import ExportRequest, build, gather, gather_for_client, members_for_client
from api.bundle.report import render_report
from api.bundle.timestamp import TimestampError, fetch_timestamp
from api.core.audit import checkpoint_now, record_event
from api.core.deps import OfficerDep, ServicesDep, SessionDep, live, recording_in_scope
from api.core.fields import CaseRef, DisplayName, PurposeText
from api.core.models import Recording
from api.core.responses import AUTHED, BODY, answers, json_refusals
from api.core.services import Services
from api.routes.sealed import SealedDocument
from api.sealed_read import NotSealedOffline
from evidence.audit_actions import Action
from evidence.errors import IntegrityError
from retention.lifecycle import shown_status

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
    "this service cannot decrypt (zero-knowledge mode), so the bundle is finished on your machine: "
    "'countersign evidence export ID --key OFFLINE_KEY_FILE ...' (POST /v1/evidence/{id}/export/sealed)"
)
REFUSED = {
    404: "No such recording (or not in your sites).",
    409: "Integrity check failed: nothing is released. Or the service is in zero-knowledge mode (use /export/sealed).",
    410: "The recording was deleted; see its tombstone.",
    503: "The access log cannot be written, no evidence key can open it, or the time-stamping authority failed.",
}


class SealedExport(BaseModel):
    """An evidence bundle for the officer's client to finish: decrypt the segment audio from `sealed`,
    add it under the names SHA256SUMS lists, zip and encrypt to the recipient (evidence.bundle.completion)."""

    kind: Literal["countersign-sealed-export"] = "countersign-sealed-export"
    version: Literal[1] = 1
    access_log: int = Field(description="The export's access-log entry (written before anything was read).")
    sha256sums: str = Field(description="SHA-256 of the bundle's signed SHA256SUMS (in the audit log).")
    members: dict[str, str] = Field(description="The inner bundle's files but the segment FLACs: path -> base64.")
    sealed: SealedDocument | None = Field(
        description="The recording as stored, to decrypt with the offline key; null for a recording without audio."
    )


SEALED_REFUSED = {
    **REFUSED,
    409: "Integrity check failed: nothing is released. Or the recording is sealed to no offline key.",
}


def _export_request(body: ExportBody) -> ExportRequest:
    return ExportRequest(
        case_ref=body.case_ref,
        purpose=body.purpose,
        recipient=body.recipient,
        recipient_key=bytes.fromhex(body.recipient_public_key),
        kdf=body.kdf.model_dump() if body.kdf is not None else None,
    )


def _log_export(session: Session, actor: str, target: str, body: ExportBody, *, sealed: bool) -> int:
    """The export's entry, committed, then a tree head that covers it; 503 if either cannot be written."""
    detail = {
        "case_ref": body.case_ref,
        "recipient": body.recipient,
        "recipient_key": body.recipient_public_key,
        "passphrase": body.kdf is not None,
    }
    if sealed:
        detail["finished_by_client"] = True
    try:
        seq = record_event(
            session, actor=actor, action=Action.EVIDENCE_EXPORT, target=target, purpose=body.purpose, detail=detail
        ).seq
        session.commit()
        checkpoint_now(session)  # a tree head that covers the export entry itself
        session.commit()
    except Exception as exc:  # any failure to log is a refusal to read
        session.rollback()
        raise HTTPException(503, "the access log cannot be written, so evidence cannot be exported") from exc
    return seq


@contextmanager
def _failures_logged(session: Session, actor: str, target: str, seq: int) -> Iterator[None]:
    """A failed check, a failed time-stamp or no offline key: audited, then answered (IntegrityError
    re-raised, for the app's 409 handler)."""
    try:
        yield
    except (IntegrityError, TimestampError, NotSealedOffline) as exc:
        answer = _log_failure(session, actor, target, exc, seq)
        if answer is not None:
            raise answer from exc
        raise


def _log_failure(session: Session, actor: str, target: str, exc: Exception, seq: int) -> HTTPException | None:
    """Audit a failed export; the HTTP answer for it (None: re-raise, the app maps IntegrityError to 409)."""
    session.rollback()
    record_event(
        session,
        actor=actor,
        action=Action.EVIDENCE_INTEGRITY if isinstance(exc, IntegrityError) else Action.EVIDENCE_EXPORT,
        target=target,
        outcome="failed",
        detail={"error": str(exc), "export": seq},
    )
    session.commit()
    if isinstance(exc, TimestampError):
        return HTTPException(503, f"the time-stamping authority failed, so no bundle was made: {exc}")
    if isinstance(exc, NotSealedOffline):
        return HTTPException(409, f"{exc}: export it with POST /v1/evidence/{{id}}/export instead")
    return None


def _log_exported(session: Session, actor: str, target: str, detail: dict[str, object]) -> None:
    record_event(session, actor=actor, action=Action.EVIDENCE_EXPORTED, target=target, detail=detail)
    session.commit()


def _timestamp(services: Services) -> Callable[[bytes], bytes] | None:
    tsa = services.settings.tsa_url
    return (lambda digest: fetch_timestamp(tsa, digest)) if tsa else None


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
    wanted = _export_request(body)
    seq = _log_export(session, officer.actor, target, body, sealed=False)
    with _failures_logged(session, officer.actor, target, seq):
        inputs = gather(session, services, recording, officer.actor, wanted, seq)
        exported = build(inputs, services, wanted, report=render_report, timestamp=_timestamp(services))
    _log_exported(
        session,
        officer.actor,
        target,
        {"export": seq, "sha256sums": exported.sums_sha256, "bytes": exported.size, "complete": exported.complete},
    )

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


@router.post(
    "/{recording_id}/export/sealed",
    response_model=SealedExport,
    responses=answers(AUTHED, BODY, SEALED_REFUSED),
)
def export_sealed(
    recording_id: uuid.UUID,
    body: ExportBody,
    request: Request,
    officer: OfficerDep,
    session: SessionDep,
    services: ServicesDep,
) -> SealedExport:
    """Export a recording sealed to the organisation's offline key as a bundle the officer's client
    finishes (zero-knowledge mode): audited before anything is read, verified as far as ciphertext allows."""
    recording: Recording = live(recording_in_scope(request, services, session, officer, recording_id))
    target = f"recording:{recording.id}"
    wanted = _export_request(body)
    seq = _log_export(session, officer.actor, target, body, sealed=True)
    status = shown_status(recording, services.settings.interrupted_after_seconds)
    with _failures_logged(session, officer.actor, target, seq):
        inputs, document = gather_for_client(session, services, recording, officer.actor, wanted, seq, status)
        members, sums = members_for_client(inputs, services, report=render_report, timestamp=_timestamp(services))
    _log_exported(
        session,
        officer.actor,
        target,
        {"export": seq, "sha256sums": sums, "complete": inputs.complete, "finished_by_client": True},
    )
    return SealedExport(
        access_log=seq,
        sha256sums=sums,
        members={name: base64.b64encode(data).decode() for name, data in sorted(members.items())},
        sealed=SealedDocument(**document.document, access_log=seq) if document is not None else None,
    )
