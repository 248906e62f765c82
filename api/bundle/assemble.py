"""The inner evidence bundle, assembled from what the service gathered (docs/evidence-bundle.md).

Pure: no database, no store, no clock. api.bundle.export gathers the inputs
(and audits the export); this module lays them out as files, and the same
inputs always give the same bytes (tests/evidence/test_bundle_golden.py).
Every file the recipient checks is either exactly what a device or the service
signed, or listed in the signed SHA256SUMS.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import nacl.signing

from evidence.bundle.crypto import shipped_text
from evidence.chain import SegmentStatement, canonical_json, header_bytes

BUNDLE_FORMAT = "countersign-evidence-bundle/v1"
ENROLMENT_TYPE = "countersign/device-enrolment/v1"
SUMS = "SHA256SUMS"
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)
_ED25519_SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")  # RFC 8410: SubjectPublicKeyInfo, id-Ed25519


@dataclass(frozen=True)
class SegmentEvidence:
    statement: SegmentStatement
    signature: bytes
    flac: bytes  # the plaintext the device hashed, decrypted


@dataclass(frozen=True)
class CustodyEntry:
    fields: Mapping[str, Any]  # the eight hashed fields (api.core.audit.entry_fields)
    path: Sequence[bytes]  # the RFC 6962 inclusion proof against the tree head


@dataclass(frozen=True)
class TreeHead:
    size: int
    root: bytes
    chain_hash: bytes
    at: str  # exactly as signed
    message: bytes  # the signed bytes (evidence.audit_log.tree_head_message)
    signature: bytes


@dataclass(frozen=True)
class Enrolment:
    device_id: str
    device_name: str
    site_id: str
    public_key: bytes
    enrolled_at: str
    audit_seq: int


@dataclass(frozen=True)
class BundleInputs:
    recording_id: str
    header: Mapping[str, Any]
    header_signature: bytes
    notice_text: str
    enrolment: Enrolment
    segments: Sequence[SegmentEvidence]
    joined_flac: bytes | None  # None for a recording with no audio (an objection record)
    status: Mapping[str, Any]  # recording/status.json
    export: Mapping[str, Any]  # manifest fields: exported_at, exported_by, exported_by_id, case_ref, purpose, ...
    tree_head: TreeHead
    custody: Sequence[CustodyEntry]
    actors: Mapping[str, str]
    complete: bool
    partial_reason: str | None = None
    published_at: str | None = None


def public_key_pem(raw: bytes) -> bytes:
    """An Ed25519 public key as openssl reads it."""
    body = base64.b64encode(_ED25519_SPKI_PREFIX + raw).decode()
    return f"-----BEGIN PUBLIC KEY-----\n{body}\n-----END PUBLIC KEY-----\n".encode()


def fingerprint(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def _pretty(value: Mapping[str, Any]) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def enrolment_statement(enrolment: Enrolment) -> bytes:
    return canonical_json(
        {
            "type": ENROLMENT_TYPE,
            "device_id": enrolment.device_id,
            "device_name": enrolment.device_name,
            "site_id": enrolment.site_id,
            "public_key": enrolment.public_key.hex(),
            "enrolled_at": enrolment.enrolled_at,
            "audit_seq": enrolment.audit_seq,
        }
    )


def entry_name(seq: int) -> str:
    return f"custody/entries/{seq:012d}.json"


def segment_name(index: int, suffix: str) -> str:
    return f"segments/{index:06d}.{suffix}"


def sha256sums(members: Mapping[str, bytes]) -> bytes:
    lines = [f"{hashlib.sha256(data).hexdigest()}  {name}\n" for name, data in sorted(members.items())]
    return "".join(lines).encode()


def assemble(
    inputs: BundleInputs,
    signer: nacl.signing.SigningKey,
    *,
    report: Callable[[Mapping[str, bytes]], bytes] | None = None,
    timestamp: Callable[[bytes], bytes] | None = None,
) -> dict[str, bytes]:
    """The inner bundle's members, path -> bytes, signed.

    `report` renders the PDF from the members (api.bundle.report.render_report);
    `timestamp` asks a time-stamping authority for a token over SHA-256(SHA256SUMS).
    """
    service_key = bytes(signer.verify_key)
    m: dict[str, bytes] = {
        "README.txt": shipped_text("README.txt"),
        "README.ja.txt": shipped_text("README.ja.txt"),
        "verify.py": shipped_text("verify.py"),
        "service_key.pem": public_key_pem(service_key),
        "recording/header.bin": header_bytes(inputs.header),
        "recording/header.sig": inputs.header_signature,
        "recording/status.json": _pretty(inputs.status),
        "consent/notice.txt": inputs.notice_text.encode("utf-8"),
        "device/device_key.pem": public_key_pem(inputs.enrolment.public_key),
    }
    enrolment = enrolment_statement(inputs.enrolment)
    m["device/enrolment.json"] = enrolment
    m["device/enrolment.sig"] = bytes(signer.sign(enrolment).signature)
    for segment in inputs.segments:
        index = segment.statement.index
        m[segment_name(index, "flac")] = segment.flac
        m[segment_name(index, "statement")] = segment.statement.to_bytes()
        m[segment_name(index, "sig")] = segment.signature
    if inputs.joined_flac is not None:
        m["audio/recording.flac"] = inputs.joined_flac
    head = inputs.tree_head
    m["custody/tree_head.bin"] = head.message
    m["custody/tree_head.sig"] = head.signature
    m["custody/tree_head.json"] = _pretty(
        {"size": head.size, "root": head.root.hex(), "chain_hash": head.chain_hash.hex(), "at": head.at}
    )
    proofs = {}
    for entry in inputs.custody:
        seq = int(entry.fields["seq"])
        m[entry_name(seq)] = canonical_json(entry.fields)
        proofs[f"{seq:012d}"] = {"leaf_index": seq - 1, "tree_size": head.size, "path": [p.hex() for p in entry.path]}
    m["custody/proofs.json"] = _pretty(proofs)
    m["custody/actors.json"] = _pretty(dict(inputs.actors))
    m["manifest.json"] = _pretty(
        {
            "format": BUNDLE_FORMAT,
            "recording_id": inputs.recording_id,
            **inputs.export,
            "complete": inputs.complete,
            "partial_reason": inputs.partial_reason,
            "segments": len(inputs.segments),
            "service": {
                "public_key": service_key.hex(),
                "fingerprint": fingerprint(service_key),
                "published_at": inputs.published_at,
            },
        }
    )
    if report is not None:
        m["report/custody-report.pdf"] = report(m)
    sums = sha256sums(m)
    m[SUMS] = sums
    m[f"{SUMS}.sig"] = bytes(signer.sign(sums).signature)
    if timestamp is not None:
        m[f"{SUMS}.tsr"] = timestamp(hashlib.sha256(sums).digest())
    return m


def inner_zip(members: Mapping[str, bytes]) -> bytes:
    """The members as one zip, in path order, with fixed times: same members, same bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in sorted(members):
            info = zipfile.ZipInfo(name, date_time=_FIXED_TIME)
            # FLAC is already compressed; deflating it again costs time for nothing.
            info.compress_type = zipfile.ZIP_STORED if name.endswith(".flac") else zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, members[name])
    return buffer.getvalue()
