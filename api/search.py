"""The officer search query (GET /v1/evidence), in one place so benchmarks measure exactly it."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from sqlalchemy import Select, select
from sqlalchemy.orm import raiseload

from api.core.models import Device, Recording


def evidence_search(
    sites: Collection[str],
    since: datetime | None,
    until: datetime | None,
    incident: bool | None,
    limit: int,
    id_prefix: str | None = None,
) -> Select[Recording, str]:
    """Live recordings in these sites, newest first, each with its device's name (joined: one
    statement for the page, however many rows); served by ix_recordings_site_started (and the
    partial ix_recordings_site_incidents when incident=True).

    `id_prefix` (lowercase hex and hyphens, as ids are written) narrows to ids starting with it:
    how the CLI resolves a short id, never outside the given sites.
    """
    query = (
        select(Recording, Device.name)
        .join(Device, Device.id == Recording.device_id)
        .where(Recording.site_id.in_(sites), Recording.purge_state.is_(None))
        .options(raiseload(Recording.sealed_keys))  # a listing never loads (or touches) sealed data keys
    )
    if id_prefix is not None:
        # The prefix is checked to be [0-9a-f-] by the route: no LIKE wildcard can be in it.
        query = query.where(Recording.id.startswith(id_prefix, autoescape=True))
    if since is not None:
        query = query.where(Recording.started_at >= since)
    if until is not None:
        query = query.where(Recording.started_at < until)
    if incident is not None:
        flagged = Recording.incident_category.is_not(None)
        query = query.where(flagged if incident else ~flagged)
    return query.order_by(Recording.started_at.desc()).limit(limit)
