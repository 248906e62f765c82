"""The device fetches the notices' spoken readings: at enrolment, and on refresh before a recording.

Against the real service on loopback. A reading lands where recorder.prompt looks for it, at 0600,
only if its SHA-256 is the one GET /v1/notices lists; a download altered on the way is refused
(not written, and an older file for that version removed); offline, what is held is kept.
"""

from __future__ import annotations

import hashlib
import io
import json
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient

from consent.catalogue import Notice
from recorder import prompt
from recorder.client import DeviceClient
from recorder.enroll import enroll
from recorder.home import DeviceHome
from recorder.notice_audio import audio_path, refresh_notices, sync_audio
from tests.conftest import free_port
from tests.recorder.conftest import Service
from tests.recorder.support import ThreadServer
from tests.support.world import World, bearer

NOTICE = "counter-recording"
JA = f"/v1/notices/{NOTICE}/versions/1/ja/audio"


def tone(seconds: float) -> bytes:
    out = io.BytesIO()
    t = np.arange(int(16000 * seconds)) / 16000
    sf.write(out, (np.sin(2 * np.pi * 330 * t) * 8000).astype(np.int16), 16000, format="WAV", subtype="PCM_16")
    return out.getvalue()


def provision(api: TestClient, world: World, seconds: float = 1.0) -> str:
    reply = api.put(JA, content=tone(seconds), headers=bearer(world.admin))
    assert reply.status_code == 200, reply.text
    sha: str = reply.json()["sha256"]
    return sha


class Tamper(httpx.BaseTransport):
    """A hostile network in between: flips a byte of every notice reading, counts the requests."""

    def __init__(self, alter: bool = True) -> None:
        self.inner, self.alter, self.audio_requests = httpx.HTTPTransport(), alter, 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if not request.url.path.endswith("/audio"):
            return response
        self.audio_requests += 1
        body = response.read()
        response.close()
        if self.alter and response.status_code == 200:
            body = body[:-1] + bytes([body[-1] ^ 1])
        return httpx.Response(response.status_code, headers=response.headers, content=body)

    def close(self) -> None:
        self.inner.close()


OPENED: list[DeviceClient] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while OPENED:
        OPENED.pop().close()


def client_through(home: DeviceHome, transport: Tamper) -> DeviceClient:
    """The device's client, its requests through `transport` (closed when the test ends)."""
    config = home.config()
    client = DeviceClient(config["server"], home.token())
    client.http.close()
    OPENED.append(client)
    client.http = httpx.Client(
        base_url=config["server"], headers={"Authorization": f"Bearer {home.token()}"}, transport=transport
    )
    return client


def ja_notice(home: DeviceHome) -> Notice:
    return next(n for n in home.notices() if n.id == NOTICE and n.language == "ja" and n.version == 1)


def new_device(service: Service, tmp_path: Path, name: str, **kwargs: Any) -> DeviceHome:
    created = service.api.post("/v1/devices", json={"name": name, "site": "north"}, headers=bearer(service.world.admin))
    assert created.status_code == 201, created.text
    enroll(service.server.url, created.json()["enrolment_code"], tmp_path / name, **kwargs)
    return DeviceHome(tmp_path / name)


def test_enrolment_fetches_the_readings(service: Service, tmp_path: Path) -> None:
    sha = provision(service.api, service.world)
    said: list[str] = []
    home = new_device(service, tmp_path, "counter-audio", say=said.append)
    path = prompt.notice_audio(home.root, ja_notice(home))
    assert path == audio_path(home.root, NOTICE, 1, "ja")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == sha
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    listed = {(n["language"], n["version"]): n for n in json.loads((home.root / "notices.json").read_text())}
    assert listed[("ja", 1)]["audio_sha256"] == sha and listed[("en", 1)]["audio_sha256"] is None
    en = next(n for n in home.notices() if n.language == "en")
    assert prompt.notice_audio(home.root, en) is None  # no reading provisioned: shown, read aloud by staff
    assert said == []
    assert not list(path.parent.glob(".*.tmp"))


def test_enrolment_refuses_a_tampered_reading(
    service: Service, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    provision(service.api, service.world)
    tamper = Tamper()
    # The enrolment's own client for the readings goes through the hostile network.
    monkeypatch.setattr(DeviceClient, "for_home", classmethod(lambda _cls, home, _config: client_through(home, tamper)))
    said: list[str] = []
    home = new_device(service, tmp_path, "counter-mitm", say=said.append)
    assert home.is_enrolled()  # the enrolment itself is done; only the reading was refused
    assert tamper.audio_requests == 1
    assert prompt.notice_audio(home.root, ja_notice(home)) is None
    assert any("is not the listed" in s and "refused" in s for s in said), said
    assert not (home.root / "notice-audio").exists() or not any((home.root / "notice-audio").iterdir())


def test_refresh_fetches_new_readings_and_keeps_current_ones(service: Service) -> None:
    home = service.home
    said: list[str] = []
    assert prompt.notice_audio(home.root, ja_notice(home)) is None  # enrolled before any reading existed
    first = provision(service.api, service.world, 1.0)
    counting = Tamper(alter=False)
    done = refresh_notices(home, client_through(home, counting), said.append)
    assert done.fetched == [f"{NOTICE} v1 (ja)"] and not done.refused and not done.offline
    path = audio_path(home.root, NOTICE, 1, "ja")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == first

    again = refresh_notices(home, client_through(home, counting), said.append)
    assert again.kept == [f"{NOTICE} v1 (ja)"] and counting.audio_requests == 1  # not fetched twice

    second = provision(service.api, service.world, 2.0)  # the admin replaced it
    refresh_notices(home, client_through(home, counting), said.append)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == second and counting.audio_requests == 2
    assert said == []


def test_refresh_refuses_a_tampered_reading_and_drops_the_stale_one(service: Service) -> None:
    home = service.home
    said: list[str] = []
    provision(service.api, service.world, 1.0)
    refresh_notices(home, client_through(home, Tamper(alter=False)), said.append)
    path = audio_path(home.root, NOTICE, 1, "ja")
    assert path.is_file()
    provision(service.api, service.world, 1.5)  # a new reading; the network in between alters it
    done = refresh_notices(home, client_through(home, Tamper()), said.append)
    assert done.refused == [f"{NOTICE} v1 (ja)"] and done.fetched == []
    assert not path.exists()  # neither the altered download nor the superseded file is played
    assert any("refused" in s for s in said)


def test_offline_refresh_keeps_what_is_held(app: Any, client: TestClient, world: World, tmp_path: Path) -> None:
    server = ThreadServer(app, free_port())
    server.start()
    try:
        provision(client, world)
        created = client.post("/v1/devices", json={"name": "counter-off", "site": "north"}, headers=bearer(world.admin))
        enroll(server.url, created.json()["enrolment_code"], tmp_path / "off")
    finally:
        server.stop()
    home = DeviceHome(tmp_path / "off")
    said: list[str] = []
    path = audio_path(home.root, NOTICE, 1, "ja")
    held = path.read_bytes()
    device = DeviceClient.for_home(home, home.config())
    OPENED.append(device)
    done = refresh_notices(home, device, said.append)
    assert done.offline and [n.id for n in done.notices] == [n.id for n in home.notices()]
    assert path.read_bytes() == held
    assert any("cannot refresh" in s for s in said)


def test_a_hostile_listing_cannot_write_outside_the_folder(service: Service) -> None:
    entries: list[dict[str, Any]] = [
        {"id": "../../escape", "version": 1, "language": "ja", "audio_sha256": "00" * 32},
        {"id": NOTICE, "version": "1; rm", "language": "ja", "audio_sha256": "00" * 32},
        {"id": NOTICE, "version": 1, "language": "../ja", "audio_sha256": "00" * 32},
    ]
    counting = Tamper(alter=False)
    done = sync_audio(service.home.root, client_through(service.home, counting), entries, lambda _m: None)
    assert counting.audio_requests == 0 and done.fetched == done.refused == []
    assert not (service.home.root.parent / "escape.ja.v1.wav").exists()
