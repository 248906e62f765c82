"""Reading evidence back: verify everything, then decrypt, then release.

Nothing is released until every segment's header and segment signatures, chain
links, anchors and stored ciphertext hash have passed. open_segments and
read_audio then check each segment's AEAD (which binds recording id, index and
final flag) and plaintext hash in memory before returning anything; a streamed
read (prepare_audio, VerifiedAudio.chunks: notes below) checks them segment by
segment as it goes, and a failure ends the stream incomplete. Either way a
single failure raises IntegrityError; the caller never receives altered audio
as a complete file.
"""

from __future__ import annotations

import hashlib
import itertools
import threading
import uuid
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

import nacl.bindings as sodium
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
from evidence.envelope import HEADER_BYTES, TAG_BYTES, check_envelope, open_segment
from evidence.errors import FormatError, IntegrityError, NoAudio


def segments_of(session: Session, recording_id: str) -> list[Segment]:
    return list(session.scalars(select(Segment).where(Segment.recording_id == recording_id).order_by(Segment.index)))


def verify_recording_chain(
    session: Session, recording: Recording, rows: list[Segment] | None = None, *, anchored: bool = True
) -> list[Segment]:
    """Check the signed chain as stored in the database; return the segments in order (`rows`, if given).

    anchored=False skips the check against the sealed audit log (api.anchors), which needs the
    service's key: only an offline recovery without the service (api.recovery) reads that way."""
    device = session.get(Device, recording.device_id)
    if device is None or device.public_key is None:
        raise IntegrityError("the recording's device key is unknown")
    if rows is None:
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
    if anchored:
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


AudioState = Literal["recorded", "objection", "none"]


def audio_state(recording: Recording) -> AudioState:
    """What a recording holds, as listings show it (the database's word; a read verifies it first):
    "recorded" (segments arrived), "objection" (the customer objected: nothing was recorded), or
    "none" (consent given, but no segment arrived: capture failed, or it is still open)."""
    if recording.consent_outcome != "given":
        return "objection"
    return "recorded" if recording.segment_count > 0 else "none"


def no_audio(recording: Recording, status: str | None = None) -> NoAudio:
    """Why a verified recording without segments has no audio, in words an officer can act on.

    Called only once verify_recording_chain passed: the chain, the anchors and the audit log agree
    that no segment was ever received, so this is what the recording is, not tampering. Whether it
    is an objection comes from the device-signed header, never from the (unsigned) database row.
    """
    signed = recording.header.get("consent", {}).get("outcome")
    if signed != recording.consent_outcome:
        # The row was relabelled (e.g. a consented recording made to look like an objection).
        raise IntegrityError(f"the database says consent {recording.consent_outcome}, the signed header {signed}")
    if signed != "given":
        return NoAudio("this is an objection record: the customer objected, and nothing was recorded")
    status = status or recording.status
    if status == "open":
        return NoAudio("no audio has arrived yet: the recording is open and holds no segment")
    return NoAudio(f"no audio was captured: the recording is {status} and holds no segment")


def open_segments(
    session: Session, store: BlobStore, keys: KeyCustodian, recording: Recording
) -> list[tuple[Segment, bytes]]:
    """Every segment's plaintext (the FLAC the device hashed), after verifying all of them."""
    rows = verify_recording_chain(session, recording)
    if not rows:
        return []
    data_key = keys.unseal({k.key_id: k.sealed for k in recording.sealed_keys})
    rid = uuid.UUID(recording.id)
    opened = []
    for row in rows:
        opened.append((row, _open(data_key, rid, row, fetch_envelope(store, row))))
    return opened


def joined_audio(recording: Recording, opened: list[tuple[Segment, bytes]], fmt: str) -> tuple[bytes, int]:
    """The segments as one file (encoded audio, frames); every segment must have the header's rate."""
    expected_rate = int(recording.header["sample_rate"])
    parts = []
    for row, plaintext in opened:
        pcm, rate = audio.decode(plaintext)
        if rate != expected_rate:
            raise IntegrityError(f"segment {row.index} has sample rate {rate}, header says {expected_rate}")
        parts.append(pcm)
    samples = np.concatenate(parts)
    return audio.encode(samples, expected_rate, fmt), len(samples)


def read_audio(
    session: Session, store: BlobStore, keys: KeyCustodian, recording: Recording, fmt: str
) -> tuple[bytes, int]:
    """Return (encoded audio, frames) after verifying every segment."""
    opened = open_segments(session, store, keys, recording)
    if not opened:
        raise no_audio(recording)
    return joined_audio(recording, opened, fmt)


# --------------------------------------------------------------------------- streamed reads
#
# read_audio above is the whole recording in memory (the reference the tests and bench/retrieval.py
# compare with). A read through the API streams instead, in two phases:
#
# 1. prepare_audio, before the response starts (any failure: 409, nothing sent): the signatures,
#    chain links and anchors (verify_recording_chain), then one pass over the store hashing every
#    ciphertext against the hash its device signed, one object in memory at a time. The same pass
#    reads each segment's STREAMINFO, which gives the exact frame count a WAV header and FLAC's
#    STREAMINFO must carry before the first byte (_peek). Segment 0 is opened in full (AEAD,
#    plaintext hash, decoding), so a wrong data key or a replayed envelope is still a 409.
# 2. VerifiedAudio.chunks, while streaming: each segment is fetched again, its ciphertext hash,
#    AEAD and plaintext hash checked, decoded, checked against the rate, channels and frame count
#    announced, and only then encoded and handed out. A failure raises IntegrityError there; the
#    route audits it and the server aborts the response, so the client never gets a complete file.
#    The fetching, checking and decoding run a few segments ahead (READ_AHEAD) in worker threads,
#    beside the encoding and sending of the segment before; a failure is still raised in its turn.
#
# Why peek rather than decrypt everything twice: the AEAD and the plaintext hash over the whole
# recording are ~0.3 s per hour of audio on one core (what phase 2 spends anyway), which would all
# come before the first byte. The peek costs microseconds a segment, and it is safe: ChaCha20 is
# a stream cipher, so the first 42 plaintext bytes are fixed by the ciphertext, whose hash was just
# verified against the device's signature. If the segment later fails its tag or plaintext hash the
# stream fails; if it passes, the peeked STREAMINFO is the verified plaintext's, and its decoded
# frame count is checked against it again. What the header announces is therefore either exactly
# what follows, or the response is cut off. Each object is read twice (hashed, then streamed: a
# segment is ~130 KB); nothing is kept between the phases but the verified hashes and frame counts.


# Streaming (VerifiedAudio.chunks): segments opened ahead of the one being sent, and by how many
# threads (libsodium, hashlib and libsndfile release the GIL). A segment is ~130 KB of envelope and
# ~160 KB of PCM, so the read-ahead holds a few MB at most, whatever the recording's length.
READ_AHEAD = 6
READ_WORKERS = 2


@dataclass(frozen=True)
class _Part:
    """One segment as the stream needs it: plain data, so no ORM row outlives the request's session."""

    index: int
    final: bool
    object_key: str
    ciphertext_sha256: bytes
    plaintext_sha256: bytes
    frames: int


def fetch_envelope(store: BlobStore, part: _Part | Segment) -> bytes:
    """The stored envelope, checked against the ciphertext hash the device signed."""
    try:
        envelope = store.get(part.object_key)
    except ObjectMissing as exc:
        raise IntegrityError(f"segment {part.index} is missing from the store") from exc
    if hashlib.sha256(envelope).digest() != part.ciphertext_sha256:
        raise IntegrityError(f"segment {part.index} in the store is not the one the device signed")
    return envelope


def _open(data_key: bytes, rid: uuid.UUID, part: _Part | Segment, envelope: bytes) -> bytes:
    plaintext = open_segment(data_key, rid, part.index, part.final, envelope)
    if hashlib.sha256(plaintext).digest() != part.plaintext_sha256:
        raise IntegrityError(f"segment {part.index} decrypts to audio the device did not sign")
    return plaintext


def _peek(data_key: bytes, envelope: bytes) -> bytes:
    """The envelope's first STREAMINFO_END plaintext bytes, NOT authenticated (see the notes above).

    XChaCha20-Poly1305 encrypts by XOR with a keystream fixed by key and nonce, so encrypting
    zeros under the envelope's own nonce yields that keystream (and a tag, dropped). Nothing
    encrypted this way ever leaves this function.
    """
    check_envelope(envelope)
    body = envelope[HEADER_BYTES:-TAG_BYTES][: audio.STREAMINFO_END]
    keystream = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(
        bytes(len(body)), None, envelope[1:HEADER_BYTES], data_key
    )[: len(body)]
    return (int.from_bytes(body, "big") ^ int.from_bytes(keystream, "big")).to_bytes(len(body), "big")


def _decoded(recording_rate: int, channels: int | None, part: _Part | Segment, plaintext: bytes) -> audio.PCM:
    pcm, rate = audio.decode(plaintext)
    if rate != recording_rate:
        raise IntegrityError(f"segment {part.index} has sample rate {rate}, header says {recording_rate}")
    if channels is not None and pcm.shape[1] != channels:
        raise IntegrityError(f"segment {part.index} has {pcm.shape[1]} channels, segment 0 has {channels}")
    return pcm


@dataclass
class VerifiedAudio:
    """A recording whose every signature, link, anchor and ciphertext hash checked out; streamed by chunks()."""

    fmt: str
    rate: int
    channels: int
    frames: int
    length: int | None  # the exact byte length when the format allows knowing it now (WAV), else None
    _store: BlobStore
    _data_key: bytes
    _rid: uuid.UUID
    _parts: list[_Part]
    _first: audio.PCM  # segment 0, opened and decoded before the response started

    def chunks(self) -> Iterator[bytes]:
        """The file, a segment at a time; IntegrityError (and no more bytes) if a segment fails its checks.

        Segments are fetched, checked and decoded ahead, in order, by a few worker threads (at most
        READ_AHEAD segments beyond the one being sent, so memory stays flat in the length), while
        this thread encodes and hands out the one before. Nothing is handed out before its own
        checks passed: a segment's failure is raised when its turn comes, after the segments
        before it and before any after it, exactly as a one-at-a-time loop would.
        """
        flac = audio.FlacStream(self.rate, self.channels, self.frames) if self.fmt == "flac" else None
        if flac is None:
            yield audio.wav_header(self.frames, self.rate, self.channels)
        first, self._first = self._first, self._first[:0]  # released once used
        rest = iter(self._parts[1:])  # segment 0 was opened and decoded before the response started
        workers = ThreadPoolExecutor(max_workers=READ_WORKERS, thread_name_prefix="segment-open")
        ahead: deque[tuple[_Part, Future[audio.PCM]]] = deque()
        try:
            part, pcm = self._parts[0], first
            while True:
                if len(pcm) != part.frames:
                    raise IntegrityError(
                        f"segment {part.index} decodes to {len(pcm)} frames, its STREAMINFO says {part.frames}"
                    )
                chunk = audio.pcm_bytes(pcm) if flac is None else flac.write(pcm)
                del pcm
                if chunk:
                    yield chunk
                # Topped up once the chunk is out: the first byte never waits behind the workers.
                for following in itertools.islice(rest, READ_AHEAD - len(ahead)):
                    ahead.append((following, workers.submit(self._segment, following)))
                if not ahead:
                    break
                part, future = ahead.popleft()
                pcm = future.result()  # the worker's IntegrityError, if this segment failed, is raised here
                del future
        finally:
            for _, pending in ahead:
                pending.cancel()
            workers.shutdown(wait=False, cancel_futures=True)
        if flac is not None:
            yield flac.close()

    def _segment(self, part: _Part) -> audio.PCM:
        """One segment fetched again, its ciphertext hash, AEAD, plaintext hash, rate and channels checked."""
        plaintext = _open(self._data_key, self._rid, part, fetch_envelope(self._store, part))
        return _decoded(self.rate, self.channels, part, plaintext)


class _HashPass(threading.Thread):
    """Every object hashed against the hash its device signed, one in memory at a time (phase 1).

    It runs beside the signature and anchor checks (hashlib, file and socket reads, and libsodium
    release the GIL), on plain values only, never the session. It keeps what the peek needs of
    each envelope (nonce and the start of the ciphertext) and segment 0 whole; it stops at the
    first failure, as a sequential pass would.
    """

    def __init__(self, store: BlobStore, rows: list[Segment]) -> None:
        super().__init__(name="hash-pass", daemon=True)
        self.store = store
        self.todo = [(r.index, r.object_key, r.ciphertext_sha256) for r in rows]
        self.heads: list[bytes] = []
        self.first = b""
        self.error: IntegrityError | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        for index, key, digest in self.todo:
            if self.stop.is_set():
                return
            try:
                envelope = self.store.get(key)
            except ObjectMissing:
                self.error = IntegrityError(f"segment {index} is missing from the store")
                return
            if hashlib.sha256(envelope).digest() != digest:
                self.error = IntegrityError(f"segment {index} in the store is not the one the device signed")
                return
            if index == 0:
                self.first = envelope
            # What _peek reads: version and nonce, the ciphertext's first bytes, a stand-in for the tag.
            short = len(envelope) < HEADER_BYTES + TAG_BYTES  # kept whole: _peek refuses it (FormatError)
            body = envelope[HEADER_BYTES : min(HEADER_BYTES + audio.STREAMINFO_END, len(envelope) - TAG_BYTES)]
            self.heads.append(envelope if short else envelope[:HEADER_BYTES] + body + bytes(TAG_BYTES))

    def result(self) -> list[bytes]:
        self.join()
        if self.error is not None:
            raise self.error
        return self.heads


def prepare_audio(
    session: Session, store: BlobStore, keys: KeyCustodian, recording: Recording, fmt: str, status: str | None = None
) -> VerifiedAudio:
    """Everything checkable before the first byte (phase 1 above), and what the stream needs after it.

    The hash pass over the store runs beside the signature and anchor checks; their failures are
    reported first, then the store's, so the answer is the same as checking one after the other.
    A recording that verifies and has no segment raises NoAudio (no_audio; `status` is the one shown).
    """
    rows = segments_of(session, recording.id)
    hashing = _HashPass(store, rows)
    hashing.start()
    try:
        verify_recording_chain(session, recording, rows)
    except BaseException:
        hashing.stop.set()
        raise
    heads = hashing.result()
    if not rows:
        raise no_audio(recording, status)
    data_key = keys.unseal({k.key_id: k.sealed for k in recording.sealed_keys})
    rid = uuid.UUID(recording.id)
    rate = int(recording.header["sample_rate"])
    parts: list[_Part] = []
    channels: set[int] = set()
    first: audio.PCM | None = None
    for row, head in zip(rows, heads, strict=True):
        if row.index == 0:
            first = _decoded(rate, None, row, _open(data_key, rid, row, hashing.first))
            frames = len(first)
            channels.add(first.shape[1])
        else:
            info = audio.stream_info(_peek(data_key, head))
            if info is None or info.frames == 0:
                # Not a FLAC stream that states its length (no device makes one): count it the
                # slow way, from its verified plaintext. It is opened again when streamed.
                pcm = _decoded(rate, None, row, _open(data_key, rid, row, fetch_envelope(store, row)))
                frames = len(pcm)
                channels.add(pcm.shape[1])
            else:
                if info.sample_rate != rate:
                    raise IntegrityError(f"segment {row.index} has sample rate {info.sample_rate}, header says {rate}")
                frames = info.frames
                channels.add(info.channels)
        if len(channels) > 1:
            raise IntegrityError(f"segment {row.index} does not have the channels of the segments before it")
        parts.append(_Part(row.index, row.final, row.object_key, row.ciphertext_sha256, row.plaintext_sha256, frames))
    assert first is not None  # rows start at segment 0: verify_recording_chain checked the indexes
    total = sum(p.frames for p in parts)
    (count,) = channels
    length = audio.WAV_HEADER_BYTES + total * 2 * count if fmt == "wav" else None
    if fmt == "wav":
        audio.wav_header(total, rate, count)  # raises now, not mid-stream, if it cannot hold them
    return VerifiedAudio(fmt, rate, count, total, length, store, data_key, rid, parts, first)
