"""Accepting evidence from devices: recording headers and segments.

Every check that makes evidence trustworthy happens here, before anything is
stored: the device's signature, the chain, the consent record, the size.
Uploads are idempotent so a device can always retry: the same index with the
same bytes succeeds again, different bytes are a conflict.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import nacl.signing
from fastapi import HTTPException
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError as DBIntegrityError
from sqlalchemy.orm import Session

from api.core.audit import record_event
from api.core.models import Device, EvidenceKey, NoticeRow, Recording, SealedKey, Segment, utcnow
from api.core.storage import BlobStore
from api.core.storage.interface import segment_key
from api.schemas import RecordingCreate
from consent.records import ConsentError, ConsentRecord
from evidence import FORMAT_VERSION
from evidence.audit_actions import Action
from evidence.chain import SegmentStatement, SignedSegment, header_hash, verify_header, verify_segment
from evidence.envelope import check_envelope
from evidence.errors import EvidenceError
from retention.holds_sync import hold_new_segment
from retention.store import refresh_retention

SEALED_KEY_BYTES = 32 + 48  # data key + crypto_box_seal overhead (ephemeral pk + MAC)


def _reject(status: int, detail: str) -> HTTPException:
    return HTTPException(status_code=status, detail=detail)


def _parse_header(body: RecordingCreate, device: Device) -> tuple[uuid.UUID, datetime, ConsentRecord]:
    h = body.header
    try:
        if h.get("version") != FORMAT_VERSION:
            raise ValueError(f"header version must be {FORMAT_VERSION}")
        recording_id = uuid.UUID(str(h["recording_id"]))
        started_at = datetime.fromisoformat(str(h["started_at"]))
        if started_at.tzinfo is None:
            raise ValueError("started_at needs a time zone")
        try:  # the database stores UTC: a time that cannot be expressed in UTC is refused here, not there
            started_at = started_at.astimezone(UTC)
        except OverflowError:
            raise ValueError("started_at is out of range") from None
        if h.get("device_id") != device.id:
            raise ValueError("header names another device")
        # Objection records need no audio parameters, but any they carry must be valid too:
        # officers' listings read sample_rate back.
        if h.get("consent", {}).get("outcome") == "given" or "sample_rate" in h or "channels" in h:
            rate, channels = h.get("sample_rate"), h.get("channels")
            if not (
                isinstance(rate, int) and 8000 <= rate <= 96000 and isinstance(channels, int) and 1 <= channels <= 2
            ):
                raise ValueError("sample_rate must be 8000-96000 and channels 1-2")
        consent = ConsentRecord.from_dict(h["consent"])
    except ConsentError as exc:
        raise _reject(422, f"invalid consent record: {exc}") from exc
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise _reject(422, f"invalid recording header: {exc}") from exc
    return recording_id, started_at, consent


def _check_consent(session: Session, consent: ConsentRecord) -> None:
    row = session.get(NoticeRow, (consent.notice_id, consent.notice_version, consent.language))
    if row is None or row.sha256 != consent.notice_sha256:
        raise _reject(422, "consent record names a notice version this service does not know")


def _verify_key(device: Device) -> nacl.signing.VerifyKey:
    if device.public_key is None:
        raise _reject(403, "device is not enrolled")
    return nacl.signing.VerifyKey(device.public_key)


def create_recording(session: Session, device: Device, body: RecordingCreate) -> tuple[Recording, bool]:
    """Register a recording (or an objection record). Returns (recording, created)."""
    recording_id, started_at, consent = _parse_header(body, device)
    signature = bytes.fromhex(body.header_signature)
    try:
        verify_header(_verify_key(device), body.header, signature)
    except EvidenceError as exc:
        raise _reject(422, str(exc)) from exc
    _check_consent(session, consent)

    existing = session.get(Recording, str(recording_id))
    if existing is not None:
        if (
            existing.device_id == device.id
            and existing.header == body.header
            and existing.header_signature == signature
        ):
            return existing, False
        raise _reject(409, "a different recording already has this id")

    objected = consent.outcome == "objected"
    if objected and body.sealed_keys:
        raise _reject(422, "an objection record carries no audio and no data keys")
    if not objected:
        if not body.sealed_keys:
            raise _reject(422, "a recording needs its data key sealed to an evidence key")
        known = set(session.scalars(select(EvidenceKey.key_id)))
        for sealed in body.sealed_keys:
            if sealed.key_id not in known or len(sealed.sealed) != 2 * SEALED_KEY_BYTES:
                raise _reject(422, f"sealed key for unknown evidence key or malformed: {sealed.key_id}")

    recording = Recording(
        id=str(recording_id),
        device_id=device.id,
        site_id=device.site_id,
        started_at=started_at,
        status="objected" if objected else "open",
        header=body.header,
        header_signature=signature,
        consent_outcome=consent.outcome,
        head_hash=header_hash(body.header),
        ended_at=utcnow() if objected else None,
        sealed_keys=[SealedKey(key_id=s.key_id, sealed=bytes.fromhex(s.sealed)) for s in body.sealed_keys],
    )
    refresh_retention(session, recording)  # retain-until is known from the start (retention/)
    session.add(recording)
    record_event(
        session,
        actor=f"device:{device.id}",
        action=Action.CONSENT_OBJECTED if objected else Action.RECORDING_CREATE,
        target=f"recording:{recording.id}",
        detail={"notice": f"{consent.notice_id}/v{consent.notice_version}/{consent.language}"},
    )
    return recording, True


@dataclass(frozen=True)
class SegmentUpload:
    index: int
    final: bool
    plaintext_sha256: bytes
    prev_hash: bytes
    signature: bytes
    body: bytes


def own_recording(session: Session, device_id: str, recording_id: uuid.UUID) -> Recording:
    recording = session.get(Recording, str(recording_id))
    if recording is not None and recording.device_id != device_id:
        # Logged (a device reaching for another's evidence), yet answered like "absent": no probing.
        record_event(
            session, actor=f"device:{device_id}", action=Action.ACCESS_DENIED, target=f"recording:{recording.id}",
            outcome="denied", detail={"status": 404, "reason": "recording belongs to another device"},
        )  # fmt: skip
        session.commit()
    if recording is None or recording.device_id != device_id:
        raise _reject(404, "no such recording for this device")
    return recording


def add_segment(session: Session, store: BlobStore, device: Device, recording_id: uuid.UUID, up: SegmentUpload) -> bool:
    """Verify and store one segment. Returns True if it was new, False for an idempotent repeat."""
    recording = own_recording(session, device.id, recording_id)
    ciphertext_sha256 = hashlib.sha256(up.body).digest()
    existing = session.get(Segment, (recording.id, up.index))
    if existing is not None:
        same = (
            existing.ciphertext_sha256 == ciphertext_sha256
            and existing.signature == up.signature
            and existing.final == up.final
        )
        if same:
            return False
        raise _reject(409, f"segment {up.index} was already received with different content")
    if recording.purge_state is not None:
        raise _reject(410, "this recording has been deleted; it accepts no more segments")
    if recording.status == "objected":
        raise _reject(409, "the customer objected: this recording accepts no audio")
    if recording.status != "open":
        raise _reject(409, f"recording is {recording.status}; it accepts no more segments")
    if up.index != recording.segment_count:
        raise _reject(409, f"expected segment {recording.segment_count}, got {up.index}")
    if up.prev_hash != recording.head_hash:
        raise _reject(409, f"segment {up.index} does not follow the last segment received")
    try:
        check_envelope(up.body)
        statement = SegmentStatement(
            recording_id, up.index, up.final, ciphertext_sha256, up.plaintext_sha256, up.prev_hash
        )
        verify_segment(_verify_key(device), SignedSegment(statement, up.signature), recording.head_hash, recording_id)
    except EvidenceError as exc:
        raise _reject(422, str(exc)) from exc

    key = segment_key(recording.id, up.index)
    store.put(key, up.body)  # before the row: a crash leaves an orphan object, never a row without data
    # Then the store's legal hold, if a hold covers the recording, still before the row: a crash
    # leaves a held orphan, never a held recording with an unheld segment (retention.holds_sync).
    hold_new_segment(session, store, recording, key)
    session.add(
        Segment(
            recording_id=recording.id,
            index=up.index,
            final=up.final,
            ciphertext_sha256=ciphertext_sha256,
            plaintext_sha256=up.plaintext_sha256,
            prev_hash=up.prev_hash,
            signature=up.signature,
            size=len(up.body),
            object_key=key,
        )
    )
    now = utcnow()
    # Compare-and-set on the chain head, so two racing uploads of one index cannot both win.
    moved = session.execute(
        update(Recording)
        .where(Recording.id == recording.id, Recording.segment_count == up.index, Recording.purge_state.is_(None))
        .values(
            segment_count=up.index + 1,
            head_hash=statement.link_hash(),
            last_activity_at=now,
            status="complete" if up.final else "open",
            ended_at=now if up.final else None,
        )
    )
    if moved.rowcount != 1:  # type: ignore[attr-defined]
        raise _reject(409, f"segment {up.index} raced another upload; retry")
    record_event(
        session,
        actor=f"device:{device.id}",
        action=Action.SEGMENT_UPLOAD,
        target=f"recording:{recording.id}",
        detail={"index": up.index, "final": up.final, "sha256": ciphertext_sha256.hex()},
    )
    try:
        session.flush()
    except DBIntegrityError as exc:
        raise _reject(409, f"segment {up.index} was stored concurrently; retry") from exc
    return True
