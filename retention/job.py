"""The purge job: find what policy no longer lets us keep, and purge it.

One run:

1. open recordings silent for too long become "interrupted" (and get that policy);
2. store holds are reconciled (retention.holds_sync: every object of a held recording is held
   in the store too), and recordings a crashed run left "shredding" are finished first;
3. due recordings (``retain_until <= now``, not being purged: an index range scan)
   are taken in pages, and each page goes through ``retention.purge.purge``,
   which decides again under the write lock before shredding anything.

A dry run does steps 1-3 read-only: it lists what would go and why and changes
nothing (no audit entries either). Orphaned objects are a separate, optional
scan because it lists the whole object store.

A run never counts the recordings that are not due (that would be a pass over
most of the table on every run): it reports the next stored date still ahead
(``next_due``, one index seek on ix_recordings_purge_due), so finding nothing
costs the same at 10k or 10M rows. ``retention status --count`` counts them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, func, select, text, tuple_
from sqlalchemy.orm import Session

from api.core.audit import record_committed
from api.core.metrics import record_purge_run
from api.core.models import Recording, utcnow
from api.core.services import Services
from evidence.audit_actions import Action
from retention.decide import Keep, decide
from retention.deletion import execute_due
from retention.holds_sync import reconcile_store_holds
from retention.lifecycle import expire_stale
from retention.purge import PURGED, SHREDDING, complete, purge
from retention.store import FACT_COLUMNS, active_holds, facts_from_row, rules_in_force

ACTOR = "system:retention"
PAGE = 200  # recordings decided per page; a page is purged in batches of BATCH
BATCH = 100  # recordings shredded (and finalised) per transaction

Progress = Callable[[str, str, str], None]  # (event, recording id, detail)


@dataclass
class RunSummary:
    now: datetime
    dry_run: bool
    due: int = 0  # recordings whose stored date had passed when the run started
    purged: list[str] = field(default_factory=list)
    would_purge: list[tuple[str, str]] = field(default_factory=list)  # dry run: (id, why)
    kept_by_hold: dict[str, tuple[str, ...]] = field(default_factory=dict)
    kept_by_policy: int = 0  # due by the stored date, but policy keeps them on a fresh look
    next_due: datetime | None = None  # the earliest stored date still ahead (None: no other has one)
    resumed: int = 0
    interrupted: int = 0
    errors: dict[str, str] = field(default_factory=dict)
    store_holds_repaired: list[str] = field(default_factory=list)  # held recordings whose store hold was missing
    requested_deletions: list[str] = field(default_factory=list)  # early deletions carried out (grace passed)
    requests_waiting: dict[str, str] = field(default_factory=dict)  # deletion request id -> why it waits

    @property
    def ok(self) -> bool:
        return not self.errors


def due_query(now: datetime) -> Select[Any]:
    """Recordings whose stored retain-until date has passed: a range scan of ix_recordings_purge_due."""
    return select(Recording.id).where(Recording.purge_state.is_(None), Recording.retain_until <= now)


def count_due(session: Session, now: datetime) -> int:
    return session.scalar(select(func.count()).select_from(due_query(now).subquery())) or 0


def due_page(
    session: Session, now: datetime, after: tuple[datetime, str] | None, size: int
) -> list[tuple[datetime, str]]:
    """One page of due recordings in (retain_until, id) order, strictly after `after` (keyset paging,
    so recordings a run keeps are not found again by the same run)."""
    query = select(Recording.retain_until, Recording.id).where(
        Recording.purge_state.is_(None), Recording.retain_until <= now
    )
    if after is not None:
        query = query.where(tuple_(Recording.retain_until, Recording.id) > tuple_(*after))
    rows = session.execute(query.order_by(Recording.retain_until, Recording.id).limit(size))
    return [(r.retain_until, r.id) for r in rows]


def unfinished(session: Session) -> list[str]:
    return list(session.scalars(select(Recording.id).where(Recording.purge_state == SHREDDING).order_by(Recording.id)))


def next_due(session: Session, now: datetime) -> datetime | None:
    """The earliest stored retain-until date after `now` of a live recording: one seek on ix_recordings_purge_due."""
    query = select(Recording.retain_until).where(Recording.purge_state.is_(None), Recording.retain_until > now)
    return session.scalar(query.order_by(Recording.retain_until).limit(1))


def count_not_due(session: Session, now: datetime) -> tuple[int, int]:
    """(not yet due, no deletion date) among live recordings. Each is an index range scan, but over
    most of the table: for ``retention status --count``, never on a run."""
    live = Recording.purge_state.is_(None)
    later = session.scalar(select(func.count()).where(live, Recording.retain_until > now)) or 0
    never = session.scalar(select(func.count()).where(live, Recording.retain_until.is_(None))) or 0
    return later, never


def _dry_page(session: Session, ids: list[str], now: datetime, summary: RunSummary, progress: Progress) -> None:
    rules, holds = rules_in_force(session), active_holds(session)
    for row in session.execute(select(*FACT_COLUMNS).where(Recording.id.in_(ids)).order_by(Recording.id)):
        verdict = decide(facts_from_row(row), rules, holds, now)
        if isinstance(verdict, Keep):
            if verdict.holds:
                summary.kept_by_hold[row.id] = verdict.holds
            else:
                summary.kept_by_policy += 1
            progress("keep", row.id, verdict.reason)
        else:
            summary.would_purge.append((row.id, verdict.reason))
            progress("would-purge", row.id, verdict.reason)


def _purge_batch(services: Services, ids: list[str], now: datetime, summary: RunSummary, progress: Progress) -> None:
    """Purge a batch; if the batch fails as a whole, retry one by one so one bad row cannot block the rest."""
    key = services.keys.signing_key
    assert key is not None
    try:
        result = purge(services.sessions, services.store, key, ids, now=now, actor=ACTOR)
    except Exception as exc:  # a failed transaction changed nothing; report, never guess
        if len(ids) > 1:
            for rid in ids:
                _purge_batch(services, [rid], now, summary, progress)
            return
        summary.errors[ids[0]] = f"{type(exc).__name__}: {exc}"
        progress("error", ids[0], summary.errors[ids[0]])
        return
    summary.kept_by_hold.update(result.shred.held)
    summary.kept_by_policy += len(result.shred.kept)
    for rid, refs in result.shred.held.items():
        progress("keep", rid, f"held: {', '.join(refs)}")
    for rid, why in result.shred.kept.items():
        progress("keep", rid, why)
    for rid in result.purged:
        summary.purged.append(rid)
        progress("purged", rid, "")
    for rid, message in result.errors.items():
        summary.errors[rid] = message
        progress("error", rid, message)


def _finish_unfinished(services: Services, now: datetime, summary: RunSummary, progress: Progress) -> None:
    key = services.keys.signing_key
    assert key is not None
    with services.sessions() as session:
        pending = unfinished(session)
    for start in range(0, len(pending), BATCH):
        ids = pending[start : start + BATCH]
        try:
            purged, errors = complete(services.sessions, services.store, key, ids, now)
        except Exception as exc:
            errors, purged = {rid: f"{type(exc).__name__}: {exc}" for rid in ids}, []
        summary.resumed += len(purged)
        for rid in purged:
            summary.purged.append(rid)
            progress("purged", rid, "resumed")
        for rid, message in errors.items():
            summary.errors[rid] = message
            progress("error", rid, message)


def _checkpoint_wal(services: Services) -> None:
    """Fold the WAL into the database and truncate it, so shredded keys leave the WAL file too (best effort)."""
    if services.engine.dialect.name != "sqlite":
        return
    with services.engine.connect() as connection:
        connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")


def run(
    services: Services,
    *,
    now: datetime | None = None,
    dry_run: bool = False,
    limit: int | None = None,
    progress: Progress | None = None,
    audit: bool = True,
) -> RunSummary:
    """One run of the purge job (see the module docstring). Never raises for a single recording's error."""
    now = now or utcnow()
    progress = progress or (lambda _event, _rid, _detail: None)
    summary = RunSummary(now=now, dry_run=dry_run)

    if not dry_run:
        with services.sessions() as session, session.begin():
            summary.interrupted = expire_stale(session, services.settings.interrupted_after_seconds)
        # Held in the database ⇒ held in the store, again, whatever a crash or a hand left behind.
        sync = reconcile_store_holds(services.sessions, services.store)
        summary.store_holds_repaired = sync.repaired
        for rid, message in sync.errors.items():
            summary.errors[rid] = message
            progress("error", rid, message)
        _finish_unfinished(services, now, summary, progress)
        # Early deletions whose grace period passed uncancelled (or approved ones a hold delayed).
        key = services.keys.signing_key
        assert key is not None
        requested = execute_due(services.sessions, services.store, key, now)
        summary.requested_deletions = requested.executed
        summary.purged.extend(requested.executed)  # purged by this run, through the same path
        summary.requests_waiting = requested.waiting
        for rid in requested.executed:
            progress("purged", rid, "requested deletion carried out")

    with services.sessions() as session:
        summary.due = count_due(session, now)
    after: tuple[datetime, str] | None = None
    taken = 0
    while limit is None or taken < limit:
        with services.sessions() as session:
            page = due_page(session, now, after, PAGE)
            if not page:
                break
            after = page[-1]
            ids = [rid for _, rid in page][: None if limit is None else limit - taken]
            taken += len(ids)
            if dry_run:
                _dry_page(session, ids, now, summary, progress)
                continue
        for start in range(0, len(ids), BATCH):
            _purge_batch(services, ids[start : start + BATCH], now, summary, progress)

    with services.sessions() as session:
        summary.next_due = next_due(session, now)
    if not dry_run:
        _checkpoint_wal(services)
        record_purge_run(len(summary.purged), len(summary.kept_by_hold), len(summary.errors))  # /metrics
        if audit:
            record_committed(
                services.sessions,
                actor=ACTOR,
                action=Action.RETENTION_RUN,
                outcome="allowed" if summary.ok else "failed",
                detail={
                    "now": now.isoformat(),
                    "purged": len(summary.purged),
                    "kept_by_hold": len(summary.kept_by_hold),
                    "kept_by_policy": summary.kept_by_policy,
                    "next_due": summary.next_due.isoformat() if summary.next_due else None,
                    "interrupted": summary.interrupted,
                    "errors": len(summary.errors),
                    "store_holds_repaired": len(summary.store_holds_repaired),
                    "requested_deletions": len(summary.requested_deletions),
                },
            )
    return summary


# --------------------------------------------------------------------------- orphaned objects

_SEGMENT_KEY = re.compile(r"^recordings/([0-9a-f-]{36})/(\d{6})\.seg$")


@dataclass
class OrphanReport:
    orphans: list[str] = field(default_factory=list)  # under recordings/, owned by no live recording
    pending: list[str] = field(default_factory=list)  # the next segment of an open recording (an upload in flight)
    foreign: list[str] = field(default_factory=list)  # not a key this service writes: reported, never removed
    removed: list[str] = field(default_factory=list)


def scan_orphans(services: Services, remove: bool = False) -> OrphanReport:
    """Objects no recording owns. Only keys this service could have written are ever removed."""
    report = OrphanReport()
    by_recording: dict[str, list[tuple[int, str]]] = {}
    for key in services.store.list(""):
        match = _SEGMENT_KEY.match(key)
        if match is None:
            (report.orphans if key.startswith("recordings/") else report.foreign).append(key)
            continue
        by_recording.setdefault(match.group(1), []).append((int(match.group(2)), key))
    ids = sorted(by_recording)
    with services.sessions() as session:
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            query = select(Recording.id, Recording.segment_count, Recording.status, Recording.purge_state)
            found = {r.id: r for r in session.execute(query.where(Recording.id.in_(chunk)))}
            for rid in chunk:
                row = found.get(rid)
                for index, key in by_recording[rid]:
                    if row is not None and row.purge_state is None and index < row.segment_count:
                        continue  # owned
                    if row is not None and row.purge_state is None and row.status == "open":
                        report.pending.append(key)  # stored before its row commits: not ours to judge yet
                    else:
                        report.orphans.append(key)
    if remove:
        # Unparseable keys under recordings/ are reported but kept: we remove only what we can name.
        for key in report.orphans:
            if _SEGMENT_KEY.match(key):
                services.store.delete(key)
                report.removed.append(key)
    return report


# --------------------------------------------------------------------------- status report


@dataclass
class StatusLine:
    site: str
    reason: str
    count: int
    first: datetime
    held: int


def expiring(services: Services, now: datetime, days: int) -> tuple[int, list[StatusLine]]:
    """What will expire between now and now + days (and what is already due), grouped by site and reason."""
    end = now + timedelta(days=days)
    lines: dict[tuple[str, str], StatusLine] = {}
    with services.sessions() as session:
        rules, holds = rules_in_force(session), active_holds(session)
        due_now = count_due(session, now)
        query = select(*FACT_COLUMNS, Recording.retain_until, Recording.retain_reason).where(
            Recording.purge_state.is_(None), Recording.retain_until <= end
        )
        for row in session.execute(query.execution_options(yield_per=2000)):
            facts = facts_from_row(row)
            verdict = decide(facts, rules, holds, max(now, row.retain_until))
            line = lines.setdefault(
                (row.site_id, row.retain_reason or ""), StatusLine(row.site_id, row.retain_reason or "", 0, end, 0)
            )
            line.count += 1
            line.first = min(line.first, row.retain_until)
            if isinstance(verdict, Keep) and verdict.held:
                line.held += 1
    return due_now, sorted(lines.values(), key=lambda line: (line.first, line.site))


def purge_states(session: Session) -> dict[str, int]:
    rows = session.execute(select(Recording.purge_state, func.count()).group_by(Recording.purge_state))
    return {state or "live": count for state, count in rows}


def sweep_plan(session: Session, now: datetime) -> str:
    """SQLite's query plan for the sweep (for the benchmark, and for doubting operators)."""
    sql = "SELECT id FROM recordings WHERE purge_state IS NULL AND retain_until <= :now"
    rows = session.execute(text(f"EXPLAIN QUERY PLAN {sql}"), {"now": now.isoformat()})
    return "; ".join(str(r[-1]) for r in rows)


__all__ = ["ACTOR", "PURGED", "RunSummary", "expiring", "run", "scan_orphans"]
