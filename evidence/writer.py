"""The device side of the format, written once: what a recorder (or a simulated one) sends.

`RecordingWriter` makes a recording's header, signs it, draws the data key and
seals it (crypto_box_seal) to each evidence public key; then turns each
segment's plaintext (FLAC bytes) into an envelope, a signed statement chained
onto the previous one, and the upload headers. The data key lives only in this
object's memory and is dropped when the final segment is sealed or the writer
is closed: what is written down or sent is the sealed key, never the key.

No spool, no HTTP and no audio encoding here: the recorder, the test devices and
the benchmarks each bring their own, and share this.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import nacl.public
import nacl.signing

from evidence import FORMAT_VERSION
from evidence.chain import SegmentStatement, SignedSegment, header_hash, sign_header, sign_statement
from evidence.envelope import new_data_key, seal_segment
from evidence.errors import FormatError, KeyUnavailableError
from evidence.wire import RecordingHeader, UploadHeaders

EvidenceKeys = Mapping[str, "nacl.public.PublicKey | bytes"]


def seal_data_key(data_key: bytes, evidence_keys: EvidenceKeys) -> list[dict[str, str]]:
    """The data key sealed to each evidence public key, as the create body carries them."""
    sealed = []
    for key_id, public in evidence_keys.items():
        pk = public if isinstance(public, nacl.public.PublicKey) else nacl.public.PublicKey(public)
        sealed.append({"key_id": key_id, "sealed": bytes(nacl.public.SealedBox(pk).encrypt(data_key)).hex()})
    return sealed


@dataclass(frozen=True)
class SealedSegment:
    """One segment ready to spool or send: the envelope and its signed statement."""

    envelope: bytes
    signed: SignedSegment

    @property
    def statement(self) -> SegmentStatement:
        return self.signed.statement

    @property
    def index(self) -> int:
        return self.signed.statement.index

    @property
    def final(self) -> bool:
        return self.signed.statement.final

    @property
    def link(self) -> bytes:
        """The next segment's previous link."""
        return self.signed.statement.link_hash()

    def upload_headers(self) -> dict[str, str]:
        return UploadHeaders.of(self.signed).to_dict()


def seal_segment_at(
    signing_key: nacl.signing.SigningKey,
    data_key: bytes,
    recording_id: uuid.UUID,
    index: int,
    final: bool,
    plaintext: bytes,
    prev: bytes,
) -> SealedSegment:
    """Encrypt and sign one segment at an explicit place in a chain (stateless)."""
    envelope = seal_segment(data_key, recording_id, index, final, plaintext)
    statement = SegmentStatement(
        recording_id, index, final, hashlib.sha256(envelope).digest(), hashlib.sha256(plaintext).digest(), prev
    )
    return SealedSegment(envelope, SignedSegment(statement, sign_statement(signing_key, statement)))


class RecordingWriter:
    """One recording being written: its signed header, its sealed keys, and its chain head."""

    def __init__(
        self, signing_key: nacl.signing.SigningKey, header: RecordingHeader, evidence_keys: EvidenceKeys
    ) -> None:
        self.signing_key = signing_key
        self.header = header
        self.header_dict = header.to_dict()
        self.header_signature = sign_header(signing_key, self.header_dict)
        self._data_key = b""
        self.sealed_keys: list[dict[str, str]] = []
        if header.consented:
            if not evidence_keys:  # fail closed: a key sealed to nobody makes evidence nobody can read
                raise KeyUnavailableError("a recording needs its data key sealed to an evidence key")
            self._data_key = new_data_key()
            self.sealed_keys = seal_data_key(self._data_key, evidence_keys)
        self.prev = header_hash(self.header_dict)
        self.index = 0
        self.closed = not header.consented  # an objection record accepts no audio

    @classmethod
    def start(
        cls,
        signing_key: nacl.signing.SigningKey,
        device_id: str,
        consent: Mapping[str, Any],
        evidence_keys: EvidenceKeys,
        *,
        sample_rate: int | None = None,
        channels: int | None = None,
        segment_seconds: float | None = None,
        codec: str = "flac",
        recording_id: uuid.UUID | None = None,
        started_at: datetime | None = None,
    ) -> RecordingWriter:
        """A new recording (a fresh id, started now); audio parameters only when consent was given."""
        given = consent.get("outcome") == "given"
        header = RecordingHeader(
            version=FORMAT_VERSION,
            recording_id=recording_id or uuid.uuid4(),
            device_id=device_id,
            started_at=(started_at or datetime.now(UTC)).isoformat(),
            consent=dict(consent),
            sample_rate=sample_rate if given else None,
            channels=channels if given else None,
            segment_seconds=segment_seconds if given else None,
            codec=codec if given else None,
        )
        return cls(signing_key, header, evidence_keys)

    @property
    def id(self) -> uuid.UUID:
        return self.header.recording_id

    @property
    def data_key(self) -> bytes:
        """The plaintext data key (empty once closed); for test devices that break things on purpose."""
        return self._data_key

    def create_body(self) -> dict[str, Any]:
        """The body of POST /v1/recordings (and the spool's record of it)."""
        return {
            "header": self.header_dict,
            "header_signature": self.header_signature.hex(),
            "sealed_keys": self.sealed_keys,
        }

    def prepare(self, plaintext: bytes, final: bool) -> SealedSegment:
        """Seal the next segment without moving the chain: accept() it once it is safely kept."""
        if self.closed:
            raise FormatError("recording already closed" if self.header.consented else "an objection has no audio")
        return seal_segment_at(self.signing_key, self._data_key, self.id, self.index, final, plaintext, self.prev)

    def accept(self, segment: SealedSegment) -> None:
        """Move the chain head past a prepared segment; the final one closes the recording."""
        if segment.index != self.index or segment.statement.prev_hash != self.prev:
            raise FormatError(f"segment {segment.index} is not the next one ({self.index})")
        self.prev = segment.link
        self.index += 1
        if segment.final:
            self.close()

    def seal(self, plaintext: bytes, final: bool) -> SealedSegment:
        """Seal the next segment and advance the chain."""
        segment = self.prepare(plaintext, final)
        self.accept(segment)
        return segment

    def close(self) -> None:
        self.closed = True
        self._data_key = b""  # drop our only reference to the plaintext key
