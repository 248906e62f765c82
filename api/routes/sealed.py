"""POST /v1/evidence/{id}/sealed: a read that leaves as ciphertext (zero-knowledge mode).

Exactly the rules of POST /v1/evidence/{id}/audio: officers of the recording's site only, a
stated purpose, the access-log entry committed before anything is read (fail closed), and every
check that needs no plaintext done here first (api.sealed_read). What leaves is the recording as
the service holds it: the signed header and statements, the envelopes, and the data key sealed to
the organisation's offline key(s); the officer's client unseals and verifies with that key
(evidence.sealed; `countersign evidence get --key FILE`). It works in either mode, for recordings
sealed to an offline key; in zero-knowledge mode it is the only way to read.
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, Field

from api.core.audit import record_event
from api.core.deps import OfficerDep, ServicesDep, SessionDep, live, recording_in_scope
from api.core.fields import PurposeText
from api.core.responses import AUTHED, BODY, answers
from api.sealed_read import NotSealedOffline, gather_sealed
from evidence.audit_actions import Action
from evidence.errors import IntegrityError, NoAudio
from retention.lifecycle import shown_status

router = APIRouter(prefix="/v1/evidence", tags=["evidence"])


class SealedRequest(BaseModel):
    """What an officer sends to read a recording as ciphertext."""

    purpose: PurposeText = Field(description="Why you need this evidence (at least 10 visible characters; logged).")


class SealedSegmentOut(BaseModel):
    index: int
    final: bool
    ciphertext_sha256: str
    plaintext_sha256: str
    prev_hash: str
    signature: str = Field(description="The device's Ed25519 signature over the segment statement, hex.")
    envelope: str = Field(description="The encrypted segment exactly as stored, base64.")


class SealedDocument(BaseModel):
    """Everything needed to verify and decrypt the recording with the offline key (evidence.sealed)."""

    kind: str
    version: int
    recording_id: str
    header: dict[str, Any]
    header_signature: str
    device_public_key: str
    status: str = Field(description="complete, interrupted or open, as verified against the audit log.")
    segment_count: int
    sealed_keys: dict[str, str] = Field(description="Offline key id -> the data key sealed to it (hex).")
    segments: list[SealedSegmentOut]
    access_log: int = Field(description="The access-log entry of this read (written before anything was read).")


REFUSED = {
    404: "No such recording (or not in your sites).",
    410: "The recording was deleted; see its tombstone.",
    409: "Integrity check failed (nothing is released); or the recording holds no audio (a detail starting "
    "'No audio to release'); or it is sealed to no offline key.",
    503: "The access log cannot be written: nothing is read.",
}


@router.post("/{recording_id}/sealed", response_model=SealedDocument, responses=answers(AUTHED, BODY, REFUSED))
def get_sealed(
    recording_id: uuid.UUID,
    body: SealedRequest,
    request: Request,
    officer: OfficerDep,
    session: SessionDep,
    services: ServicesDep,
) -> SealedDocument:
    """Read a recording as ciphertext for a stated purpose (logged before anything is read);
    decrypt it with the organisation's offline key: `countersign evidence get ID --key FILE`."""
    recording = live(recording_in_scope(request, services, session, officer, recording_id))
    target = f"recording:{recording.id}"
    try:
        seq = record_event(
            session,
            actor=officer.actor,
            action=Action.EVIDENCE_READ_SEALED,
            target=target,
            purpose=body.purpose,
        ).seq
        session.commit()
    except Exception as exc:  # any failure to log is a refusal to read
        session.rollback()
        raise HTTPException(503, "the access log cannot be written, so evidence cannot be read") from exc
    shown = shown_status(recording, services.settings.interrupted_after_seconds)
    try:
        gathered = gather_sealed(session, services.store, recording, shown)
    except (IntegrityError, NoAudio, NotSealedOffline) as exc:
        session.rollback()
        # As /audio logs them: no audio is what the recording is (not a failure); a failed check is.
        action: dict[type[Exception], Action] = {
            NoAudio: Action.EVIDENCE_NO_AUDIO,
            IntegrityError: Action.EVIDENCE_INTEGRITY,
        }
        record_event(
            session,
            actor=officer.actor,
            action=action.get(type(exc), Action.EVIDENCE_READ_SEALED),
            target=target,
            outcome="allowed" if isinstance(exc, NoAudio) else "failed",
            detail={"error": str(exc), "read": seq, "sealed": True},
        )
        session.commit()
        if isinstance(exc, NotSealedOffline):
            raise HTTPException(409, str(exc)) from exc
        raise
    return SealedDocument(**gathered.document, access_log=seq)
