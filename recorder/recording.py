"""One recording on the device: header, data key, and the encrypt-sign-spool step.

The per-recording data key exists only in this process's memory; what is
written down is the key sealed to the service's evidence public key(s), so a
stolen device (or its spool) cannot decrypt anything it recorded.
"""

from __future__ import annotations

import uuid
from typing import IO

from consent.records import ConsentRecord
from evidence import audio
from evidence.writer import RecordingWriter
from recorder.errors import RecorderError, SpoolFull
from recorder.home import DeviceHome
from recorder.spool import Spool, SpooledRecording

# Headroom kept for a closing final segment when the spool nears its limit.
ENVELOPE_OVERHEAD = 4096


def record_objection(home: DeviceHome, spool: Spool, consent: ConsentRecord) -> SpooledRecording:
    """The customer objected: spool a signed objection record, and no audio."""
    writer = RecordingWriter.start(home.signing_key(), home.config()["device_id"], consent.to_dict(), {})
    return spool.create(str(writer.id), {**writer.create_body(), "state": "objected"})


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
        self.sample_rate = sample_rate
        self.channels = channels
        self.frames_per_segment = max(1, round(segment_seconds * sample_rate))
        # The writer holds the data key (in memory only) and the chain head; the spool gets
        # the create body (header, its signature, the sealed keys) and, per segment, ciphertext.
        self._writer = RecordingWriter.start(
            home.signing_key(),
            home.config()["device_id"],
            consent.to_dict(),
            evidence_keys,
            sample_rate=sample_rate,
            channels=channels,
            segment_seconds=segment_seconds,
        )
        self.id: uuid.UUID = self._writer.id
        self.header = self._writer.header_dict
        self.spooled = spool.create(str(self.id), {**self._writer.create_body(), "state": "recording"})
        self._lock: IO[bytes] | None = self.spooled.lock()
        self.closed = False

    @property
    def index(self) -> int:
        """The next segment's index."""
        return self._writer.index

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
        sealed = self._writer.prepare(plaintext, final)
        statement = sealed.statement
        self.spooled.write_segment(
            sealed.index,
            sealed.envelope,
            {
                "final": final,
                "ciphertext_sha256": statement.ciphertext_sha256.hex(),
                "plaintext_sha256": statement.plaintext_sha256.hex(),
                "prev_hash": statement.prev_hash.hex(),
                "signature": sealed.signed.signature.hex(),
            },
        )
        # The chain moves only once the segment is durably spooled: a failed write leaves
        # the next add() to seal the same index again.
        self._writer.accept(sealed)
        self.spool.account(len(sealed.envelope) + ENVELOPE_OVERHEAD)  # envelope + its statement file
        if final:
            self.close()
        return len(sealed.envelope)

    def flag_incident(self, category: str) -> None:
        self.spooled.update_meta(incident=category)

    def close(self) -> None:
        self.closed = True
        self._writer.close()  # drops our only reference to the plaintext key
        self.spooled.update_meta(state="closed")
        if self._lock is not None:
            self._lock.close()
            self._lock = None
