"""The FastAPI application factory."""

from __future__ import annotations

import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from api.core.services import Services, build_services
from api.core.settings import Settings
from api.routes import admin, audit, enrol, evidence, health, ingest
from evidence.errors import EvidenceError, FormatError, IntegrityError, KeyUnavailableError
from retention.routes import holds, policies


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
    )
    app.state.services = services
    for module in (health, admin, enrol, ingest, evidence, audit):
        app.include_router(module.router)
    for module in (holds, policies):  # the retention domain: legal holds and policies
        app.include_router(module.router)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        # As FastAPI's default, but a body holding NaN or Infinity is echoed back safely
        # instead of failing to render (which turned the 422 into a 500).
        return JSONResponse({"detail": _json_safe(jsonable_encoder(exc.errors()))}, status_code=422)

    @app.exception_handler(EvidenceError)
    async def _evidence_error(_request: Request, exc: EvidenceError) -> JSONResponse:
        # Integrity problems are the client's or the evidence's, never a 500;
        # a missing key is the service's configuration (503, try later).
        status = {IntegrityError: 409, FormatError: 400, KeyUnavailableError: 503}.get(type(exc), 422)
        return JSONResponse({"detail": str(exc)}, status_code=status)

    return app
