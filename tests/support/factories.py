"""Test factories: a simulated device that builds real signed, encrypted segments.

It builds headers, sealed keys and segments with the recorder's own writer
(evidence.writer), so what it uploads is exactly what a device would send; its
records stay plain mutable data so tests can then break one thing at a time.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import nacl.public
import nacl.signing
import numpy as np

from consent.catalogue import builtin_notices, pick
from consent.records import ConsentRecord
from evidence import audio, wire
from evidence.chain import header_hash
from evidence.envelope import new_data_key
from evidence.writer import RecordingWriter, seal_segment_at


def consent_record(outcome: str = "given", language: str = "en") -> ConsentRecord:
    now = datetime.now(UTC)
    notice = pick(list(builtin_notices()), language)
    return ConsentRecord.for_notice(
        notice, method="displayed", presented_at=now, decided_at=now, outcome=outcome, staff_code="S-001"
    )


def tone(seconds: float, rate: int = 16000, freq: float = 440.0, seed: int = 0) -> audio.PCM:
    """Deterministic test audio: a tone plus a little seeded noise, int16 mono (frames, 1)."""
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(seed)
    wave = 0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(len(t))
    return (wave * 32767).astype(np.int16).reshape(-1, 1)


@dataclass
class UploadSegment:
    index: int
    final: bool
    envelope: bytes
    headers: dict[str, str]
    pcm: audio.PCM


@dataclass
class SimRecording:
    id: uuid.UUID
    header: dict[str, Any]
    header_signature: bytes
    sealed_keys: list[dict[str, str]]
    data_key: bytes
    segments: list[UploadSegment] = field(default_factory=list)

    def create_body(self) -> dict[str, Any]:
        return {"header": self.header, "header_signature": self.header_signature.hex(), "sealed_keys": self.sealed_keys}


@dataclass
class SimDevice:
    id: str
    token: str
    signing_key: nacl.signing.SigningKey
    evidence_keys: dict[str, bytes]
    rate: int = 16000

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def new_recording(self, outcome: str = "given", sealed: bool = True) -> SimRecording:
        consent = consent_record(outcome)
        # The writer refuses to seal to nobody; unsealed recordings (for refusal tests) are
        # sealed to a throwaway key and sent with none.
        keys: dict[str, Any] = {**self.evidence_keys} or {"-": nacl.public.PrivateKey.generate().public_key}
        writer = RecordingWriter.start(
            self.signing_key, self.id, consent.to_dict(), keys, sample_rate=self.rate, channels=1, segment_seconds=1.0
        )
        sealed_keys = writer.sealed_keys if sealed and self.evidence_keys else []
        key = writer.data_key or new_data_key()  # objection records have none; segments forged onto one need one
        return SimRecording(writer.id, writer.header_dict, writer.header_signature, sealed_keys, key)

    def add_segments(self, rec: SimRecording, count: int, seconds: float = 1.0, final: bool = True) -> None:
        """Append `count` chained segments; the last is final when `final`."""
        start = len(rec.segments)
        for i in range(count):
            prev = bytes.fromhex(rec.segments[-1].headers["X-Link"]) if rec.segments else header_hash(rec.header)
            pcm = tone(seconds, self.rate, seed=start + i)
            rec.segments.append(self.make_segment(rec, start + i, final and i == count - 1, pcm, prev))

    def make_segment(
        self, rec: SimRecording, index: int, final: bool, pcm: audio.PCM, prev: bytes, key: bytes | None = None
    ) -> UploadSegment:
        plaintext = audio.encode(pcm, self.rate)
        sealed = seal_segment_at(self.signing_key, key or rec.data_key, rec.id, index, final, plaintext, prev)
        headers = {
            **sealed.upload_headers(),
            "X-Link": sealed.link.hex(),  # not sent by real devices; the server ignores it
        }
        return UploadSegment(index, final, sealed.envelope, headers, pcm)

    def segment_headers(self, seg: UploadSegment) -> dict[str, str]:
        return {**self.auth, "Content-Type": wire.SEGMENT_CONTENT_TYPE, **seg.headers}
