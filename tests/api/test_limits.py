"""Limits a stranger or a broken device cannot get past: body sizes, slow bodies, a full disk; headers.

Each test is the attack first (a huge body with no token, twenty-five uploads
that trickle in, a disk that fills mid-upload), then what must still hold.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from api.bootstrap import init_data_dir
from api.core.settings import Settings
from tests.api.test_tamper import good_recording, read, services
from tests.conftest import LiveServer, World, bearer, countersign, free_port
from tests.support.backends import POSTGRES_S3
from tests.support.factories import UploadSegment


def test_security_headers_everywhere_and_no_caching_of_evidence(client: TestClient, world: World) -> None:
    rec = good_recording(client, world.device, count=1)
    answers = {
        "health": client.get("/healthz"),
        "list": client.get("/v1/evidence", headers=bearer(world.officer)),
        "audio": read(client, world.officer, rec.id),
        "refused": client.get("/v1/evidence"),
    }
    for name, reply in answers.items():
        assert reply.headers["x-content-type-options"] == "nosniff", name
        assert reply.headers["x-frame-options"] == "DENY", name
        assert reply.headers["referrer-policy"] == "no-referrer", name
        assert "default-src 'none'" in reply.headers["content-security-policy"], name
    for name in ("list", "audio", "refused"):
        assert answers[name].headers["cache-control"] == "no-store", name
    assert answers["audio"].status_code == 200 and answers["audio"].content[:4] == b"fLaC"
    assert client.get("/docs").status_code == 200  # the docs page keeps working


def test_an_oversized_json_body_is_refused_before_it_is_read(client: TestClient, world: World) -> None:
    big = b'{"header": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    for headers in ({}, world.device.auth):  # a stranger, and a device: neither gets it parsed
        reply = client.post("/v1/recordings", content=big, headers={**headers, "Content-Type": "application/json"})
        assert reply.status_code == 413, reply.text
        assert "larger than 1048576 bytes" in reply.json()["detail"]


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.fixture
def live(tmp_path: Path) -> Iterator[tuple[LiveServer, str, str]]:
    """A live server, an admin token and an enrolled device's token."""
    data = tmp_path / "server"
    init = countersign("server", "init", "--data", str(data))
    admin = next(line.split()[-1] for line in init.stdout.splitlines() if line.startswith("admin token"))
    server = LiveServer(data, free_port())
    server.start()
    try:
        api = httpx.Client(base_url=server.url, headers=bearer(admin))
        assert api.post("/v1/sites", json={"id": "tokyo"}).status_code == 201
        code = api.post("/v1/devices", json={"name": "c1", "site": "tokyo"}).json()["enrolment_code"]
        token = api.post("/v1/enrol", json={"code": code, "public_key": "ab" * 32}).json()["token"]
        api.close()
        yield server, admin, token
    finally:
        server.stop()


def test_a_huge_unauthenticated_body_costs_the_server_nothing(live: tuple[LiveServer, str, str]) -> None:
    server, _, _ = live
    assert server.proc is not None
    before = _rss_kib(server.proc.pid)

    def body() -> Iterator[bytes]:  # 300 MB, chunked: no Content-Length to refuse it by
        chunk = b"[" + b"1," * 32767 + b"1]"
        for _ in range(300 * 1024 * 1024 // len(chunk)):
            yield chunk

    try:
        reply = httpx.post(f"{server.url}/v1/users", content=body(), timeout=30)
        assert reply.status_code == 413
    except httpx.TransportError:
        pass  # the server answered 413 and closed while we were still sending: also a refusal
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:  # declared, never sent
        s.sendall(f"POST /v1/users HTTP/1.1\r\nHost: x\r\nContent-Length: {300 * 1024 * 1024}\r\n\r\n{{".encode())
        assert s.recv(4096).startswith(b"HTTP/1.1 413 ")
    assert _rss_kib(server.proc.pid) - before < 50 * 1024, "the body was buffered or parsed"
    assert httpx.get(f"{server.url}/healthz", timeout=5).status_code == 200


def test_slow_uploads_do_not_hold_database_connections(live: tuple[LiveServer, str, str]) -> None:
    """Twenty-five uploads that send their headers and then trickle: health and other requests go on."""
    server, admin, token = live
    slow = []
    try:
        for i in range(25):
            s = socket.create_connection(("127.0.0.1", server.port))
            s.sendall(
                (
                    f"PUT /v1/recordings/00000000-0000-4000-8000-{i:012d}/segments/0 HTTP/1.1\r\n"
                    f"Host: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
                    "Content-Type: application/octet-stream\r\nX-Segment-Final: 0\r\n"
                    f"X-Plaintext-Sha256: {'00' * 32}\r\nX-Prev-Hash: {'00' * 32}\r\nX-Signature: {'00' * 64}\r\n"
                    "Content-Length: 100000\r\n\r\n"
                ).encode()
                + b"\0" * 10
            )
            slow.append(s)
        time.sleep(1.0)  # the server has seen every one of them
        started = time.monotonic()
        assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200
        users = httpx.get(f"{server.url}/v1/users", headers=bearer(admin), timeout=10)
        assert users.status_code == 200, users.text
        assert time.monotonic() - started < 10
    finally:
        for s in slow:
            s.close()


def test_a_full_disk_answers_507_and_loses_nothing(
    client: TestClient, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    dev = world.device
    rec = dev.new_recording()
    dev.add_segments(rec, 2)
    assert client.post("/v1/recordings", json=rec.create_body(), headers=dev.auth).status_code == 201
    first, second = rec.segments

    def put(seg: UploadSegment) -> httpx.Response:
        url = f"/v1/recordings/{rec.id}/segments/{seg.index}"
        return client.put(url, content=seg.envelope, headers=dev.segment_headers(seg))

    assert put(first).status_code == 201
    store = services(client).store
    real_put = store.put

    def full(key: str, data: bytes, *, replace: bool = True) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store, "put", full)
    reply = put(second)
    assert reply.status_code == 507, reply.text
    assert "storage is full" in reply.json()["detail"]
    monkeypatch.setattr(store, "put", real_put)
    # The device retries once there is room: the segment goes in, and the recording reads whole.
    assert put(second).status_code == 201
    assert read(client, world.officer, rec.id).status_code == 200


@pytest.mark.skipif(POSTGRES_S3, reason="the SQLite file's mode; PostgreSQL keeps its own files")
def test_the_database_file_is_private_even_in_an_open_directory(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    os.chmod(data, 0o755)  # an operator-made directory, group and world readable
    init_data_dir(Settings(data_dir=data, env="development"))
    for name in ("countersign.db", "countersign.db-wal", "countersign.db-shm"):
        path = data / name
        if path.exists():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, name
    assert (data / "countersign.db").exists()


def test_purposes_and_reasons_never_travel_in_urls(app: FastAPI) -> None:
    """URLs end up in proxy and server logs: why evidence is read, kept or destroyed goes in bodies."""
    for route in app.routes:
        if not isinstance(route, APIRoute):
            continue
        in_url = {p.name for p in (*route.dependant.query_params, *route.dependant.path_params)}
        assert not in_url & {"purpose", "reason"}, f"{route.methods} {route.path} takes {in_url} in its URL"


def test_reading_audio_with_the_purpose_in_the_url_is_not_possible(client: TestClient, world: World) -> None:
    rec = good_recording(client, world.device, count=1)
    url = f"/v1/evidence/{rec.id}/audio"
    assert (
        client.get(url, params={"purpose": "reviewing complaint 118"}, headers=bearer(world.officer)).status_code == 405
    )
    in_query = client.post(url, params={"purpose": "reviewing complaint 118"}, headers=bearer(world.officer))
    assert in_query.status_code == 422  # the body is where it must be
    assert read(client, world.officer, rec.id).status_code == 200
