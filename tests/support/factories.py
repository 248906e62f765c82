"""Test factories: a simulated device that builds real signed, encrypted segments.

It uses the same evidence module as the recorder, so what it uploads is exactly
what a device would send; tests can then break one thing at a time.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import nacl.public
import nacl.signing
import numpy as np

from consent.catalogue import builtin_notices, pick
from consent.records import ConsentRecord
from evidence import FORMAT_VERSION, audio
from evidence.chain import SegmentStatement, header_hash, sign_header, sign_statement
from evidence.envelope import new_data_key, seal_segment


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
        rid = uuid.uuid4()
        consent = consent_record(outcome)
        header: dict[str, Any] = {
            "version": FORMAT_VERSION,
            "recording_id": str(rid),
            "device_id": self.id,
            "started_at": datetime.now(UTC).isoformat(),
            "consent": consent.to_dict(),
        }
        if outcome == "given":
            header.update({"sample_rate": self.rate, "channels": 1, "segment_seconds": 1.0, "codec": "flac"})
        key = new_data_key()
        sealed_keys = (
            [
                {"key_id": kid, "sealed": bytes(nacl.public.SealedBox(nacl.public.PublicKey(pk)).encrypt(key)).hex()}
                for kid, pk in self.evidence_keys.items()
            ]
            if outcome == "given" and sealed
            else []
        )
        return SimRecording(rid, header, sign_header(self.signing_key, header), sealed_keys, key)

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
        envelope = seal_segment(key or rec.data_key, rec.id, index, final, plaintext)
        st = SegmentStatement(
            rec.id, index, final, hashlib.sha256(envelope).digest(), hashlib.sha256(plaintext).digest(), prev
        )
        headers = {
            "X-Segment-Final": "1" if final else "0",
            "X-Plaintext-Sha256": st.plaintext_sha256.hex(),
            "X-Prev-Hash": prev.hex(),
            "X-Signature": sign_statement(self.signing_key, st).hex(),
            "X-Link": st.link_hash().hex(),  # not sent by real devices; the server ignores it
        }
        return UploadSegment(index, final, envelope, headers, pcm)

    def segment_headers(self, seg: UploadSegment) -> dict[str, str]:
        return {**self.auth, "Content-Type": "application/octet-stream", **seg.headers}
