"""What every request passes through before any route: a bounded body, read in full; security headers.

Bodies first. A request's body is read here, up to a limit, before routing,
authentication or parsing. So a 300 MB JSON body from a stranger is refused
after the first bytes over the limit (413), never parsed, and a client that
trickles its body in holds no database connection meanwhile: dependencies that
open one run only once the body is in memory. The limits are the segment size
for segment uploads, api.notice_audio.MAX_BYTES for a notice reading, and a small one for
everything else (JSON).

Headers second. Every answer says nosniff, no framing, no referrer, and (for the
API) no caching: evidence and its metadata must not linger in a proxy or a
browser cache. The interactive docs keep their own page policy (they load their
script and style from elsewhere); everything else gets a CSP that allows nothing.
Over https, Strict-Transport-Security too (see SecurityHeaders).
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from api.notice_audio import MAX_BYTES as NOTICE_AUDIO_MAX_BYTES

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_SEGMENT_UPLOAD = re.compile(r"^/v1/recordings/[^/]+/segments/[^/]+$")
_NOTICE_AUDIO = re.compile(r"^/v1/notices/[^/]+/versions/[^/]+/[^/]+/audio$")  # an admin's upload of a reading

SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-resource-policy", b"same-origin"),
]
NO_STORE = (b"cache-control", b"no-store")
STRICT_CSP = (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'")


async def _answer(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers + SECURITY_HEADERS})
    await send({"type": "http.response.body", "body": body})


class BoundedBody:
    """Read the whole body (at most `limit_for(path)` bytes) before the app sees the request."""

    def __init__(self, app: ASGIApp, json_limit: int, upload_limit: int) -> None:
        self.app, self.json_limit, self.upload_limit = app, json_limit, upload_limit

    def limit_for(self, method: str, path: str) -> int:
        if method == "PUT" and _NOTICE_AUDIO.match(path):
            return NOTICE_AUDIO_MAX_BYTES
        return self.upload_limit if method == "PUT" and _SEGMENT_UPLOAD.match(path) else self.json_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["method"], scope["path"])
        too_big = f"request body larger than {limit} bytes"
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await _answer(send, 413 if declared.isdigit() else 400, too_big if declared.isdigit() else "bad length")
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client went away: nothing to answer, nothing was touched
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _answer(send, 413, too_big)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for the disconnect, as the server would

        await self.app(scope, replay, send)


HSTS_MAX_AGE = 365 * 24 * 3600


class SecurityHeaders:
    """The headers above on every answer; with `hsts_max_age`, Strict-Transport-Security on https ones.

    HSTS is only meaningful (and per RFC 6797 only sent) over a secure transport, so it follows
    the request's scheme: https when uvicorn serves TLS itself, or when a trusted proxy that
    terminates TLS says so in X-Forwarded-Proto. Off by default.
    """

    def __init__(self, app: ASGIApp, hsts_max_age: int | None = None) -> None:
        self.app = app
        self.hsts = None if hsts_max_age is None else (b"strict-transport-security", f"max-age={hsts_max_age}".encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        # A page that needs a looser policy (api/docs.py) sets its own; every other answer gets this one.
        extra = [*SECURITY_HEADERS, STRICT_CSP]
        if path.startswith("/v1/"):
            extra.append(NO_STORE)
        if self.hsts is not None and scope.get("scheme") == "https":
            extra.append(self.hsts)

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [h for h in extra if h[0] not in present]
            await send(message)

        await self.app(scope, receive, with_headers)
