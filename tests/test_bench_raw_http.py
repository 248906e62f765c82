"""bench/raw_http.py, the benchmarks' lean client: right against uvicorn, and clear about what it cannot read."""

from __future__ import annotations

import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.ingest import Server
from bench.raw_http import RawClient, RawHTTPError
from tests.conftest import free_port
from tests.support.backends import POSTGRES_S3

pytestmark = pytest.mark.skipif(
    POSTGRES_S3, reason="tests a benchmark's client, not the backend: run once, on sqlite-fs"
)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """bench/baseline_app.py under uvicorn, started as bench.ingest starts it: it stores each PUT body in a file."""
    folder = tmp_path_factory.mktemp("baseline")
    port = free_port()
    argv = [sys.executable, "-m", "bench.baseline_app", "--dir", str(folder / "bodies"), "--port", str(port)]
    server = Server("baseline", argv, port, folder / "baseline.log")
    server.start("/")
    try:
        yield server.url, folder / "bodies"
    finally:
        server.stop()


def test_puts_reach_uvicorn_whole_over_one_kept_connection(baseline: tuple[str, Path]) -> None:
    url, bodies = baseline
    before = set(bodies.iterdir())
    sent = [bytes([n]) * (1 + 70_000 * n) for n in range(3)]  # up to 140 KB: several reads each way
    with RawClient(url) as client:
        replies = [client.put(f"/v1/x/{n}", body, {"X-Test": str(n)}) for n, body in enumerate(sent)]
        sock = client._sock
        assert sock is not None
        assert client.put("/v1/x/again", b"z", {})
        assert client._sock is sock  # keep-alive: the same connection throughout
    assert [r.status_code for r in replies] == [201, 201, 201]
    stored = sorted(p.read_bytes() for p in set(bodies.iterdir()) - before)
    assert stored == sorted([*sent, b"z"])


def canned(answer: bytes) -> Iterator[str]:
    """A server that reads one request and writes `answer`, then closes: for what uvicorn never sends."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            conn.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    thread.join(10)
    listener.close()


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", "Content-Length bodies only"),
        (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nabc", "without Content-Length"),
        (b"SSH-2.0-OpenSSH\r\n\r\n", "not an HTTP/1.x status line"),
        (b"HTTP/1.1 201 Created\r\nContent-Length: 10\r\n\r\nshort", "closed the connection"),
        (b"", "closed the connection"),
    ],
)
def test_what_it_cannot_read_is_a_clear_error_and_a_fresh_connection_next(answer: bytes, why: str) -> None:
    for url in canned(answer):
        client = RawClient(url, timeout=10)
        with pytest.raises(RawHTTPError, match=why):
            client.put("/x", b"body", {})
        assert client._sock is None  # the next request connects anew, never reads this one's leftovers


def test_connection_close_is_honoured() -> None:
    for url in canned(b"HTTP/1.1 409 Conflict\r\nContent-Length: 2\r\nConnection: close\r\n\r\nno"):
        client = RawClient(url, timeout=10)
        reply = client.put("/x", b"body", {})
        assert (reply.status_code, reply.text) == (409, "no")
        assert client._sock is None


def test_a_refused_connection_is_a_raw_http_error() -> None:
    with pytest.raises(RawHTTPError, match="ConnectionRefusedError"):
        RawClient(f"http://127.0.0.1:{free_port()}", timeout=5).put("/x", b"", {})
