"""Exporting a recording as an evidence bundle: gather, verify, assemble, encrypt.

The route (api/routes/export.py) audits the export and signs a fresh tree head
first; this module then reads everything the bundle holds, verifies it exactly
as a read does (api.retrieval: signatures, chain, anchors, stored hashes,
plaintext hashes), lays it out (api.bundle.assemble) and encrypts it to the
recipient into a temporary file. Only ciphertext reaches the disk: the inner
bundle exists in memory alone.
"""

from __future__ import annotations

import hashlib
import tempfile
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import IO, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.anchors import enrolment_of
from api.bundle.assemble import (
    BundleInputs,
    CustodyEntry,
    Enrolment,
    Listed,
    SegmentEvidence,
    TreeHead,
    assemble,
    inner_zip,
)
from api.core.audit import entry_fields
from api.core.audit_tree import inclusion_proof, latest_tree_head
from api.core.models import AccessLog, Device, NoticeRow, Recording, Segment, Site, User, iso
from api.core.services import Services
from api.retrieval import joined_audio, open_segments, verify_recording_chain
from api.sealed_read import SealedEvidence, sealed_document
from consent.catalogue import text_sha256
from evidence.audit_log import timestamp as log_time
from evidence.bundle.crypto import write_outer
from evidence.chain import SegmentStatement
from evidence.errors import IntegrityError
from retention.decide import covering_holds
from retention.lifecycle import shown_status
from retention.models import Hold
from retention.store import active_holds, facts_of

Report = Callable[[Mapping[str, bytes], Mapping[str, Listed]], bytes]  # api.bundle.report.render_report


@dataclass(frozen=True)
class ExportRequest:
    case_ref: str
    purpose: str
    recipient: str | None
    recipient_key: bytes  # X25519 public key the bundle is encrypted to
    kdf: Mapping[str, Any] | None  # set when the key stands for a passphrase (evidence.bundle.crypto)


@dataclass(frozen=True)
class Exported:
    file: IO[bytes]  # the outer zip, rewound; closing it deletes it
    size: int
    sums_sha256: str  # SHA-256 of the signed SHA256SUMS: names this bundle in the audit log
    complete: bool


def _notice_text(session: Session, consent: Mapping[str, Any]) -> str:
    row = session.get(NoticeRow, (consent.get("notice_id"), consent.get("notice_version"), consent.get("language")))
    if row is None or text_sha256(row.text) != consent.get("notice_sha256"):
        raise IntegrityError("the notice text the consent record names is not in the notice catalogue")
    return row.text


def _actors(session: Session, actors: set[str]) -> dict[str, str]:
    users = {a.removeprefix("user:") for a in actors if a.startswith("user:")}
    devices = {a.removeprefix("device:") for a in actors if a.startswith("device:")}
    names = {f"user:{u.id}": u.name for u in session.scalars(select(User).where(User.id.in_(users)))}
    names |= {f"device:{d.id}": d.name for d in session.scalars(select(Device).where(Device.id.in_(devices)))}
    return {actor: names.get(actor, actor) for actor in sorted(actors)}


def _status(session: Session, services: Services, recording: Recording, device: Device) -> dict[str, Any]:
    covering = covering_holds(facts_of(recording), active_holds(session))
    holds = session.scalars(select(Hold).where(Hold.id.in_([h.id for h in covering])).order_by(Hold.created_at))
    site = session.get(Site, recording.site_id)
    return {
        "status": shown_status(recording, services.settings.interrupted_after_seconds),
        "started_at": iso(recording.started_at),
        "ended_at": iso(recording.ended_at),
        "site_id": recording.site_id,
        "site_name": site.name if site is not None else recording.site_id,
        "device_id": device.id,
        "device_name": device.name,
        "incident_category": recording.incident_category,
        "retain_until": iso(recording.retain_until),
        "retain_reason": recording.retain_reason,
        "holds": [{"case_ref": h.case_ref, "reason": h.reason, "placed_at": iso(h.created_at)} for h in holds],
    }


def _partial_reason(recording: Recording, segments: int, final: bool) -> str | None:
    if final or recording.header.get("consent", {}).get("outcome") != "given":
        return None
    if segments == 0:
        # Consent given, capture produced nothing: what the recording is, not a failed check.
        return f"no audio was captured: no segment arrived before the recording ended (status {recording.status})"
    return (
        f"segments 0..{segments - 1} arrived and the device sent nothing after them "
        f"(status {recording.status}): it was stopped, lost or destroyed mid-recording"
    )


def _statement(recording: Recording, row: Segment) -> SegmentStatement:
    return SegmentStatement(
        recording_id=uuid.UUID(recording.id),
        index=row.index,
        final=row.final,
        ciphertext_sha256=row.ciphertext_sha256,
        plaintext_sha256=row.plaintext_sha256,
        prev_hash=row.prev_hash,
    )


def gather(
    session: Session, services: Services, recording: Recording, actor: str, request: ExportRequest, export_seq: int
) -> BundleInputs:
    """Everything the bundle holds, verified; IntegrityError at the first thing that does not hold."""
    opened = open_segments(session, services.store, services.keys, recording)  # verifies chain and anchors
    segments = [SegmentEvidence(_statement(recording, row), row.signature, plaintext) for row, plaintext in opened]
    joined = joined_audio(recording, opened, "flac")[0] if opened else None
    return _inputs(session, services, recording, actor, request, export_seq, segments, joined)


def gather_for_client(
    session: Session,
    services: Services,
    recording: Recording,
    actor: str,
    request: ExportRequest,
    export_seq: int,
    status: str,
) -> tuple[BundleInputs, SealedEvidence | None]:
    """A bundle the officer's client completes (zero-knowledge mode): everything but the segment FLACs,
    which SHA256SUMS lists by the plaintext hashes their device signed, and the sealed document the
    client decrypts them from (None for a recording without audio). Every check that needs no
    plaintext is done here; the client does the rest (evidence.bundle.completion). No joined file:
    the service cannot make it and SHA256SUMS, which it signs, could not list it."""
    rows = verify_recording_chain(session, recording)  # signatures, links, anchors, the log's upload record
    document = sealed_document(session, services.store, recording, rows, status) if rows else None
    sizes = document.plaintext_sizes if document is not None else []
    segments = [
        SegmentEvidence(_statement(recording, row), row.signature, None, flac_size=size)
        for row, size in zip(rows, sizes, strict=True)
    ]
    return _inputs(session, services, recording, actor, request, export_seq, segments, None), document


def _inputs(
    session: Session,
    services: Services,
    recording: Recording,
    actor: str,
    request: ExportRequest,
    export_seq: int,
    segments: list[SegmentEvidence],
    joined_flac: bytes | None,
) -> BundleInputs:
    device = session.get(Device, recording.device_id)
    assert device is not None  # verify_recording_chain checked the device and its enrolment
    enrolled = enrolment_of(session, recording.device_id)
    head = latest_tree_head(session)
    target = f"recording:{recording.id}"
    rows = list(
        session.scalars(
            select(AccessLog).where(AccessLog.target == target, AccessLog.seq <= head.size).order_by(AccessLog.seq)
        )
    )
    if enrolled.entry.seq <= head.size:
        rows.insert(0, enrolled.entry)
    custody = [CustodyEntry(entry_fields(row), inclusion_proof(session, row.seq, head.size)) for row in rows]
    final = bool(segments) and segments[-1].statement.final
    user = session.get(User, actor.removeprefix("user:"))
    return BundleInputs(
        recording_id=recording.id,
        header=recording.header,
        header_signature=recording.header_signature,
        notice_text=_notice_text(session, recording.header.get("consent", {})),
        enrolment=Enrolment(
            device_id=device.id,
            device_name=device.name,
            site_id=enrolled.site_id,
            public_key=enrolled.public_key,
            enrolled_at=log_time(enrolled.entry.at),
            audit_seq=enrolled.entry.seq,
        ),
        segments=segments,
        joined_flac=joined_flac,
        status=_status(session, services, recording, device),
        export={
            "exported_at": log_time(head.at),
            "exported_by": user.name if user is not None else actor,
            "exported_by_id": actor,
            "case_ref": request.case_ref,
            "purpose": request.purpose,
            "recipient": request.recipient,
            "export_audit_seq": export_seq,
        },
        tree_head=TreeHead(head.size, head.root, head.chain_hash, head.at_text, head.message, head.signature),
        custody=custody,
        actors=_actors(session, {row.actor for row in rows}),
        complete=final or recording.header.get("consent", {}).get("outcome") != "given",
        partial_reason=_partial_reason(recording, len(segments), final),
        published_at=services.settings.service_key_published_at,
    )


def build(
    inputs: BundleInputs,
    services: Services,
    request: ExportRequest,
    *,
    report: Report | None,
    timestamp: Callable[[bytes], bytes] | None,
) -> Exported:
    """Assemble and encrypt; the outer zip goes to an unlinked temporary file (ciphertext only)."""
    signer = services.keys.signing_key
    assert signer is not None
    members = assemble(inputs, signer, report=report, timestamp=timestamp)
    sums = hashlib.sha256(members["SHA256SUMS"]).hexdigest()
    plaintext = inner_zip(members)
    del members
    out = tempfile.TemporaryFile(prefix="countersign-export-")  # noqa: SIM115 (handed to the response, which closes it)
    try:
        write_outer(out, [plaintext], request.recipient_key, dict(request.kdf) if request.kdf is not None else None)
        size = out.tell()
        out.seek(0)
    except BaseException:
        out.close()
        raise
    return Exported(out, size, sums, inputs.complete)


def members_for_client(
    inputs: BundleInputs, services: Services, *, report: Report | None, timestamp: Callable[[bytes], bytes] | None
) -> tuple[dict[str, bytes], str]:
    """The signed inner bundle without its segment FLACs (gather_for_client), and the SHA-256 of its
    SHA256SUMS. It holds no audio, so it leaves unencrypted; the client encrypts the finished bundle."""
    signer = services.keys.signing_key
    assert signer is not None
    members = assemble(inputs, signer, report=report, timestamp=timestamp)
    return members, hashlib.sha256(members["SHA256SUMS"]).hexdigest()
