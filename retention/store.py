"""Between the database and the pure decision: facts, rules and holds from rows; stored dates kept current.

``Recording.retain_until`` caches ``retention.decide.retain_until`` so that the
purge sweep is an indexed range query. Whatever changes an input of that
function (creation, the recording becoming interrupted, an incident flag, an
officer's extension, a policy change) calls ``refresh_retention`` or
``recompute_for_rule`` in the same transaction. The purge job never trusts
the cached date alone: it decides again, on fresh rows, before shredding.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, func, select, true, update
from sqlalchemy.orm import Session

from api.core.models import Recording
from retention.decide import HoldFacts, RecordingFacts, Schedule, retain_until
from retention.models import Hold, RetentionPolicy
from retention.policy import Category, Rule, effective_rules

DEFAULT_SCOPE = "*"
RECOMPUTE_BATCH = 2000

# The columns facts are made of, so bulk work never loads headers or sealed keys.
FACT_COLUMNS = (
    Recording.id,
    Recording.site_id,
    Recording.device_id,
    Recording.started_at,
    Recording.status,
    Recording.incident_category,
    Recording.retain_extended_until,
)


def purge_state_is(state: str | None) -> ColumnElement[bool]:
    """``purge_state = state`` written so that it cannot use an index on purge_state.

    Without statistics SQLite's planner prefers ix_recordings_purge_due for
    "purge_state IS NULL" over the primary key, and would walk every live
    recording to claim fifty of them. Use this where the primary key should lead.
    """
    return func.coalesce(Recording.purge_state, "") == (state or "")


def facts_of(recording: Recording) -> RecordingFacts:
    return RecordingFacts(
        id=recording.id,
        site=recording.site_id,
        device=recording.device_id,
        started_at=recording.started_at,
        status=recording.status,
        incident_category=recording.incident_category,
        extended_until=recording.retain_extended_until,
    )


def facts_from_row(row: Sequence[Any]) -> RecordingFacts:
    """Facts from a row whose first columns are FACT_COLUMNS."""
    rid, site, device, started_at, status, incident_category, extended_until = row[: len(FACT_COLUMNS)]
    return RecordingFacts(rid, site, device, started_at, status, incident_category, extended_until)


def rule_of(row: RetentionPolicy) -> Rule:
    return Rule(
        category=row.category,  # type: ignore[arg-type]  # validated when stored
        site=None if row.scope == DEFAULT_SCOPE else row.scope,
        retain_days=row.retain_days,
        delete_days=row.delete_days,
    )


def rules_in_force(session: Session) -> tuple[Rule, ...]:
    return effective_rules(rule_of(r) for r in session.scalars(select(RetentionPolicy)))


def hold_facts(hold: Hold) -> HoldFacts:
    return HoldFacts(
        id=hold.id,
        case_ref=hold.case_ref,
        active=hold.released_at is None,
        recording_ids=frozenset(r.recording_id for r in hold.recordings),
        scoped=hold.scoped,
        site=hold.site_id,
        device=hold.device_id,
        started_from=hold.started_from,
        started_to=hold.started_to,
        incident_category=hold.incident_category,
    )


def active_holds(session: Session) -> list[HoldFacts]:
    query = select(Hold).where(Hold.released_at.is_(None)).execution_options(populate_existing=True)
    return [hold_facts(h) for h in session.scalars(query)]


def _apply(recording: Recording, schedule: Schedule) -> bool:
    changed = (recording.retain_until, recording.retain_reason) != (schedule.until, schedule.reason)
    recording.retain_until, recording.retain_reason = schedule.until, schedule.reason
    return changed


def refresh_retention(
    session: Session, recording: Recording, rules: Iterable[Rule] | None = None
) -> tuple[datetime | None, datetime | None]:
    """Recompute one recording's stored retain-until date; return (old, new). Purged recordings are left alone."""
    old = recording.retain_until
    if recording.purge_state is None:
        _apply(recording, retain_until(facts_of(recording), rules_in_force(session) if rules is None else rules))
    return old, recording.retain_until


def _category_filter(category: Category) -> ColumnElement[bool]:
    """SQL for "this recording is in this category" (mirrors RecordingFacts.categories)."""
    if category == "incident":
        return Recording.incident_category.is_not(None)
    if category == "objection":
        return Recording.status == "objected"
    if category == "interrupted":
        return Recording.status == "interrupted"
    return Recording.status.not_in(("objected", "interrupted"))


def _batches(session: Session, where: ColumnElement[bool]) -> Iterator[list[Any]]:
    """Keyset pages by id, so a long recompute never holds one huge result set."""
    last = ""
    while True:
        query = select(*FACT_COLUMNS, Recording.retain_until, Recording.retain_reason)
        rows = list(
            session.execute(query.where(where, Recording.id > last).order_by(Recording.id).limit(RECOMPUTE_BATCH))
        )
        if not rows:
            return
        yield rows
        last = rows[-1][0]


def recompute_for_rule(session: Session, site: str | None, category: Category) -> int:
    """After a rule for (site or default, category) changed: recompute the recordings it may apply to.

    Returns how many stored dates changed. Runs in the caller's transaction.
    """
    rules = rules_in_force(session)
    scope = true() if site is None else Recording.site_id == site
    where = and_(purge_state_is(None), scope, _category_filter(category))  # walk the primary key in order
    changed = 0
    for rows in _batches(session, where):
        updates = []
        for row in rows:
            schedule = retain_until(facts_from_row(row), rules)
            if (row.retain_until, row.retain_reason) != (schedule.until, schedule.reason):
                updates.append({"id": row.id, "retain_until": schedule.until, "retain_reason": schedule.reason})
        if updates:
            session.execute(update(Recording), updates)  # bulk UPDATE by primary key
            changed += len(updates)
    return changed
