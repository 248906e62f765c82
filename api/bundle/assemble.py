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
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import nacl.signing

from evidence.bundle.archive import inner_zip
from evidence.bundle.crypto import shipped_text
from evidence.chain import SegmentStatement, canonical_json, header_bytes

BUNDLE_FORMAT = "countersign-evidence-bundle/v1"
ENROLMENT_TYPE = "countersign/device-enrolment/v1"
SUMS = "SHA256SUMS"
__all__ = ["inner_zip"]  # re-exported: the layout the service and the officer's client share
_ED25519_SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")  # RFC 8410: SubjectPublicKeyInfo, id-Ed25519


@dataclass(frozen=True)
class SegmentEvidence:
    statement: SegmentStatement
    signature: bytes
    # The plaintext the device hashed, decrypted; None when the officer's client adds it (zero-knowledge
    # mode: the service cannot decrypt), and then flac_size is its length, known from the envelope's.
    flac: bytes | None
    flac_size: int = 0


@dataclass(frozen=True)
class Listed:
    """A member SHA256SUMS lists that is not in the members yet: the officer's client adds it."""

    sha256: bytes
    size: int


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


def sha256sums(members: Mapping[str, bytes], added: Mapping[str, Listed] | None = None) -> bytes:
    digests = {name: hashlib.sha256(data).hexdigest() for name, data in members.items()}
    digests |= {name: listed.sha256.hex() for name, listed in (added or {}).items()}
    return "".join(f"{digest}  {name}\n" for name, digest in sorted(digests.items())).encode()


def to_be_added(inputs: BundleInputs) -> dict[str, Listed]:
    """The segment FLACs the service could not decrypt, by the plaintext hash their device signed."""
    return {
        segment_name(s.statement.index, "flac"): Listed(s.statement.plaintext_sha256, s.flac_size)
        for s in inputs.segments
        if s.flac is None
    }


def assemble(
    inputs: BundleInputs,
    signer: nacl.signing.SigningKey,
    *,
    report: Callable[[Mapping[str, bytes], Mapping[str, Listed]], bytes] | None = None,
    timestamp: Callable[[bytes], bytes] | None = None,
) -> dict[str, bytes]:
    """The inner bundle's members, path -> bytes, signed.

    `report` renders the PDF from the members and the ones still to be added
    (api.bundle.report.render_report); `timestamp` asks a time-stamping authority
    for a token over SHA-256(SHA256SUMS). Segments without their FLAC (zero-knowledge
    mode) are listed in SHA256SUMS by their signed hash and left out of the result.
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
        if segment.flac is not None:
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
    added = to_be_added(inputs)
    if report is not None:
        m["report/custody-report.pdf"] = report(m, added)
    sums = sha256sums(m, added)
    m[SUMS] = sums
    m[f"{SUMS}.sig"] = bytes(signer.sign(sums).signature)
    if timestamp is not None:
        m[f"{SUMS}.tsr"] = timestamp(hashlib.sha256(sums).digest())
    return m
