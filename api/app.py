"""The FastAPI application factory."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from api.routes import admin, audit, enrol, evidence, health, ingest
from api.services import Services, build_services
from api.settings import Settings
from evidence.errors import EvidenceError, FormatError, IntegrityError, KeyUnavailableError


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

    @app.exception_handler(EvidenceError)
    async def _evidence_error(_request: Request, exc: EvidenceError) -> JSONResponse:
        # Integrity problems are the client's or the evidence's, never a 500;
        # a missing key is the service's configuration (503, try later).
        status = {IntegrityError: 409, FormatError: 400, KeyUnavailableError: 503}.get(type(exc), 422)
        return JSONResponse({"detail": str(exc)}, status_code=status)

    return app
