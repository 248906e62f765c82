"""The officer search query (GET /v1/evidence), in one place so benchmarks measure exactly it."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from sqlalchemy import Select, select
from sqlalchemy.orm import raiseload

from api.core.models import Recording


def evidence_search(
    sites: Collection[str], since: datetime | None, until: datetime | None, incident: bool | None, limit: int
) -> Select[Recording]:
    """Live recordings in these sites, newest first; served by ix_recordings_site_started
    (and the partial ix_recordings_site_incidents when incident=True)."""
    query = (
        select(Recording)
        .where(Recording.site_id.in_(sites), Recording.purge_state.is_(None))
        .options(raiseload(Recording.sealed_keys))  # a listing never loads (or touches) sealed data keys
    )
    if since is not None:
        query = query.where(Recording.started_at >= since)
    if until is not None:
        query = query.where(Recording.started_at < until)
    if incident is not None:
        flagged = Recording.incident_category.is_not(None)
        query = query.where(flagged if incident else ~flagged)
    return query.order_by(Recording.started_at.desc()).limit(limit)
