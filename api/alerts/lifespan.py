"""The app's lifespan: one delivery worker per service process while it serves (COUNTERSIGN_ALERTS_WORKER)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from api.alerts.config import AlertSettings
from api.alerts.worker import Worker
from api.core.services import Services


def alert_worker(services: Services) -> Callable[[Any], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        config = AlertSettings()
        worker = Worker(services.settings, services.keys.signing_key, config) if config.alerts_worker else None
        app.state.alert_worker = worker
        if worker is not None:
            worker.start()
        try:
            yield
        finally:
            if worker is not None:
                await run_in_threadpool(worker.stop)

    return lifespan


_READ = re.compile(r"^/v1/evidence/([0-9a-fA-F-]{36})/(?:audio|export)$")


def integrity_failed(request: Request, detail: str) -> None:
    """An evidence read refused for integrity (api.app's handler): the site's contacts are told, once per recording."""
    read = _READ.match(request.url.path)
    worker = getattr(request.app.state, "alert_worker", None)
    if read is not None and worker is not None:
        worker.report_integrity(read.group(1).lower(), detail)
