"""One recording on the device: header, data key, and the encrypt-sign-spool step.

The per-recording data key exists only in this process's memory; what is
written down is the key sealed to the service's evidence public key(s), so a
stolen device (or its spool) cannot decrypt anything it recorded.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime
from typing import IO, Any

import nacl.public

from consent.records import ConsentRecord
from evidence import FORMAT_VERSION, audio
from evidence.chain import SegmentStatement, header_hash, sign_header, sign_statement
from evidence.envelope import new_data_key, seal_segment
from recorder.errors import RecorderError, SpoolFull
from recorder.home import DeviceHome
from recorder.spool import Spool, SpooledRecording

# Headroom kept for a closing final segment when the spool nears its limit.
ENVELOPE_OVERHEAD = 4096


def _header(
    device_id: str, recording_id: uuid.UUID, consent: ConsentRecord, audio_params: dict[str, Any] | None
) -> dict[str, Any]:
    return {
        "version": FORMAT_VERSION,
        "recording_id": str(recording_id),
        "device_id": device_id,
        "started_at": datetime.now(UTC).isoformat(),
        "consent": consent.to_dict(),
        **(audio_params or {}),
    }


def record_objection(home: DeviceHome, spool: Spool, consent: ConsentRecord) -> SpooledRecording:
    """The customer objected: spool a signed objection record, and no audio."""
    recording_id = uuid.uuid4()
    header = _header(home.config()["device_id"], recording_id, consent, None)
    signature = sign_header(home.signing_key(), header)
    return spool.create(
        str(recording_id),
        {"header": header, "header_signature": signature.hex(), "sealed_keys": [], "state": "objected"},
    )


class LiveRecording:
    def __init__(
        self,
        home: DeviceHome,
        spool: Spool,
        consent: ConsentRecord,
        sample_rate: int,
        channels: int,
        segment_seconds: float,
    ) -> None:
        if consent.outcome != "given":
            raise RecorderError("refusing to record without consent")
        evidence_keys = home.evidence_keys()  # fail closed before anything is captured
        self.spool = spool
        self.signing_key = home.signing_key()
        self.id = uuid.uuid4()
        self.sample_rate = sample_rate
        self.channels = channels
        self.frames_per_segment = max(1, round(segment_seconds * sample_rate))
        self._data_key = new_data_key()
        sealed = [
            {"key_id": kid, "sealed": bytes(nacl.public.SealedBox(pk).encrypt(self._data_key)).hex()}
            for kid, pk in evidence_keys.items()
        ]
        params = {"sample_rate": sample_rate, "channels": channels, "segment_seconds": segment_seconds, "codec": "flac"}
        self.header = _header(home.config()["device_id"], self.id, consent, params)
        meta = {
            "header": self.header,
            "header_signature": sign_header(self.signing_key, self.header).hex(),
            "sealed_keys": sealed,
            "state": "recording",
        }
        self.spooled = spool.create(str(self.id), meta)
        self._lock: IO[bytes] | None = self.spooled.lock()
        self._prev = header_hash(self.header)
        self.index = 0
        self.closed = False

    def room_for_next(self) -> bool:
        """Is there room for another full segment and a final one after it?"""
        segment_bytes = self.frames_per_segment * self.channels * 2 + ENVELOPE_OVERHEAD
        try:
            self.spool.check_room(2 * segment_bytes)
        except SpoolFull:
            return False
        return True

    def add(self, pcm: audio.PCM, final: bool) -> int:
        """Encode, encrypt, sign and durably spool one segment; return its size."""
        if self.closed:
            raise RecorderError("recording already closed")
        plaintext = audio.encode(pcm, self.sample_rate)
        envelope = seal_segment(self._data_key, self.id, self.index, final, plaintext)
        statement = SegmentStatement(
            self.id,
            self.index,
            final,
            hashlib.sha256(envelope).digest(),
            hashlib.sha256(plaintext).digest(),
            self._prev,
        )
        signature = sign_statement(self.signing_key, statement)
        self.spooled.write_segment(
            self.index,
            envelope,
            {
                "final": final,
                "ciphertext_sha256": statement.ciphertext_sha256.hex(),
                "plaintext_sha256": statement.plaintext_sha256.hex(),
                "prev_hash": statement.prev_hash.hex(),
                "signature": signature.hex(),
            },
        )
        self.spool.account(len(envelope) + ENVELOPE_OVERHEAD)  # envelope + its statement file
        self._prev = statement.link_hash()
        self.index += 1
        if final:
            self.close()
        return len(envelope)

    def flag_incident(self, category: str) -> None:
        self.spooled.update_meta(incident=category)

    def close(self) -> None:
        self.closed = True
        self._data_key = b""  # drop our only reference to the plaintext key
        self.spooled.update_meta(state="closed")
        if self._lock is not None:
            self._lock.close()
            self._lock = None
