"""GET /metrics (Prometheus text format) and the middleware that times every request.

The metrics themselves, and what each means, are in api/core/metrics.py (and README "Metrics").
/metrics is not in the OpenAPI schema: it is for the operator's scraper, not for API clients.

Who may scrape: with COUNTERSIGN_METRICS_TOKEN set, whoever sends it as a bearer token (compared
with hmac.compare_digest against its SHA-256; not an API user's token, and refusals are not written
to the audit log: this is not evidence). Unset, loopback clients only. The client address is the
one uvicorn reports: behind a reverse proxy on the same host that does not send X-Forwarded-For,
every client looks like loopback, so there set a token or keep /metrics off the proxy.
"""

from __future__ import annotations

import ipaddress
import time
from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response
from starlette.routing import Match

from api.core import metrics
from api.middleware import ASGIApp, Message, Receive, Scope, Send
from evidence import wire

router = APIRouter()

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"  # no route has this path (404s): never the path itself, which the client chose


def _loopback(host: str | None) -> bool:
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@router.get("/metrics", include_in_schema=False)
def scrape(request: Request) -> Response:
    access: metrics.MetricsAccess = request.app.state.metrics_access
    if access.digest is not None:
        if not access.token_ok(request.headers.get("authorization")):
            raise HTTPException(401, "metrics need the metrics bearer token", headers={"WWW-Authenticate": "Bearer"})
    elif not _loopback(request.client.host if request.client else None):
        raise HTTPException(403, "metrics are served to loopback clients only (or set COUNTERSIGN_METRICS_TOKEN)")
    page = metrics.exposition(request.app.state.services.sessions)
    return Response(page, media_type=metrics.CONTENT_TYPE, headers={"cache-control": "no-store"})


def _template(scope: Scope, status: int) -> str:
    """The route template the router matched (FastAPI leaves it in the scope), or finds it now for a
    request answered before routing (a 413 from BoundedBody); UNMATCHED if no route has the path."""
    route = scope.get("route")
    if route is None and status != 404:  # a 404 without a route is the router's own: no route has it
        app = scope.get("app")
        for candidate in getattr(getattr(app, "router", None), "routes", ()):
            match, _ = candidate.matches(scope)
            if match != Match.NONE:
                route = candidate
                break
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED


class RequestMetrics:
    """Time every HTTP request; count segment uploads by outcome and the bytes of the stored ones.

    Outermost, so the time includes the body read and refusals made before routing. Its cost is
    a clock read, a label lookup and one histogram observation per request (README "Metrics").
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # if the app raises before answering, the server answers 500
        received = 0
        method: str = scope["method"]

        async def counting() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            return message

        async def watching(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, counting if method == "PUT" else receive, watching)
        finally:
            elapsed = time.perf_counter() - start
            route = _template(scope, status)
            label = method if method in METHODS else "other"
            metrics.REQUEST_SECONDS.labels(route, label, f"{status // 100}xx").observe(elapsed)
            if method == "PUT" and route == wire.SEGMENT:
                _count_segment(status, received)


def _count_segment(status: int, size: int) -> None:
    outcome = {201: "stored", 200: "repeat"}.get(status) or ("failed" if status >= 500 else "refused")
    metrics.SEGMENT_UPLOADS.labels(outcome).inc()
    if outcome == "stored":
        metrics.SEGMENT_BYTES.inc(size)


def install(app: Any, token: str | None) -> None:
    """Add /metrics and the timing middleware to the app (call last: the middleware goes outermost)."""
    app.state.metrics_access = metrics.MetricsAccess(token)
    app.include_router(router)
    app.add_middleware(RequestMetrics)
