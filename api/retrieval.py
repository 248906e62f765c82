"""Reading evidence back: verify everything, then decrypt, then release.

Nothing is released until every segment has passed: the header and segment
signatures, the chain links, the stored ciphertext's hash, the AEAD (which
binds recording id, index and final flag), and the plaintext hash. A single
failure raises IntegrityError; the caller never receives altered audio.
"""

from __future__ import annotations

import hashlib
import uuid

import nacl.signing
import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.anchors import check_recording
from api.core.keys import KeyCustodian
from api.core.models import AccessLog, Device, Recording, Segment
from api.core.storage import BlobStore, ObjectMissing
from evidence import audio
from evidence.audit_actions import Action
from evidence.chain import SegmentStatement, SignedSegment, verify_chain
from evidence.envelope import open_segment
from evidence.errors import FormatError, IntegrityError


def segments_of(session: Session, recording_id: str) -> list[Segment]:
    return list(session.scalars(select(Segment).where(Segment.recording_id == recording_id).order_by(Segment.index)))


def verify_recording_chain(session: Session, recording: Recording) -> list[Segment]:
    """Check the signed chain as stored in the database; return the segments in order."""
    device = session.get(Device, recording.device_id)
    if device is None or device.public_key is None:
        raise IntegrityError("the recording's device key is unknown")
    rows = segments_of(session, recording.id)
    rid = uuid.UUID(recording.id)
    signed = (
        SignedSegment(
            SegmentStatement(rid, r.index, r.final, r.ciphertext_sha256, r.plaintext_sha256, r.prev_hash), r.signature
        )
        for r in rows
    )
    try:
        verify_key = nacl.signing.VerifyKey(device.public_key)
    except ValueError as exc:  # nacl's ValueError: a stored key of the wrong length
        raise IntegrityError("the recording's device key is malformed") from exc
    try:
        report = verify_chain(verify_key, recording.header, recording.header_signature, signed)
    except FormatError as exc:  # rows were well-formed when accepted: malformed now means altered since
        raise IntegrityError(exc.detail) from exc
    if report.segments != recording.segment_count:
        raise IntegrityError(f"{recording.segment_count} segments recorded, {report.segments} found")
    if recording.status == "complete" and not report.final:
        raise IntegrityError("recording is marked complete but its final segment is missing")
    _check_against_audit_log(session, recording, report.segments, report.final)
    check_recording(session, recording, device, rows)  # the key, site and hashes as the log recorded them
    return rows


def _check_against_audit_log(session: Session, recording: Recording, segments: int, final: bool) -> None:
    """The status and segment rows are not signed; the tamper-evident audit log says what arrived.

    Dropping the final segment (row and object) and relabelling a recording
    "interrupted" would otherwise look exactly like a destroyed device.
    """
    uploads = session.scalars(
        select(AccessLog.detail)
        .where(AccessLog.target == f"recording:{recording.id}", AccessLog.action == Action.SEGMENT_UPLOAD)
        .order_by(AccessLog.seq.desc())  # newest first: a final upload is reported as such, deterministically
    )
    for detail in uploads:
        index = int(detail.get("index", -1))
        if detail.get("final") and not final:
            raise IntegrityError(f"the audit log records a final segment ({index}) being received, but it is missing")
        if index >= segments:
            raise IntegrityError(f"the audit log records segment {index} being received, but the recording lacks it")


def read_audio(
    session: Session, store: BlobStore, keys: KeyCustodian, recording: Recording, fmt: str
) -> tuple[bytes, int]:
    """Return (encoded audio, frames) after verifying every segment."""
    rows = verify_recording_chain(session, recording)
    if not rows:
        raise IntegrityError("the recording has no audio")
    data_key = keys.unseal({k.key_id: k.sealed for k in recording.sealed_keys})
    rid = uuid.UUID(recording.id)
    expected_rate = int(recording.header["sample_rate"])
    parts = []
    for row in rows:
        try:
            envelope = store.get(row.object_key)
        except ObjectMissing as exc:
            raise IntegrityError(f"segment {row.index} is missing from the store") from exc
        if hashlib.sha256(envelope).digest() != row.ciphertext_sha256:
            raise IntegrityError(f"segment {row.index} in the store is not the one the device signed")
        plaintext = open_segment(data_key, rid, row.index, row.final, envelope)
        if hashlib.sha256(plaintext).digest() != row.plaintext_sha256:
            raise IntegrityError(f"segment {row.index} decrypts to audio the device did not sign")
        pcm, rate = audio.decode(plaintext)
        if rate != expected_rate:
            raise IntegrityError(f"segment {row.index} has sample rate {rate}, header says {expected_rate}")
        parts.append(pcm)
    samples = np.concatenate(parts)
    return audio.encode(samples, expected_rate, fmt), len(samples)
