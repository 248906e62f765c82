"""The FastAPI application factory."""

from __future__ import annotations

import errno
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError

from api.alerts.lifespan import alert_worker, integrity_failed
from api.console.pages import install as install_console
from api.core.services import Services, build_services
from api.core.settings import Settings
from api.docs import install as install_docs
from api.metrics import install as install_metrics
from api.middleware import HSTS_MAX_AGE, BoundedBody, SecurityHeaders
from api.routes import admin, alerts, audit, enrol, evidence, export, grants, health, ingest, notices, sealed
from evidence.errors import EvidenceError, FormatError, IntegrityError, KeyUnavailableError, NoAudio
from retention.routes import deletions, holds, policies


def _json_safe(value: Any) -> Any:
    """NaN and Infinity (which Python's JSON parser accepts) as strings: JSON cannot carry them."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def create_app(settings: Settings | None = None, services: Services | None = None) -> FastAPI:
    services = services or build_services(settings or Settings())
    app = FastAPI(
        title="Countersign",
        summary="Audio evidence governance: consented, encrypted, signed, audited.",
        version="0.1.0",
        docs_url=None,  # api/docs.py serves /docs from installed files, not from a CDN
        redoc_url=None,
        lifespan=alert_worker(services),  # the help-alert delivery worker runs while the app serves
    )
    app.state.services = services
    # Outermost last: security headers on every answer, then a bounded body read before any route runs.
    app.add_middleware(
        BoundedBody, json_limit=services.settings.max_json_bytes, upload_limit=services.settings.max_segment_bytes
    )
    app.add_middleware(SecurityHeaders, hsts_max_age=HSTS_MAX_AGE)  # HSTS on https answers only
    for module in (health, admin, grants, enrol, notices, ingest, evidence, sealed, export, audit, alerts):
        app.include_router(module.router)
    for module in (holds, policies, deletions):  # the retention domain: holds, policies, early deletion
        app.include_router(module.router)
    install_docs(app)
    install_console(app)  # the web console under /console (api/console)
    # GET /metrics (operators' scraper; not in the schema) and request timing, outermost of all.
    token = services.settings.metrics_token
    install_metrics(app, token.get_secret_value() if token is not None else None)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        # As FastAPI's default, but a body holding NaN or Infinity is echoed back safely
        # instead of failing to render (which turned the 422 into a 500).
        return JSONResponse({"detail": _json_safe(jsonable_encoder(exc.errors()))}, status_code=422)

    @app.exception_handler(EvidenceError)
    async def _evidence_error(request: Request, exc: EvidenceError) -> JSONResponse:
        # Integrity problems are the client's or the evidence's, never a 500;
        # a missing key is the service's configuration (503, try later). A recording with no audio
        # is 409 too (its state, not the request, is why nothing comes), with its own message.
        status = {IntegrityError: 409, NoAudio: 409, FormatError: 400, KeyUnavailableError: 503}.get(type(exc), 422)
        if type(exc) is IntegrityError:
            integrity_failed(request, str(exc))  # help alerts: the site hears of evidence failing its checks
        return JSONResponse({"detail": str(exc)}, status_code=status)

    @app.exception_handler(OSError)
    async def _os_error(_request: Request, exc: OSError) -> JSONResponse:
        # A full disk (store or database) is a clean refusal the device retries later; nothing
        # was committed, so nothing is lost. Any other OS error is still a server fault.
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return JSONResponse({"detail": "the service's storage is full; try again later"}, status_code=507)
        raise exc

    @app.exception_handler(OperationalError)
    async def _db_error(_request: Request, exc: OperationalError) -> JSONResponse:
        text = str(exc.orig).lower()
        if "disk is full" in text or "no space left" in text or getattr(exc.orig, "sqlstate", None) == "53100":
            return JSONResponse({"detail": "the service's storage is full; try again later"}, status_code=507)
        raise exc

    return app
