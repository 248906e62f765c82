"""Streamed reads (POST /v1/evidence/{id}/audio): verified before the first byte, checked while streaming.

Everything checkable without decrypting (signatures, links, anchors, every stored
ciphertext's hash) is checked before the response starts, so those failures stay a
409 with no audio (tests/api/test_tamper.py). A segment that fails only once it is
decrypted (its AEAD, its plaintext hash) ends the stream incomplete and is audited:
in process the route raises; through the real server (uvicorn) the client sees the
connection close before the response is complete, for WAV (Content-Length) and FLAC
(chunked) alike.
"""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import subprocess
import threading
import types
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from api.core.models import Recording
from api.core.storage import BlobStore
from api.retrieval import READ_AHEAD, VerifiedAudio, prepare_audio, read_audio
from api.routes.evidence import ReleaseAborted
from evidence import audio
from evidence.chain import SegmentStatement, SignedSegment, header_hash, sign_statement
from evidence.envelope import new_data_key, seal_segment
from evidence.errors import IntegrityError
from evidence.writer import SealedSegment
from tests.api.test_tamper import (
    PURPOSE,
    assert_refused_read,
    expected_pcm,
    log_entries,
    open_recording,
    put_segment,
    services,
    upload,
)
from tests.client.conftest import enrol
from tests.conftest import Deployment, World, bearer
from tests.support.factories import SimDevice, SimRecording, UploadSegment, tone

# --------------------------------------------------------------------------- helpers


def forged(
    dev: SimDevice,
    rec: SimRecording,
    index: int,
    final: bool,
    plaintext: bytes,
    *,
    key: bytes | None = None,
    bound_to: int | None = None,
    claimed_plaintext_sha256: bytes | None = None,
    pcm: audio.PCM | None = None,
) -> UploadSegment:
    """A segment the device's own key signs (so the service accepts it at upload) that is wrong inside.

    With `key`, the envelope is sealed under another data key; with `bound_to`, its AEAD is
    bound to another index (both fail the AEAD at read); with `claimed_plaintext_sha256`, the
    statement names a plaintext the envelope does not hold.
    """
    prev = bytes.fromhex(rec.segments[-1].headers["X-Link"]) if rec.segments else header_hash(rec.header)
    envelope = seal_segment(key or rec.data_key, rec.id, index if bound_to is None else bound_to, final, plaintext)
    statement = SegmentStatement(
        rec.id,
        index,
        final,
        hashlib.sha256(envelope).digest(),
        claimed_plaintext_sha256 or hashlib.sha256(plaintext).digest(),
        prev,
    )
    sealed = SealedSegment(envelope, SignedSegment(statement, sign_statement(dev.signing_key, statement)))
    headers = {**sealed.upload_headers(), "X-Link": sealed.link.hex()}
    return UploadSegment(index, final, envelope, headers, pcm if pcm is not None else tone(0.0))


def recording_with(client: TestClient, dev: SimDevice, good: int, last: UploadSegment | None) -> SimRecording:
    """`good` genuine segments, then `last` (final) if given; uploaded."""
    rec = dev.new_recording()
    dev.add_segments(rec, good, final=last is None)
    if last is not None:
        rec.segments.append(last)
    upload(client, dev, rec)
    return rec


def bad_plaintext_hash(dev: SimDevice, rec: SimRecording, index: int) -> UploadSegment:
    pcm = tone(1.0, seed=50)
    return forged(dev, rec, index, True, audio.encode(pcm, dev.rate), claimed_plaintext_sha256=bytes(32), pcm=pcm)


def bound_elsewhere(dev: SimDevice, rec: SimRecording, index: int) -> UploadSegment:
    pcm = tone(1.0, seed=51)
    return forged(dev, rec, index, True, audio.encode(pcm, dev.rate), bound_to=index + 1, pcm=pcm)


def stream_read(client: TestClient, token: str, rid: uuid.UUID, fmt: str) -> tuple[httpx.Response, bytes]:
    with client.stream(
        "POST", f"/v1/evidence/{rid}/audio", json={"purpose": PURPOSE, "format": fmt}, headers=bearer(token)
    ) as reply:
        return reply, reply.read()


def in_memory(client: TestClient, rid: uuid.UUID, fmt: str) -> bytes:
    """The same recording read the old way, all in memory (api.retrieval.read_audio)."""
    svc = services(client)
    with svc.sessions() as session:
        recording = session.get(Recording, str(rid))
        assert recording is not None
        data, _ = read_audio(session, svc.store, svc.keys, recording, fmt)
        return data


INTEGRITY, EXPLAINED = "Integrity check failed", "the evidence was altered, reordered or is incomplete"

# FLAC STREAMINFO bytes that only the encoder's final rewrite could fill (min/max frame size, MD5):
# a stream sent as it is encoded leaves them 0 ("unknown"). Everything else is the same bytes.
UNKNOWN_UNTIL_THE_END = set(range(12, 18)) | set(range(26, 42))


# --------------------------------------------------------------------------- what is released


@pytest.mark.parametrize("fmt", ["flac", "wav"])
def test_streamed_audio_is_exactly_the_recorded_audio(client: TestClient, world: World, fmt: str) -> None:
    dev = world.device
    rec = dev.new_recording()
    dev.add_segments(rec, 3, final=False)
    short = tone(0.37, seed=9)  # a last segment shorter than the others, as when recording stops
    rec.segments.append(dev.make_segment(rec, 3, True, short, bytes.fromhex(rec.segments[-1].headers["X-Link"])))
    upload(client, dev, rec)

    reply, data = stream_read(client, world.officer, rec.id, fmt)
    assert reply.status_code == 200, data[:200]
    assert reply.headers["content-type"] == audio.media_type(fmt)
    frames = 3 * 16000 + len(short)
    assert reply.headers["x-countersign-frames"] == str(frames)
    pcm, rate = audio.decode(data)
    assert rate == 16000 and len(pcm) == frames
    np.testing.assert_array_equal(pcm, expected_pcm(rec))

    old = in_memory(client, rec.id, fmt)
    if fmt == "wav":  # the size is known up front, and the file is byte for byte the old one
        assert reply.headers["content-length"] == str(len(data)) == str(44 + 2 * frames)
        assert data == old
    else:  # chunked; the audio frames are the old ones byte for byte, STREAMINFO names the total
        assert "content-length" not in reply.headers
        assert len(data) == len(old)
        assert {i for i in range(len(data)) if data[i] != old[i]} <= UNKNOWN_UNTIL_THE_END
        info = audio.stream_info(data[: audio.STREAMINFO_END])
        assert info == audio.StreamInfo(16000, 1, 16, frames)


def test_a_segment_that_is_not_flac_is_counted_from_its_verified_plaintext(client: TestClient, world: World) -> None:
    """A plaintext without a FLAC STREAMINFO (here a WAV, which decode accepts) is opened in full up front."""
    dev = world.device
    rec = dev.new_recording()
    dev.add_segments(rec, 2, final=False)
    pcm = tone(0.5, seed=21)
    rec.segments.append(forged(dev, rec, 2, True, audio.encode(pcm, dev.rate, "wav"), pcm=pcm))
    upload(client, dev, rec)
    for fmt in ("flac", "wav"):
        reply, data = stream_read(client, world.officer, rec.id, fmt)
        assert reply.status_code == 200
        np.testing.assert_array_equal(audio.decode(data)[0], expected_pcm(rec))


# --------------------------------------------------------------------------- refused before the first byte


@pytest.mark.parametrize("fmt", ["flac", "wav"])
def test_tampered_last_ciphertext_is_refused_before_the_first_byte(client: TestClient, world: World, fmt: str) -> None:
    """Streaming changes nothing here: the hash pass covers the last segment before anything is sent."""
    rec = recording_with(client, world.device, 6, None)
    store = services(client).store
    key = f"recordings/{rec.id}/000005.seg"
    data = bytearray(store.get(key))
    data[-3] ^= 0x40
    store.put(key, bytes(data))
    assert_refused_read(client, world, rec.id, "segment 5 in the store is not the one the device signed", fmt=fmt)


def test_a_sample_rate_change_is_refused_before_the_first_byte(client: TestClient, world: World) -> None:
    """STREAMINFO states each segment's rate, so a segment at another rate is found by the hash pass too."""
    dev = world.device
    rec = dev.new_recording()
    dev.add_segments(rec, 2, final=False)
    slow = dataclasses.replace(dev, rate=8000)
    rec.segments.append(
        slow.make_segment(rec, 2, True, tone(1.0, 8000), bytes.fromhex(rec.segments[-1].headers["X-Link"]))
    )
    upload(client, dev, rec)
    assert_refused_read(client, world, rec.id, "segment 2 has sample rate 8000, header says 16000")


def test_a_segment_under_another_data_key_is_refused_before_the_first_byte(client: TestClient, world: World) -> None:
    """Its STREAMINFO does not decrypt to one, so it is opened in full up front, and its AEAD fails there."""
    dev = world.device
    rec = dev.new_recording()
    dev.add_segments(rec, 2, final=False)
    rec.segments.append(forged(dev, rec, 2, True, audio.encode(tone(1.0), dev.rate), key=new_data_key()))
    upload(client, dev, rec)
    assert_refused_read(client, world, rec.id, "segment 2 does not decrypt")


# --------------------------------------------------------------------------- failed while streaming


@pytest.mark.parametrize(
    ("forge", "message"),
    [
        pytest.param(bad_plaintext_hash, "segment 3 decrypts to audio the device did not sign", id="plaintext-hash"),
        pytest.param(bound_elsewhere, "segment 3 does not decrypt", id="aead"),
    ],
)
@pytest.mark.parametrize("fmt", ["flac", "wav"])
def test_a_segment_failing_after_decryption_aborts_the_stream_and_is_audited(
    client: TestClient,
    world: World,
    forge: Callable[[SimDevice, SimRecording, int], UploadSegment],
    message: str,
    fmt: str,
) -> None:
    dev = world.device
    rec = dev.new_recording()
    dev.add_segments(rec, 3, final=False)
    rec.segments.append(forge(dev, rec, 3))
    open_recording(client, dev, rec)
    for seg in rec.segments:  # the service cannot decrypt at upload: it accepts every one
        assert put_segment(client, dev, rec.id, seg.index, seg.envelope, seg.headers).status_code == 201

    before = {e.seq for e in log_entries(client, rec.id)}
    url = f"/v1/evidence/{rec.id}/audio"
    with client.stream("POST", url, json={"purpose": PURPOSE, "format": fmt}, headers=bearer(world.officer)) as reply:
        assert reply.status_code == 200  # everything checkable before decryption passed
        with pytest.raises(ReleaseAborted, match=message):
            reply.read()

    new = [e for e in log_entries(client, rec.id) if e.seq not in before]
    assert [(e.action, e.outcome) for e in new] == [
        ("api:evidence:read", "allowed"),
        ("api:evidence:integrity", "failed"),
    ]
    read_entry, failure = new
    assert read_entry.purpose == PURPOSE and failure.actor == read_entry.actor
    assert failure.detail == {"error": f"{INTEGRITY}; {EXPLAINED}: {message}", "read": read_entry.seq, "streamed": True}


def _forged_recording(deployment: Deployment) -> SimRecording:
    """Through the real server: three good segments, then one whose plaintext hash the device mis-signed."""
    with httpx.Client(base_url=deployment.server.url, headers=bearer(deployment.admin_token), timeout=30) as api:
        dev = enrol(api, "counter-forger", "tokyo")
    rec = dev.new_recording()
    dev.add_segments(rec, 3, final=False)
    rec.segments.append(bad_plaintext_hash(dev, rec, 3))
    with httpx.Client(base_url=deployment.server.url, headers=dev.auth, timeout=30) as http:
        assert http.post("/v1/recordings", json=rec.create_body()).status_code == 201
        for seg in rec.segments:
            reply = http.put(
                f"/v1/recordings/{rec.id}/segments/{seg.index}", content=seg.envelope, headers=dev.segment_headers(seg)
            )
            assert reply.status_code == 201, reply.text
    return rec


def test_through_uvicorn_a_failed_stream_is_cut_off_not_completed(deployment: Deployment) -> None:
    """The real server aborts the response: httpx raises for chunked FLAC and for WAV short of its length."""
    rec = _forged_recording(deployment)
    url = f"{deployment.server.url}/v1/evidence/{rec.id}/audio"
    for fmt, framing in (("flac", "incomplete chunked read"), ("wav", "received")):
        received = 0
        body = {"purpose": PURPOSE, "format": fmt}
        with (
            httpx.Client(headers=bearer(deployment.officer_token), timeout=30) as http,
            http.stream("POST", url, json=body) as reply,
        ):
            assert reply.status_code == 200
            assert ("content-length" in reply.headers) == (fmt == "wav")
            with pytest.raises(httpx.RemoteProtocolError, match=framing):
                for chunk in reply.iter_bytes():
                    received += len(chunk)
        assert received > 0  # segments 0-2 were streamed before segment 3 failed
        if fmt == "wav":
            assert received < int(reply.headers["content-length"])

    # Both failures are in the log, each after its read.
    with httpx.Client(base_url=deployment.server.url, headers=bearer(deployment.officer_token), timeout=30) as http:
        custody = http.get(f"/v1/audit/custody/{rec.id}").json()
    actions = [(e["action"], e["outcome"]) for e in custody]
    assert actions[-4:] == [("api:evidence:read", "allowed"), ("api:evidence:integrity", "failed")] * 2

    # And the server still serves: the connection was dropped, not the process.
    assert httpx.get(f"{deployment.server.url}/healthz", timeout=5).status_code == 200


@pytest.mark.skipif(shutil.which("sox") is None, reason="sox is not installed")
def test_sox_decodes_the_streamed_flac_to_the_recorded_samples(
    client: TestClient, world: World, tmp_path: Path
) -> None:
    """Another reader than libsndfile: sox takes the unknown frame sizes and MD5 in its stride."""
    rec = recording_with(client, world.device, 3, None)
    reply, data = stream_read(client, world.officer, rec.id, "flac")
    assert reply.status_code == 200
    flac = tmp_path / "streamed.flac"
    flac.write_bytes(data)
    raw = subprocess.run(
        ["sox", str(flac), "-t", "raw", "-e", "signed", "-b", "16", "-L", "-"], capture_output=True, check=True
    ).stdout
    np.testing.assert_array_equal(np.frombuffer(raw, dtype="<i2"), expected_pcm(rec)[:, 0])


# --------------------------------------------------------------------------- read ahead
#
# VerifiedAudio.chunks opens segments ahead of the one it sends, in worker threads. What an insider
# with write access to the store would try: swap an object once the checks before the first byte
# have passed, so the read-ahead picks it up. Every segment is fetched again and checked where it
# is opened, and its failure is raised in its turn: nothing of it, or of any segment after it, is
# handed out, whichever thread opened it and however far ahead.


class CountingStore:
    """The service's store, with every get recorded (segment indexes, in the order asked)."""

    def __init__(self, store: BlobStore) -> None:
        self.store = store
        self.gets: list[int] = []

    def get(self, key: str) -> bytes:
        self.gets.append(int(key.rsplit("/", 1)[1].split(".")[0]))
        return self.store.get(key)

    def __getattr__(self, name: str) -> object:
        return getattr(self.store, name)


def prepared(client: TestClient, rid: uuid.UUID, fmt: str, store: BlobStore | None = None) -> VerifiedAudio:
    """prepare_audio as the route calls it (every check before the first byte), on `store` if given."""
    svc = services(client)
    with svc.sessions() as session:
        recording = session.get(Recording, str(rid))
        assert recording is not None
        return prepare_audio(session, store or svc.store, svc.keys, recording, fmt)


def swap_ciphertext(client: TestClient, rid: uuid.UUID, index: int) -> None:
    store = services(client).store
    key = f"recordings/{rid}/{index:06d}.seg"
    data = bytearray(store.get(key))
    data[-3] ^= 0x40
    store.put(key, bytes(data))


SEGMENTS = READ_AHEAD + 6  # longer than the read-ahead, so it moves along the recording


@pytest.mark.parametrize("index", [1, READ_AHEAD, SEGMENTS - 1], ids=["second", "edge-of-window", "last"])
@pytest.mark.parametrize("fmt", ["flac", "wav"])
def test_an_object_swapped_after_the_checks_stops_the_stream_in_its_turn(
    client: TestClient, world: World, index: int, fmt: str
) -> None:
    rec = recording_with(client, world.device, SEGMENTS, None)
    verified = prepared(client, rec.id, fmt)  # every check passed: the stream may start
    swap_ciphertext(client, rec.id, index)

    released: list[bytes] = []
    stream = verified.chunks()
    with pytest.raises(IntegrityError, match=f"segment {index} in the store is not the one the device signed"):
        for chunk in stream:
            released.append(chunk)
    assert next(stream, None) is None  # and nothing more after the failure
    if fmt == "wav":  # the header, then exactly the segments before the swapped one, in order
        assert released[0] == audio.wav_header(verified.frames, 16000, 1)
        data = b"".join(released[1:])
        np.testing.assert_array_equal(
            np.frombuffer(data, dtype="<i2"), np.concatenate([s.pcm for s in rec.segments[:index]])[:, 0]
        )
    else:  # never the last bytes (FlacStream.close), so never a complete-looking file
        assert len(released) <= index
        assert b"".join(released).startswith(audio.FLAC_MAGIC)


def test_a_swapped_last_object_is_still_refused_before_the_first_byte(client: TestClient, world: World) -> None:
    """Swapped before the read: the hash pass, not the read-ahead, finds it, and nothing is sent."""
    rec = recording_with(client, world.device, SEGMENTS, None)
    swap_ciphertext(client, rec.id, SEGMENTS - 1)
    for fmt in ("flac", "wav"):
        assert_refused_read(client, world, rec.id, f"segment {SEGMENTS - 1} in the store is not the one", fmt=fmt)


def test_the_read_ahead_is_bounded_and_stops_with_the_stream(client: TestClient, world: World) -> None:
    """At most READ_AHEAD segments are fetched beyond the one being sent (memory flat in the length),
    and a stream closed early (the client went away) asks for nothing more."""
    rec = recording_with(client, world.device, SEGMENTS, None)
    store = CountingStore(services(client).store)
    verified = prepared(client, rec.id, "wav", store)  # type: ignore[arg-type]
    assert sorted(store.gets) == list(range(SEGMENTS))  # the hash pass: each object once
    store.gets.clear()
    stream = verified.chunks()
    assert next(stream) == audio.wav_header(verified.frames, 16000, 1)
    for sent in range(SEGMENTS):  # segment `sent` handed out: nothing beyond sent + READ_AHEAD asked for
        next(stream)
        assert max(store.gets, default=0) <= sent + READ_AHEAD
    assert next(stream, None) is None
    assert sorted(store.gets) == list(range(1, SEGMENTS))  # each once more (segment 0 was opened up front)

    store.gets.clear()
    stream = prepared(client, rec.id, "wav", store).chunks()  # type: ignore[arg-type]
    assert isinstance(stream, types.GeneratorType)
    for _ in range(3):  # the header, segments 0 and 1
        next(stream)
    stream.close()
    for thread in [t for t in threading.enumerate() if t.name.startswith("segment-open")]:
        thread.join(30)  # the workers finish what they hold and end
    assert max(store.gets[SEGMENTS:]) <= 1 + READ_AHEAD < SEGMENTS - 1  # past the hash pass: the window only
