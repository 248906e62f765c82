"""The signed segment chain.

A recording opens with a *header* (ids, audio parameters and the consent
record), signed by the device. Its hash is the genesis of the chain, so consent
is part of the evidence: segment 0 points back at it.

Each segment then carries a *statement*, signed with the device's Ed25519 key::

    domain | version | recording id (16) | index (u32) | final (u8)
           | sha256(envelope) (32) | sha256(plaintext) (32) | previous link (32)

and its *link* hash is sha256(statement). Reordering, dropping, swapping,
truncating (a missing final segment) or replaying a segment into another
recording all break either a signature or a link; a recording cut short by a
destroyed device still verifies up to its last segment and is reported as not
final rather than as altered.
"""

from __future__ import annotations

import hashlib
import json
import struct
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import nacl.exceptions
import nacl.signing

from evidence import FORMAT_VERSION
from evidence.errors import FormatError, IntegrityError

_HEADER_DOMAIN = b"countersign/recording-header/v1\x00"
_SEGMENT_DOMAIN = b"countersign/segment/v1\x00"
HASH_BYTES = 32


def canonical_json(value: Mapping[str, Any]) -> bytes:
    """One byte string per value: sorted keys, no spaces, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def header_bytes(header: Mapping[str, Any]) -> bytes:
    return _HEADER_DOMAIN + canonical_json(header)


def header_hash(header: Mapping[str, Any]) -> bytes:
    """Genesis of the chain: segment 0's previous link."""
    return hashlib.sha256(header_bytes(header)).digest()


@dataclass(frozen=True)
class SegmentStatement:
    """What the device signs for one segment."""

    recording_id: uuid.UUID
    index: int
    final: bool
    ciphertext_sha256: bytes
    plaintext_sha256: bytes
    prev_hash: bytes

    def __post_init__(self) -> None:
        if not 0 <= self.index < 2**32:
            raise FormatError(f"segment index {self.index} out of range")
        for name in ("ciphertext_sha256", "plaintext_sha256", "prev_hash"):
            if len(getattr(self, name)) != HASH_BYTES:
                raise FormatError(f"{name} must be {HASH_BYTES} bytes")

    def to_bytes(self) -> bytes:
        return _SEGMENT_DOMAIN + struct.pack(
            ">B16sIB32s32s32s",
            FORMAT_VERSION,
            self.recording_id.bytes,
            self.index,
            self.final,
            self.ciphertext_sha256,
            self.plaintext_sha256,
            self.prev_hash,
        )

    def link_hash(self) -> bytes:
        return hashlib.sha256(self.to_bytes()).digest()


@dataclass(frozen=True)
class SignedSegment:
    statement: SegmentStatement
    signature: bytes


def sign_header(key: nacl.signing.SigningKey, header: Mapping[str, Any]) -> bytes:
    return bytes(key.sign(header_bytes(header)).signature)


def sign_statement(key: nacl.signing.SigningKey, statement: SegmentStatement) -> bytes:
    return bytes(key.sign(statement.to_bytes()).signature)


def _verify(key: nacl.signing.VerifyKey, message: bytes, signature: bytes, what: str) -> None:
    try:
        key.verify(message, signature)
    except (nacl.exceptions.BadSignatureError, ValueError) as exc:
        raise IntegrityError(f"bad device signature on {what}") from exc


def verify_header(key: nacl.signing.VerifyKey, header: Mapping[str, Any], signature: bytes) -> None:
    _verify(key, header_bytes(header), signature, "recording header")


def verify_segment(
    key: nacl.signing.VerifyKey, segment: SignedSegment, expected_prev: bytes, recording_id: uuid.UUID
) -> None:
    """Check one segment against its signer, its recording and its predecessor."""
    st = segment.statement
    if st.recording_id != recording_id:
        raise IntegrityError(f"segment {st.index} belongs to another recording")
    _verify(key, st.to_bytes(), segment.signature, f"segment {st.index}")
    if st.prev_hash != expected_prev:
        raise IntegrityError(f"segment {st.index} does not follow segment {st.index - 1}")


@dataclass(frozen=True)
class ChainReport:
    segments: int
    final: bool
    head: bytes


def verify_chain(
    key: nacl.signing.VerifyKey,
    header: Mapping[str, Any],
    header_signature: bytes,
    segments: Iterable[SignedSegment],
) -> ChainReport:
    """Verify a whole recording: header signature, then every segment in order.

    Raises IntegrityError at the first problem. A chain without a final segment
    is valid but reported as not final (an interrupted recording).
    """
    verify_header(key, header, header_signature)
    recording_id = uuid.UUID(str(header["recording_id"]))
    prev = header_hash(header)
    count = 0
    final = False
    for segment in segments:
        if final:
            raise IntegrityError(f"segment {segment.statement.index} follows the final segment")
        if segment.statement.index != count:
            raise IntegrityError(f"expected segment {count}, found segment {segment.statement.index}")
        verify_segment(key, segment, prev, recording_id)
        prev = segment.statement.link_hash()
        final = segment.statement.final
        count += 1
    return ChainReport(segments=count, final=final, head=prev)
