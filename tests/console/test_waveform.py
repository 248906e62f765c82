"""The player's waveform (GET /console/recordings/{id}/waveform.svg): only under the listening grant, drawn
from the verified audio (silence flat, a tone tall, where they are in time), withheld and audited when the
stored evidence was altered; and the peak computation on its own, over a stream cut anywhere."""

from __future__ import annotations

import itertools
import re
import uuid
import xml.etree.ElementTree as ET

import numpy as np
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from api.console.waveform import BUCKETS, peaks
from api.core.models import AccessLog
from api.core.storage.interface import segment_key
from evidence import audio
from evidence.audit_actions import Action
from evidence.chain import header_hash
from tests.api.test_streaming_read import bad_plaintext_hash
from tests.conftest import World
from tests.console.support import Login, page_csrf, services_of, signed_in
from tests.support.bundles import upload as upload_recording
from tests.support.factories import tone
from tests.support.retention_support import upload

SVG = "{http://www.w3.org/2000/svg}"
RATE = 16000


def _silence_then_tone(client: TestClient, world: World) -> str:
    """Two seconds of digital silence, then one second of the test tone (0.3 of full scale)."""
    dev = world.device
    rec = dev.new_recording()
    prev = header_hash(rec.header)
    for index, pcm in enumerate([np.zeros((RATE, 1), np.int16), np.zeros((RATE, 1), np.int16), tone(1.0)]):
        rec.segments.append(dev.make_segment(rec, index, index == 2, pcm, prev))
        prev = bytes.fromhex(rec.segments[-1].headers["X-Link"])
    upload_recording(client, dev, rec)
    return str(rec.id)


def _listen(officer: TestClient, rid: str) -> None:
    path = f"/console/recordings/{rid}"
    reply = officer.post(f"{path}/listen", data={"csrf": page_csrf(officer, path), "purpose": "complaint review"})
    assert reply.status_code == 303, reply.text


def _envelope(svg: str) -> tuple[float, list[tuple[float, float]], list[tuple[float, float]]]:
    """(seconds, upper points, lower points left to right) of the waveform, in samples' terms (y up)."""
    root = ET.fromstring(svg)
    _, _, width, _ = (float(v) for v in root.attrib["viewBox"].split())
    polygon = root.find(f"{SVG}polygon")
    assert polygon is not None
    points = [(float(x), -float(y)) for x, y in (p.split(",") for p in polygon.attrib["points"].split())]
    half = len(points) // 2
    return width, points[:half], points[half:][::-1]


def _entries(app: FastAPI, action: str) -> list[AccessLog]:
    with services_of(app).sessions() as session:
        return list(session.scalars(select(AccessLog).where(AccessLog.action == action).order_by(AccessLog.seq)))


def test_the_waveform_comes_only_after_the_purpose(
    client: TestClient, app: FastAPI, world: World, logins: dict[str, Login]
) -> None:
    rid = upload(client, world.device)
    officer = signed_in(app, logins["officer"])
    refused = officer.get(f"/console/recordings/{rid}/waveform.svg")
    assert refused.status_code == 403 and "<svg" not in refused.text
    (denied,) = _entries(app, Action.ACCESS_DENIED)
    assert denied.detail["reason"] == "console waveform without a listening grant" and denied.detail["status"] == 403
    assert rid in denied.detail["request"]
    assert _entries(app, Action.EVIDENCE_READ) == []
    _listen(officer, rid)
    (read,) = _entries(app, Action.EVIDENCE_READ)
    assert denied.actor == read.actor  # the refusal names the officer who asked
    shown = officer.get(f"/console/recordings/{rid}/waveform.svg")
    assert shown.status_code == 200
    assert shown.headers["content-type"] == "image/svg+xml"
    assert shown.headers["cache-control"] == "no-store"
    assert shown.headers["x-countersign-access-log"] == str(read.seq)  # covered by the purpose's entry
    seconds, upper, lower = _envelope(shown.text)
    assert seconds == 2.0 and len(upper) == len(lower) == BUCKETS + 2  # two 1 s segments; the ends pinned
    player = officer.get(f"/console/recordings/{rid}/player").text
    assert f'<img id="waveform" src="/console/recordings/{rid}/waveform.svg"' in player
    assert '<script src="/console/static/player.js" defer></script>' in player
    script = officer.get("/console/static/player.js")
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    assert [e.seq for e in _entries(app, Action.EVIDENCE_READ)] == [read.seq]  # the picture adds no read of its own


def test_only_the_recordings_officers_see_it(
    client: TestClient, app: FastAPI, world: World, logins: dict[str, Login]
) -> None:
    rid = upload(client, world.device)
    _listen(signed_in(app, logins["officer"]), rid)  # olivia's grant is hers, for her session only
    path = f"/console/recordings/{rid}/waveform.svg"
    assert signed_in(app, logins["other_officer"]).get(path).status_code == 404  # another site's: not found
    for role in ("admin", "auditor"):
        reply = signed_in(app, logins[role]).get(path)
        assert reply.status_code == 403 and "This page is for officers" in reply.text, role
    anonymous = TestClient(app, follow_redirects=False)
    reply = anonymous.get(path)
    assert reply.status_code == 303 and reply.headers["location"] == "/console/sign-in"
    second = signed_in(app, logins["officer"], offset_steps=1)  # olivia in another browser (the next code): no grant
    assert second.get(path).status_code == 403
    assert second.get(f"/console/recordings/{uuid.uuid4()}/waveform.svg").status_code == 404
    assert second.get("/console/recordings/not-an-id/waveform.svg").status_code == 422


def test_its_shape_follows_the_audio(client: TestClient, app: FastAPI, world: World, logins: dict[str, Login]) -> None:
    rid = _silence_then_tone(client, world)
    officer = signed_in(app, logins["officer"])
    _listen(officer, rid)
    reply = officer.get(f"/console/recordings/{rid}/waveform.svg")
    assert reply.status_code == 200, reply.text
    seconds, upper, lower = _envelope(reply.text)
    assert seconds == 3.0
    quiet = [(u, d) for (x, u), (_, d) in zip(upper, lower, strict=True) if x < 1.99]
    loud = [(u, d) for (x, u), (_, d) in zip(upper, lower, strict=True) if x > 2.01]
    assert len(quiet) > 500 and len(loud) > 250
    assert all(u == 0.0 and d == 0.0 for u, d in quiet)  # digital silence is a flat line
    assert all(0.25 < u < 0.4 and -0.4 < d < -0.25 for u, d in loud)  # the tone: 0.3 of full scale, and noise
    view = ET.fromstring(reply.text).attrib["viewBox"].split()
    assert 0.3 < float(view[3]) / 2 < 0.4  # drawn to the loudest peak, so quiet audio still shows
    assert re.fullmatch(r"[0-9.,\- ]+", ET.fromstring(reply.text).find(f"{SVG}polygon").attrib["points"])  # type: ignore[union-attr]


def test_altered_evidence_is_withheld_and_audited(
    client: TestClient, app: FastAPI, world: World, logins: dict[str, Login]
) -> None:
    rid = upload(client, world.device, segments=2)
    officer = signed_in(app, logins["officer"])
    _listen(officer, rid)
    store = services_of(app).store  # an insider with the storage: one ciphertext byte flipped
    key = segment_key(rid, 1)
    data = bytearray(store.get(key))
    data[100] ^= 0x01
    store.put(key, bytes(data))
    reply = officer.get(f"/console/recordings/{rid}/waveform.svg")
    assert reply.status_code == 409 and "<svg" not in reply.text
    assert "segment 1 in the store is not the one the device signed" in reply.text
    (read,) = _entries(app, Action.EVIDENCE_READ)
    (failed,) = _entries(app, Action.EVIDENCE_INTEGRITY)
    assert failed.outcome == "failed" and failed.target == f"recording:{rid}"
    assert failed.detail["read"] == read.seq and failed.detail["via"] == "console"
    assert failed.detail["error"].endswith("segment 1 in the store is not the one the device signed")


def test_a_segment_failing_once_opened_withholds_the_picture_and_is_audited(
    client: TestClient, app: FastAPI, world: World, logins: dict[str, Login]
) -> None:
    """Past every check made before decryption: the last segment decrypts to audio its device did not sign."""
    dev = world.device
    rec = dev.new_recording()
    dev.add_segments(rec, 3, final=False)
    rec.segments.append(bad_plaintext_hash(dev, rec, 3))
    upload_recording(client, dev, rec)
    officer = signed_in(app, logins["officer"])
    _listen(officer, str(rec.id))
    reply = officer.get(f"/console/recordings/{rec.id}/waveform.svg")
    assert reply.status_code == 409 and "<svg" not in reply.text
    assert "segment 3 decrypts to audio the device did not sign" in reply.text
    (read,) = _entries(app, Action.EVIDENCE_READ)
    (failed,) = _entries(app, Action.EVIDENCE_INTEGRITY)
    assert failed.outcome == "failed" and failed.actor == read.actor and failed.detail["read"] == read.seq
    assert failed.detail["error"].endswith("segment 3 decrypts to audio the device did not sign")


def _wav_stream(pcm: np.ndarray, cuts: list[int]) -> list[bytes]:
    data = audio.wav_header(len(pcm), RATE, pcm.shape[1]) + audio.pcm_bytes(pcm)
    edges = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


def test_peaks_are_the_same_however_the_stream_is_cut() -> None:
    rng = np.random.default_rng(5)
    pcm = rng.integers(-32768, 32768, size=(10007, 2), dtype=np.int16)  # stereo; frames not a multiple
    buckets = 100
    whole = peaks(_wav_stream(pcm, []), len(pcm), 2, buckets)
    ragged = peaks(_wav_stream(pcm, [3, 44, 45, 1001, 1002, 30001]), len(pcm), 2, buckets)  # mid-header, mid-frame
    bucket = np.arange(len(pcm)) * buckets // len(pcm)  # frame f is in bucket floor(f * buckets / frames)
    expected_lows = [pcm[bucket == k].min() / 32768 for k in range(buckets)]
    expected_highs = [pcm[bucket == k].max() / 32768 for k in range(buckets)]
    for lows, highs in (whole, ragged):
        np.testing.assert_array_equal(lows, expected_lows)
        np.testing.assert_array_equal(highs, expected_highs)
    short = peaks(_wav_stream(pcm[:7], []), 7, 2, buckets)  # fewer frames than buckets: one bucket a frame
    np.testing.assert_array_equal(short[1], pcm[:7].max(axis=1) / 32768)
    nothing = peaks(_wav_stream(pcm[:0], []), 0, 2, buckets)
    assert nothing[0].tolist() == nothing[1].tolist() == [0.0]
