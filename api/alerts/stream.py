"""Server-sent events for officers: one `alert` event per change of an alert of their sites.

The stream reads the database (alerts.updated_at), not an in-process queue, so an officer
connected to one service process sees alerts raised through another. It ends after `timeout`
seconds (the browser's EventSource reconnects by itself): a disabled officer's token is then
checked again, and no connection lives forever behind a proxy.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from api.alerts.lifecycle import view
from api.core.models import Alert, utcnow

POLL_SECONDS = 0.5
KEEPALIVE_SECONDS = 15.0


def _changes(
    sessions: sessionmaker[Session], sites: frozenset[str], since: datetime | None
) -> list[tuple[datetime, dict[str, Any]]]:
    with sessions() as session:
        query = select(Alert).where(Alert.site_id.in_(sites))
        # The snapshot (no `since`): what is still waiting for someone; then what changed.
        query = query.where(Alert.state != "acknowledged" if since is None else Alert.updated_at > since)
        return [(a.updated_at, view(session, a)) for a in session.scalars(query.order_by(Alert.updated_at).limit(500))]


def event(item: dict[str, Any]) -> str:
    return f"event: alert\nid: {item['id']}\ndata: {json.dumps(item, ensure_ascii=False)}\n\n"


async def events(
    sessions: sessionmaker[Session], sites: frozenset[str], timeout: float, disconnected: Callable[[], Any]
) -> AsyncIterator[str]:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    quiet_since = loop.time()
    yield "retry: 2000\n\n"
    # Changes are asked for from the moment before the snapshot: one made meanwhile comes twice, never not at all.
    started = utcnow()
    changes = await run_in_threadpool(_changes, sessions, sites, None)
    since = started
    while True:
        for at, item in changes:
            since = max(since, at)
            yield event(item)
        if changes:
            quiet_since = loop.time()
        elif loop.time() - quiet_since >= KEEPALIVE_SECONDS:
            yield ": keepalive\n\n"
            quiet_since = loop.time()
        if loop.time() >= end or await disconnected():
            return
        await asyncio.sleep(POLL_SECONDS)
        changes = await run_in_threadpool(_changes, sessions, sites, since)
