"""A lean keep-alive HTTP/1.1 client on one socket, for load generators that share the cores with the server.

Why: bench.ingest's simulated devices run on the same two cores as the service they measure, so
every millisecond the client spends per upload is one the server does not get. httpx builds and
parses each request and response in layers of Python (its own client CPU is printed beside each
figure); this sends a request line, the headers and the body with one `sendall` and reads back
the status line, the headers and a Content-Length body, which is all the benchmarks need.

It speaks only what the two servers answer (uvicorn: Content-Length bodies, keep-alive): a chunked
or length-less response is an error, and a `Connection: close` answer reconnects for the next
request. Not for anything but the benchmarks.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass


class RawHTTPError(OSError):
    """The connection failed, or the response was not one this client reads."""


@dataclass(frozen=True)
class Reply:
    status_code: int
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")


class RawClient:
    def __init__(self, base_url: str, timeout: float = 60.0) -> None:
        scheme, _, rest = base_url.partition("://")
        if scheme != "http":
            raise ValueError(f"plain http only, not {base_url!r}")
        host, _, port = rest.rstrip("/").partition(":")
        self._address = (host, int(port or 80))
        self._host = f"Host: {rest.rstrip('/')}\r\n".encode()
        self._timeout = timeout
        self._sock: socket.socket | None = None
        self._buffer = b""

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock, self._buffer = None, b""

    def put(self, path: str, content: bytes, headers: Mapping[str, str]) -> Reply:
        head = [f"PUT {path} HTTP/1.1\r\n".encode(), self._host, f"Content-Length: {len(content)}\r\n".encode()]
        head += [f"{name}: {value}\r\n".encode() for name, value in headers.items()]
        request = b"".join(head) + b"\r\n" + content
        try:
            if self._sock is None:
                self._sock = socket.create_connection(self._address, timeout=self._timeout)
                self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sock.sendall(request)
            return self._read()
        except OSError as exc:
            self.close()
            raise exc if isinstance(exc, RawHTTPError) else RawHTTPError(f"{type(exc).__name__}: {exc}") from exc

    def _recv(self) -> None:
        assert self._sock is not None
        chunk = self._sock.recv(65536)
        if not chunk:
            raise RawHTTPError("the server closed the connection")
        self._buffer += chunk

    def _read(self) -> Reply:
        while (end := self._buffer.find(b"\r\n\r\n")) < 0:
            self._recv()
        lines = self._buffer[:end].split(b"\r\n")
        self._buffer = self._buffer[end + 4 :]
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise RawHTTPError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
        length, close = None, False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                raise RawHTTPError(f"a {value.decode()} response: this client reads Content-Length bodies only")
            elif name == b"connection" and value == b"close":
                close = True
        if length is None:
            raise RawHTTPError("a response without Content-Length")
        while len(self._buffer) < length:
            self._recv()
        body, self._buffer = self._buffer[:length], self._buffer[length:]
        if close:
            self.close()
        return Reply(int(parts[1]), body)
