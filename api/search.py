"""The officer search query (GET /v1/evidence; with Narrowing, the console's search page), in one place so
benchmarks (bench/search.py, bench/console_search.py) measure exactly it."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, Select, and_, exists, false, func, or_, select, true, union_all
from sqlalchemy.orm import InstrumentedAttribute, aliased, raiseload

from api.core.models import Device, Recording, RecordingNote
from retention.decide import HoldFacts
from retention.models import HoldRecording


def contains_text(
    column: ColumnElement[str] | InstrumentedAttribute[str] | InstrumentedAttribute[str | None], words: str
) -> ColumnElement[bool]:
    """`column` contains `words`, case-insensitively; LIKE's wildcards (and the escape) are literal
    (officers' note search, the auditor's log filters)."""
    escaped = words.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return func.lower(column).like(f"%{escaped}%", escape="\\")


@dataclass(frozen=True)
class Narrowing:
    """The console's further filters, applied in SQL after the scope (never instead of it).

    None means "any". `status` is the status officers see (retention.lifecycle.shown_status): an
    open recording silent since before `stale_before` counts as interrupted, so `stale_before`
    is required with `status`. `held` mirrors retention.decide.hold_covers over the active holds given.
    """

    device: str | None = None  # a substring of the device's name (case-insensitive), or its exact id
    staff: str | None = None  # the consent record's staff code, exactly
    status: str | None = None
    held: bool | None = None
    note: str | None = None  # words in one of the recording's notes (case-insensitive, wildcards literal)
    stale_before: datetime | None = None

    def used(self) -> list[str]:
        """The names of the filters given (for the audit entry: never their values)."""
        given = {"device": self.device, "staff": self.staff, "status": self.status, "note": self.note}
        return [name for name, value in given.items() if value] + (["held"] if self.held is not None else [])

    def conditions(self, holds: Sequence[HoldFacts] = ()) -> list[ColumnElement[bool]]:
        out: list[ColumnElement[bool]] = []
        if self.device:
            # As a set of device ids, so the device index serves it (the matching devices are few).
            devices = select(Device.id).where(or_(contains_text(Device.name, self.device), Device.id == self.device))
            out.append(Recording.device_id.in_(devices))
        if self.staff:
            out.append(Recording.header[("consent", "staff_code")].as_string() == self.staff)
        if self.status:
            out.append(shown_status_is(self.status, self.stale_before))
        if self.held is not None:
            out.append(held_by(holds) if self.held else ~held_by(holds))
        if self.note:
            out.append(
                exists().where(RecordingNote.recording_id == Recording.id, contains_text(RecordingNote.text, self.note))
            )
        return out


def shown_status_is(status: str, stale_before: datetime | None) -> ColumnElement[bool]:
    """SQL for shown_status(recording) == status: "interrupted" includes open uploads gone silent."""
    if stale_before is None:
        raise ValueError("filtering by shown status needs the staleness cutoff")
    stale = and_(Recording.status == "open", Recording.last_activity_at < stale_before)
    if status == "interrupted":
        return or_(Recording.status == "interrupted", stale)
    if status == "open":
        return and_(Recording.status == "open", Recording.last_activity_at >= stale_before)
    return Recording.status == status


def held_by(holds: Sequence[HoldFacts]) -> ColumnElement[bool]:
    """SQL for "one of these holds covers this recording" (retention.decide.hold_covers, term by term:
    listed in an active hold, or inside an active scoped hold's site, device, time range and category).

    One `id IN (...)` over the held ids (listed ones, then each scoped hold's range, as literals): the
    planner joins that set by primary key. An OR of the same terms, or a correlated EXISTS over holds,
    made it walk every recording newest first filtering each (bench/console_search.py's EXPLAIN).
    """
    active = [h for h in holds if h.active]
    parts: list[Select[str]] = []
    listing = [h.id for h in active if h.recording_ids]
    if listing:
        parts.append(select(HoldRecording.recording_id).where(HoldRecording.hold_id.in_(listing)))
    other = aliased(Recording)
    for h in active:
        if not h.scoped:
            continue
        scope: list[ColumnElement[bool]] = [true()]
        if h.site is not None:
            scope.append(other.site_id == h.site)
        if h.device is not None:
            scope.append(other.device_id == h.device)
        if h.started_from is not None:
            scope.append(other.started_at >= h.started_from)
        if h.started_to is not None:
            scope.append(other.started_at < h.started_to)
        if h.incident_category is not None:
            scope.append(other.incident_category == h.incident_category)
        parts.append(select(other.id).where(*scope))
    if not parts:
        return false()
    return Recording.id.in_(parts[0] if len(parts) == 1 else union_all(*parts))


def evidence_search(
    sites: Collection[str],
    since: datetime | None,
    until: datetime | None,
    incident: bool | None,
    limit: int,
    id_prefix: str | None = None,
    narrowing: Narrowing | None = None,
    holds: Sequence[HoldFacts] = (),
) -> Select[Recording, str]:
    """Live recordings in these sites, newest first, each with its device's name (joined: one
    statement for the page, however many rows); served by ix_recordings_site_started (and the
    partial ix_recordings_site_incidents when incident=True).

    `id_prefix` (lowercase hex and hyphens, as ids are written) narrows to ids starting with it:
    how the CLI resolves a short id, never outside the given sites. `narrowing` adds the console's
    filters (device, staff code, status, held, note text) to the same statement, inside the scope;
    `holds` (the active holds) are what its held filter is about.
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
    if narrowing is not None:
        query = query.where(*narrowing.conditions(holds))
    return query.order_by(Recording.started_at.desc()).limit(limit)
