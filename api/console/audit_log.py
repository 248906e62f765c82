"""The auditor's audit browser: the access log filtered and paged (names resolved), its checkpoint and
verification status, and a CSV export of what the filters select.

Auditors only (an officer or admin gets the guard's logged 403 page). The filters are SQL where
clauses on access_log, so a page of 100 is 100 matching entries, however rare they are. Actors are
shown by name (api.routes.audit.with_actor_names, the API's own lookup), and the actor filter
matches names: the ids of the users and devices so named, found in the same statement.

Reading is logged as the API logs it (api:audit:read, with the filters); a CSV export is logged
(console:audit:export) and committed before a row is read. "Verify now" is the check behind
`countersign audit verify`: the API's own export (GET /v1/audit/export, which signs a checkpoint
first and logs api:audit:export) run through evidence.audit_log.verify_file with the service's key.
It reads the whole log, so it runs on a POST button, never on a page view.
"""

from __future__ import annotations

import csv
import io
import json
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response, StreamingResponse
from sqlalchemy import ColumnElement, String, literal, or_, select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from api.console import render
from api.console.csrf import Form
from api.console.guard import PREFIX, Refused, as_page, form_as, local_day, signed_in_as
from api.console.sessions import ConsoleUser
from api.core.audit import record_committed
from api.core.deps import ServicesDep
from api.core.models import AccessLog, AuditCheckpoint, AuditHead, Device, User, utcnow
from api.core.services import Services
from api.routes.audit import MAX_SEQ, checkpoints, export, with_actor_names
from api.schemas import AccessLogPublic, CheckpointPublic
from api.search import contains_text
from evidence import display
from evidence.audit_actions import Action
from evidence.audit_log import VerifyReport, timestamp, verify_file
from evidence.text import TextError, check_text, printable

router = APIRouter(prefix=PREFIX, include_in_schema=False)
ROLE = "auditor"
PAGE = 100
LATEST_CHECKPOINTS = 5
EXPORT_BATCH = 1000  # rows per name lookup and per chunk written
OUTCOMES = ("allowed", "denied", "failed")  # what record_event's callers write (models.AccessLog.outcome)
ACTIONS = tuple(sorted(a.value for a in Action))
DETAIL_SHOWN = 500  # characters of an entry's detail on the page
TEXT_MAX = 200  # access_log.target is 200 characters; an actor name is far shorter
# A spreadsheet opening the CSV treats a cell starting with = + - or @ as a formula (and some strip a
# leading tab or carriage return first): "=HYPERLINK(...)" in a purpose or reason someone typed would
# become a live link or a calculation in the auditor's spreadsheet. Such a cell gets a leading ' so it
# is shown as the text it is (OWASP's advice for CSV injection); the log itself keeps the text as written.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
CSV_COLUMNS = ("seq", "at_utc", "at_local", "actor", "actor_name", "action", "target", "outcome", "purpose", "detail")


@dataclass(frozen=True)
class Filters:
    """The filters as typed (checked), and the window they select."""

    actor: str = ""
    action: str = ""
    target: str = ""
    outcome: str = ""
    since: str = ""  # a local date, 2026-04-01 (the form's "from")
    until: str = ""  # a local date, inclusive (the form's "to")
    start: datetime | None = None
    end: datetime | None = None  # the start of the day after `until`

    def query(self) -> dict[str, str]:
        """The filters as a URL's query (only those set): for the older-page and export links."""
        fields = {"actor": self.actor, "action": self.action, "target": self.target, "outcome": self.outcome}
        fields.update({"from": self.since, "to": self.until})
        return {k: v for k, v in fields.items() if v}

    def where(self) -> list[ColumnElement[bool]]:
        """The SQL conditions on access_log these filters mean."""
        clauses: list[ColumnElement[bool]] = []
        if self.actor:
            # The actor column holds user:<id> / device:<id>; the names are in users and devices.
            named_users = select(literal("user:", String).concat(User.id)).where(contains_text(User.name, self.actor))
            named_devices = select(literal("device:", String).concat(Device.id)).where(
                contains_text(Device.name, self.actor)
            )
            clauses.append(
                or_(
                    AccessLog.actor.in_(named_users),
                    AccessLog.actor.in_(named_devices),
                    contains_text(AccessLog.actor, self.actor),  # system, anonymous, or an id as typed
                )
            )
        if self.action:
            clauses.append(AccessLog.action == self.action)
        if self.target:
            clauses.append(contains_text(AccessLog.target, self.target))
        if self.outcome:
            clauses.append(AccessLog.outcome == self.outcome)
        if self.start is not None:
            clauses.append(AccessLog.at >= self.start)
        if self.end is not None:
            clauses.append(AccessLog.at < self.end)
        return clauses


def _text(value: str | None, field: str, user: ConsoleUser) -> str:
    try:
        return check_text(value or "", name=field, min_visible=0, max_length=TEXT_MAX)
    except TextError as exc:
        raise Refused(422, f"{exc}.", user) from exc


def parse_filters(
    user: ConsoleUser,
    actor: str | None,
    action: str | None,
    target: str | None,
    outcome: str | None,
    since: str | None,
    until: str | None,
) -> Filters:
    """The query's filters checked: an unknown action or outcome, a bad date or a backwards range is a 422 page."""
    action, outcome = (action or "").strip(), (outcome or "").strip()
    if action and action not in ACTIONS:
        raise Refused(422, "Action: choose one from the list.", user)
    if outcome and outcome not in OUTCOMES:
        raise Refused(422, f"Outcome: one of {', '.join(OUTCOMES)}.", user)
    since, until = (since or "").strip(), (until or "").strip()
    start, last = local_day(since, "From", user), local_day(until, "To", user)
    if start is not None and last is not None and last < start:
        raise Refused(422, "From is after To: the range holds no day.", user)
    return Filters(
        actor=_text(actor, "Actor", user),
        action=action,
        target=_text(target, "Target", user),
        outcome=outcome,
        since=since,
        until=until,
        start=start,
        end=last + timedelta(days=1) if last is not None else None,  # the whole last day, in the console's zone
    )


def _before(value: str | None, user: ConsoleUser) -> int | None:
    if not value:
        return None
    try:
        seq = int(value)
    except ValueError:
        seq = 0
    if not 1 <= seq <= MAX_SEQ:
        raise Refused(422, "before: a sequence number (the older-page link sets it).", user)
    return seq


@dataclass(frozen=True)
class Row:
    """One entry as the page shows it: the actor by name, the detail as compact JSON text."""

    seq: int
    at: datetime
    actor: str  # the name if the actor has one, else the actor as logged (system, anonymous)
    action: str
    target: str
    outcome: str
    purpose: str
    detail: str


def _shown(e: AccessLogPublic) -> Row:
    detail = json.dumps(e.detail, ensure_ascii=False, sort_keys=True, separators=(",", ":")) if e.detail else ""
    if len(detail) > DETAIL_SHOWN:  # a hold over thousands of recordings lists them all: the CSV has it whole
        detail = detail[:DETAIL_SHOWN] + " … (cut; the CSV export has it all)"
    return Row(e.seq, e.at, e.actor_name or e.actor, e.action, e.target or "", e.outcome, e.purpose or "", detail)


def _entries(session: Session, filters: Filters, before: int | None) -> tuple[list[AccessLogPublic], bool]:
    """A page of matching entries, newest first, and whether older ones match too."""
    query = select(AccessLog).where(*filters.where())
    if before is not None:
        query = query.where(AccessLog.seq < before)
    rows = list(session.scalars(query.order_by(AccessLog.seq.desc()).limit(PAGE + 1)))
    return with_actor_names(session, rows[:PAGE]), len(rows) > PAGE


@dataclass(frozen=True)
class Status:
    head: int  # entries in the log
    signed: int  # the last entry a checkpoint covers
    latest: list[CheckpointPublic]  # newest first


def _status(session: Session) -> Status:
    head = session.get(AuditHead, 1)
    # The API's public list (oldest first, after a seq): start it just before the latest few.
    older = select(AuditCheckpoint.seq).order_by(AuditCheckpoint.seq.desc()).offset(LATEST_CHECKPOINTS).limit(1)
    latest = checkpoints(session=session, after=session.scalar(older) or 0, limit=LATEST_CHECKPOINTS)
    return Status(
        head=head.seq if head is not None else 0,
        signed=head.checkpoint_seq if head is not None else 0,
        latest=list(reversed(latest)),
    )


def _logged(services: Services, user: ConsoleUser, **fields: Any) -> int:
    """Write an auditor's entry and commit it; a log that cannot be written refuses the page."""
    try:
        return record_committed(services.sessions, actor=user.principal.actor, **fields)
    except Exception as exc:  # fail closed: what cannot be logged is not shown
        raise Refused(503, "The access log cannot be written, so it cannot be read now.", user) from exc


@router.get("/audit")
def audit_page(
    request: Request,
    services: ServicesDep,
    actor: str | None = None,
    action: str | None = None,
    target: str | None = None,
    outcome: str | None = None,
    since: Annotated[str | None, Query(alias="from")] = None,
    until: Annotated[str | None, Query(alias="to")] = None,
    before: str | None = None,
) -> Response:
    """The access log, newest first, 100 a page ("older" pages by `before`), with the log's signed status."""
    with services.sessions() as session:
        user = signed_in_as(services, request, session, ROLE)
        filters = parse_filters(user, actor, action, target, outcome, since, until)
        older_than = _before(before, user)
        entries, more = _entries(session, filters, older_than)
        status = _status(session)
    # Logged as the API logs a read of the log (api:audit:read), with what was asked for.
    detail: dict[str, Any] = {"via": "console", "rows": len(entries), **filters.query()}
    if older_than is not None:
        detail["before"] = older_than
    _logged(services, user, action=Action.AUDIT_READ, detail=detail)
    older = urlencode({**filters.query(), "before": entries[-1].seq}) if more and entries else None
    return render.page(
        "audit.html",
        user=user,
        rows=[_shown(e) for e in entries],
        filters=filters,
        actions=ACTIONS,
        outcomes=OUTCOMES,
        paged=older_than is not None,
        first_page=urlencode(filters.query()),
        older=older,
        export=urlencode({**filters.query(), **({"before": older_than} if older_than else {})}),
        page_size=PAGE,
        log_state=status,
        verified=None,
    )


def _verified_words(report: VerifyReport) -> tuple[bool, str]:
    """What `countersign audit verify` prints, for the page."""
    span = f"seq {report.first_seq}..{report.last_seq}" if report.entries else "no entries"
    if report.ok:
        roots = f", the Merkle root at {_count(report.tree_heads, 'tree head')}" if report.tree_heads else ""
        return True, (
            f"Verified up to seq {report.last_seq or 0}: {_count(report.entries, 'entry', 'entries')} ({span}),"
            f" every hash and link, and {_count(report.checkpoints, 'signed checkpoint')}{roots},"
            " checked with the service's key."
        )
    # A problem may quote the log, which holds text others typed: shown as text, non-printing characters escaped.
    return False, f"FAILED after {report.entries} good entries ({span}): {printable(report.problems[0])}"


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else many or one + 's'}"


def _start_verify(services: Services, request: Request, form: dict[str, str]) -> tuple[ConsoleUser, Response]:
    with services.sessions() as session:
        user = form_as(services, request, session, form, ROLE)
    with as_page(user):  # the API's export: it signs a checkpoint over the head first, and logs api:audit:export
        exported = export(auditor=user.principal, services=services, after=0, until=None)
    return user, exported


def _verify_page(services: Services, user: ConsoleUser, ok: bool, words: str) -> Response:
    with services.sessions() as session:
        status = _status(session)
    return render.page("audit.html", user=user, rows=None, log_state=status, verified={"ok": ok, "words": words})


@router.post("/audit/verify")
async def verify_now(request: Request, services: ServicesDep, form: Form) -> Response:
    """Export the whole log as the CLI does and verify it as `countersign audit verify` does."""
    user, exported = await run_in_threadpool(_start_verify, services, request, form)
    assert isinstance(exported, StreamingResponse) and services.keys.signing_key is not None
    key = bytes(services.keys.signing_key.verify_key)  # the service's own key, not the one the file names
    # Spooled to a file, as the CLI saves an export: verify_file reads it in one streamed pass, flat in memory
    # however long the log. The file holds what the API's export sends an auditor; it is removed at once.
    with tempfile.TemporaryDirectory(prefix="countersign-verify-") as folder:
        path = Path(folder) / "audit-export.jsonl"
        with path.open("wb") as f:
            async for chunk in exported.body_iterator:
                f.write(chunk.encode() if isinstance(chunk, str) else bytes(chunk))
        report = await run_in_threadpool(verify_file, path, key)
    ok, words = _verified_words(report)
    return await run_in_threadpool(_verify_page, services, user, ok, words)


def _cell(value: object) -> str:
    text = "" if value is None else str(value)
    return f"'{text}" if text.startswith(FORMULA_START) else text


def _csv_rows(services: Services, filters: Filters, before: int | None, upto: int) -> Iterator[str]:
    """The header, then every matching entry before the export's own (seq < upto), oldest first."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    yield out.getvalue()
    query = select(AccessLog).where(*filters.where(), AccessLog.seq < (min(before, upto) if before else upto))
    with services.sessions() as session:
        last = 0
        while True:  # keyset pages: each a fresh statement, so no cursor stays open between chunks
            batch = query.where(AccessLog.seq > last).order_by(AccessLog.seq).limit(EXPORT_BATCH)
            rows = list(session.scalars(batch))
            if not rows:
                return
            out.seek(0)
            out.truncate()
            for e in with_actor_names(session, rows):
                detail = json.dumps(e.detail, ensure_ascii=False, sort_keys=True) if e.detail else ""
                local = display.local(e.at, render.ZONE)
                fields = (e.seq, timestamp(e.at), local, e.actor, e.actor_name, e.action, e.target, e.outcome)
                writer.writerow([_cell(v) for v in (*fields, e.purpose, detail)])
            yield out.getvalue()
            last = rows[-1].seq
            session.expunge_all()  # flat memory over a long export


@router.get("/audit/export")
def export_csv(
    request: Request,
    services: ServicesDep,
    actor: str | None = None,
    action: str | None = None,
    target: str | None = None,
    outcome: str | None = None,
    since: Annotated[str | None, Query(alias="from")] = None,
    until: Annotated[str | None, Query(alias="to")] = None,
    before: str | None = None,
) -> Response:
    """The matching entries as CSV, oldest first: logged (with the filters) and committed before any row is read."""
    with services.sessions() as session:
        user = signed_in_as(services, request, session, ROLE)
    filters = parse_filters(user, actor, action, target, outcome, since, until)
    older_than = _before(before, user)
    detail: dict[str, Any] = {"via": "console", "format": "csv", **filters.query()}
    if older_than is not None:
        detail["before"] = older_than
    # The export's own entry bounds it: the rows are those logged before it, so the entry says what left.
    seq = _logged(services, user, action=Action.CONSOLE_AUDIT_EXPORT, detail=detail)
    name = f"countersign-audit-{utcnow().strftime('%Y%m%dT%H%M%SZ')}.csv"
    return StreamingResponse(
        _csv_rows(services, filters, older_than, seq),
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="{name}"',
            "Cache-Control": "no-store",
            "X-Countersign-Access-Log": str(seq),
        },
    )
