"""A live service on loopback for the client CLIs: the real `countersign` against real HTTP.

Sites north and south, an officer for each, an auditor, and a simulated device in north
that uploads real signed, encrypted recordings through the service's HTTP API.
"""

from __future__ import annotations

import io
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import nacl.signing
import numpy as np
import pytest
import soundfile as sf

from api.bootstrap import approve_user, init_data_dir
from api.core.settings import Settings
from tests.conftest import LiveServer, bearer, cli_env, countersign, free_port
from tests.support.factories import SimDevice, SimRecording

PURPOSE = "client CLI test: complaint review"


@dataclass
class Live:
    server: LiveServer
    api: httpx.Client  # as the admin
    admin: str
    officer: str  # site north
    other_officer: str  # site south
    auditor: str
    device: SimDevice  # site north
    public_key: str  # the service's audit-signing key, hex

    def run(self, token: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """`countersign ARGS` as the holder of `token` would run it."""
        env = cli_env(COUNTERSIGN_SERVER=self.server.url, COUNTERSIGN_TOKEN=token)
        return countersign(*args, env=env, check=check)

    def upload(self, segments: int = 3, device: SimDevice | None = None) -> SimRecording:
        """A finished recording, uploaded segment by segment as a device does."""
        dev = device or self.device
        rec = dev.new_recording()
        dev.add_segments(rec, segments)
        with httpx.Client(base_url=self.server.url, headers=dev.auth, timeout=30) as http:
            reply = http.post("/v1/recordings", json=rec.create_body())
            assert reply.status_code == 201, reply.text
            for seg in rec.segments:
                reply = http.put(
                    f"/v1/recordings/{rec.id}/segments/{seg.index}",
                    content=seg.envelope,
                    headers=dev.segment_headers(seg),
                )
                assert reply.status_code == 201, reply.text
        return rec

    def enrol(self, name: str, site: str) -> SimDevice:
        return enrol(self.api, name, site)

    def user(self, name: str, role: str, sites: list[str]) -> str:
        """A user whose access is approved (on the server) and ready to use."""
        return add_user(self.api, name, role, sites, self.server.data)

    def get(self, token: str, url: str, **params: Any) -> Any:
        reply = httpx.get(f"{self.server.url}{url}", params=params, headers=bearer(token), timeout=30)
        assert reply.status_code == 200, reply.text
        return reply.json()


def add_user(api: httpx.Client, name: str, role: str, sites: list[str], data: Path | None = None) -> str:
    """Create a user as the admin; with `data`, approve their access on the server as the second person."""
    reply = api.post("/v1/users", json={"name": name, "role": role, "sites": sites})
    assert reply.status_code == 201, reply.text
    token: str = reply.json()["token"]
    if data is not None and reply.json()["pending_approval"]:
        approve_user(Settings(data_dir=data, env="development"), name)
    return token


def enrol(api: httpx.Client, name: str, site: str) -> SimDevice:
    """Register a device (as the admin `api`) and enrol it with a fresh key, as the recorder does."""
    created = api.post("/v1/devices", json={"name": name, "site": site})
    assert created.status_code == 201, created.text
    key = nacl.signing.SigningKey.generate()
    body = {"code": created.json()["enrolment_code"], "public_key": bytes(key.verify_key).hex()}
    reply = httpx.post(str(api.base_url.join("/v1/enrol")), json=body)
    assert reply.status_code == 200, reply.text
    enrolled = reply.json()
    keys = {k["key_id"]: bytes.fromhex(k["public_key"]) for k in enrolled["evidence_keys"]}
    return SimDevice(enrolled["device_id"], enrolled["token"], key, keys)


@pytest.fixture
def live(tmp_path: Path, backend_env: dict[str, str]) -> Iterator[Live]:
    data = tmp_path / "server"
    init = init_data_dir(Settings(data_dir=data, env="development"))
    server = LiveServer(data, free_port())
    server.start()
    api = httpx.Client(base_url=server.url, headers=bearer(init.admin_token), timeout=30)
    try:
        for site in ("north", "south"):
            assert api.post("/v1/sites", json={"id": site, "name": f"{site.title()} Office"}).status_code == 201
        yield Live(
            server,
            api,
            admin=init.admin_token,
            officer=add_user(api, "olivia", "officer", ["north"], data),
            other_officer=add_user(api, "oscar", "officer", ["south"], data),
            auditor=add_user(api, "audrey", "auditor", [], data),
            device=enrol(api, "counter-n1", "north"),
            public_key=init.service_public_key,
        )
    finally:
        api.close()
        server.stop()


def decode(data: bytes) -> tuple[np.ndarray, int]:
    samples, rate = sf.read(io.BytesIO(data), dtype="int16")
    return samples, rate


def expected_pcm(rec: SimRecording) -> np.ndarray:
    return np.concatenate([seg.pcm for seg in rec.segments])[:, 0]


def lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stdout.splitlines() if line.strip()]


def fields(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """A `show` command's `key: value` block (up to the first blank line) as a dict."""
    block = result.stdout.split("\n\n")[0]
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in block.splitlines() if ":" in line)}


def assert_out_of_scope(result: subprocess.CompletedProcess[str]) -> None:
    """Refused for a site outside the caller's: 403, or 404 where the service hides that it exists."""
    assert result.returncode != 0, result.stdout
    assert result.stdout == ""
    assert result.stderr.startswith("error:") and ("403" in result.stderr or "404" in result.stderr), result.stderr
