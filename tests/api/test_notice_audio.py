"""Notice texts and their spoken readings, provisioned by admins and served to devices.

Admins add a notice text as a new version (never changing an existing one: consent records name
it), upload a reading or generate one with espeak-ng; GET /v1/notices says which notices have a
reading and its SHA-256; devices and admins fetch it. Hostile cases: officers, auditors and devices
cannot provision; a file that is not audio, too long, or too large is refused and nothing stored.
"""

from __future__ import annotations

import hashlib
import io
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient
from sqlalchemy import select

from api import notice_audio
from api.core.models import AccessLog, NoticeAudio, NoticeRow
from api.core.services import Services
from consent.catalogue import text_sha256
from tests.conftest import World, bearer

NOTICE = "counter-recording"
AUDIO = f"/v1/notices/{NOTICE}/versions/1/ja/audio"


def services(client: TestClient) -> Services:
    return client.app.state.services  # type: ignore[attr-defined,no-any-return]


def wav(seconds: float = 1.0, rate: int = 16000, fmt: str = "WAV", channels: int = 1) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    tone = (0.3 * np.sin(2 * np.pi * 440 * t) * 32767).astype(np.int16)
    data = np.stack([tone] * channels, axis=1)
    out = io.BytesIO()
    sf.write(out, data, rate, format=fmt, subtype="PCM_16")
    return out.getvalue()


def put(client: TestClient, token: str, body: bytes, url: str = AUDIO) -> Any:
    return client.put(url, content=body, headers={**bearer(token), "Content-Type": "audio/wav"})


def listed(client: TestClient, token: str) -> dict[tuple[str, int, str], dict[str, Any]]:
    reply = client.get("/v1/notices", headers=bearer(token))
    assert reply.status_code == 200, reply.text
    return {(n["id"], n["version"], n["language"]): n for n in reply.json()}


def stored(client: TestClient) -> list[NoticeAudio]:
    with services(client).sessions() as session:
        return list(session.scalars(select(NoticeAudio)))


def log(client: TestClient, action: str) -> list[AccessLog]:
    with services(client).sessions() as session:
        return list(session.scalars(select(AccessLog).where(AccessLog.action == action).order_by(AccessLog.seq)))


def test_upload_then_devices_see_and_fetch_it(client: TestClient, world: World) -> None:
    before = listed(client, world.device.token)[(NOTICE, 1, "ja")]
    assert (before["audio"], before["audio_sha256"]) == (False, None)
    assert client.get(AUDIO, headers=world.device.auth).status_code == 404

    sent = wav(2.0, fmt="FLAC")  # any format libsndfile reads; kept as 16-bit PCM WAV
    reply = put(client, world.admin, sent)
    assert reply.status_code == 200, reply.text
    meta = reply.json()
    assert (meta["source"], meta["content_type"], meta["seconds"]) == ("upload", "audio/wav", 2.0)

    entry = listed(client, world.device.token)[(NOTICE, 1, "ja")]
    assert (entry["audio"], entry["audio_sha256"]) == (True, meta["sha256"])
    assert listed(client, world.device.token)[(NOTICE, 1, "en")]["audio"] is False
    for token in (world.device.token, world.admin):
        got = client.get(AUDIO, headers=bearer(token))
        assert got.status_code == 200 and got.headers["content-type"] == "audio/wav"
        assert hashlib.sha256(got.content).hexdigest() == meta["sha256"] == got.headers["x-content-sha256"]
        pcm, rate = sf.read(io.BytesIO(got.content), dtype="int16")
        assert (rate, len(pcm)) == (16000, 32000)

    [audit] = log(client, "api:notice:audio")
    assert audit.target == f"notice:{NOTICE}" and audit.actor.startswith("user:")
    assert audit.detail["sha256"] == meta["sha256"] and audit.detail["previous"] is None
    assert audit.detail["uploaded_sha256"] == hashlib.sha256(sent).hexdigest()


def test_replacing_a_reading_is_audited_with_both_hashes(client: TestClient, world: World) -> None:
    first = put(client, world.admin, wav(1.0)).json()["sha256"]
    second = put(client, world.admin, wav(1.5)).json()["sha256"]
    assert first != second
    assert [e.detail["previous"] for e in log(client, "api:notice:audio")] == [None, first]
    assert [r.sha256 for r in stored(client)] == [second]


def test_generate_with_espeak(client: TestClient, world: World) -> None:
    for language in ("ja", "en"):
        url = f"/v1/notices/{NOTICE}/versions/1/{language}/audio/generate"
        reply = client.post(url, headers=bearer(world.admin))
        assert reply.status_code == 200, reply.text
        meta = reply.json()
        assert meta["source"] == "espeak-ng" and 0 < meta["seconds"] <= notice_audio.MAX_SECONDS
        got = client.get(url.removesuffix("/generate"), headers=world.device.auth)
        assert hashlib.sha256(got.content).hexdigest() == meta["sha256"]
        assert sf.info(io.BytesIO(got.content)).format == "WAV"
    assert {e.detail["language"] for e in log(client, "api:notice:audio")} == {"ja", "en"}


def test_generate_without_espeak_is_503(client: TestClient, world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(notice_audio, "ESPEAK", "espeak-ng-not-installed-here")
    reply = client.post(AUDIO + "/generate", headers=bearer(world.admin))
    assert reply.status_code == 503 and "not installed" in reply.json()["detail"]
    assert stored(client) == []


@pytest.mark.parametrize("role", ["officer", "auditor", "device"])
def test_only_admins_provision(client: TestClient, world: World, role: str) -> None:
    token = world.device.token if role == "device" else getattr(world, role)
    assert put(client, token, wav()).status_code == 403
    assert client.post(AUDIO + "/generate", headers=bearer(token)).status_code == 403
    body = {"id": NOTICE, "language": "ja", "title": "t", "text": "an officer's own notice"}
    assert client.post("/v1/notices", json=body, headers=bearer(token)).status_code == 403
    assert stored(client) == [] and log(client, "api:notice:audio") == log(client, "api:notice:add") == []


def test_officers_cannot_fetch_readings(client: TestClient, world: World) -> None:
    put(client, world.admin, wav())
    assert client.get(AUDIO, headers=bearer(world.officer)).status_code == 403


BAD_AUDIO = [
    pytest.param(b"", "empty", id="empty"),
    pytest.param(b"MZ\x90\x00" + bytes(5000), "libsndfile", id="not-audio"),
    pytest.param(b"RIFF\x24\x00\x00\x00WAVEfmt ", "libsndfile", id="truncated-wav"),
    pytest.param(wav(0.5, rate=4000), "sample rate", id="rate-too-low"),
    pytest.param(wav(0.2, channels=3), "channels", id="three-channels"),
    pytest.param(wav(notice_audio.MAX_SECONDS + 2, rate=8000, fmt="FLAC"), "longer than", id="too-long"),
]


@pytest.mark.parametrize(("body", "said"), BAD_AUDIO)
def test_bad_audio_is_refused(client: TestClient, world: World, body: bytes, said: str) -> None:
    reply = put(client, world.admin, body)
    assert reply.status_code == 422, reply.text
    assert said in reply.json()["detail"]
    assert stored(client) == [] and log(client, "api:notice:audio") == []


def test_over_the_size_limit_is_413_and_not_stored(client: TestClient, world: World) -> None:
    big = wav(1.0) + bytes(notice_audio.MAX_BYTES)
    reply = put(client, world.admin, big)
    assert reply.status_code == 413, reply.text
    # Without a Content-Length (chunked): refused at the first bytes past the limit.
    chunked = client.put(
        AUDIO, content=iter([big[i : i + 65536] for i in range(0, len(big), 65536)]), headers=bearer(world.admin)
    )
    assert chunked.status_code == 413
    assert stored(client) == []


@pytest.mark.parametrize(
    "url",
    [
        f"/v1/notices/{NOTICE}/versions/9/ja/audio",  # no such version
        "/v1/notices/no-such-notice/versions/1/ja/audio",
    ],
)
def test_unknown_notice_is_404(client: TestClient, world: World, url: str) -> None:
    assert put(client, world.admin, wav(), url).status_code == 404
    assert client.post(url + "/generate", headers=bearer(world.admin)).status_code == 404
    assert stored(client) == []


@pytest.mark.parametrize(
    "url",
    [
        f"/v1/notices/{NOTICE}/versions/1/fr/audio",
        f"/v1/notices/{NOTICE}/versions/0/ja/audio",
        f"/v1/notices/{NOTICE}/versions/x/ja/audio",
        f"/v1/notices/{NOTICE}/versions/99999999999/ja/audio",
        "/v1/notices/..%2f..%2fetc/versions/1/ja/audio",
    ],
)
def test_bad_path_is_422(client: TestClient, world: World, url: str) -> None:
    assert put(client, world.admin, wav(), url).status_code in (404, 422)
    assert client.get(url, headers=bearer(world.admin)).status_code in (404, 422)


def test_new_version_keeps_the_old_ones(client: TestClient, world: World) -> None:
    with services(client).sessions() as session:
        original = session.get(NoticeRow, (NOTICE, 1, "ja"))
        assert original is not None
        old_text, old_sha = original.text, original.sha256
    body = {"id": NOTICE, "language": "ja", "title": "当庁の録音について", "text": "当庁の文言です。\n二段落目。"}
    reply = client.post("/v1/notices", json=body, headers=bearer(world.admin))
    assert reply.status_code == 201, reply.text
    made = reply.json()
    assert (made["version"], made["sha256"]) == (2, text_sha256(body["text"]))
    again = client.post("/v1/notices", json={**body, "text": "三版目"}, headers=bearer(world.admin))
    assert again.json()["version"] == 3
    en = client.post("/v1/notices", json={**body, "language": "en", "text": "Our own"}, headers=bearer(world.admin))
    assert en.json()["version"] == 2  # versions count per language

    notices = listed(client, world.device.token)
    assert notices[(NOTICE, 1, "ja")]["text"] == old_text and notices[(NOTICE, 1, "ja")]["sha256"] == old_sha
    assert notices[(NOTICE, 2, "ja")]["text"] == body["text"]
    assert [e.detail["version"] for e in log(client, "api:notice:add")] == [2, 3, 2]
    # Adding the same text once more is refused, not a silent duplicate version.
    same = client.post("/v1/notices", json={**body, "text": "三版目"}, headers=bearer(world.admin))
    assert same.status_code == 409
    # A new version gets no reading until one is provisioned for it.
    assert notices[(NOTICE, 2, "ja")]["audio"] is False


def test_no_route_edits_an_existing_version(client: TestClient, world: World) -> None:
    """There is no PUT or PATCH of a notice text: only new versions (consent records name the old)."""
    for method in ("PUT", "PATCH", "DELETE"):
        reply = client.request(method, f"/v1/notices/{NOTICE}/versions/1/ja", headers=bearer(world.admin))
        assert reply.status_code in (404, 405)
    with services(client).sessions() as session:
        row = session.get(NoticeRow, (NOTICE, 1, "ja"))
        assert row is not None and row.sha256 == text_sha256(row.text)


@pytest.mark.parametrize(
    "body",
    [
        {"id": NOTICE, "language": "fr", "title": "t", "text": "x"},
        {"id": "../etc", "language": "ja", "title": "t", "text": "x"},
        {"id": NOTICE, "language": "ja", "title": "t", "text": ""},
        {"id": NOTICE, "language": "ja", "title": "t", "text": "\u202eevil"},
        {"id": NOTICE, "language": "ja", "title": "t", "text": "x" * 10001},
        {"id": NOTICE, "language": "ja", "title": "", "text": "x"},
        {"id": NOTICE, "language": "ja", "text": "x"},
    ],
)
def test_bad_notice_bodies_are_422(client: TestClient, world: World, body: dict[str, Any]) -> None:
    reply = client.post("/v1/notices", json=body, headers=bearer(world.admin))
    assert reply.status_code == 422, reply.text
    assert log(client, "api:notice:add") == []
