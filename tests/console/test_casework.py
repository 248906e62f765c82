"""Case work on the recording page: notes (officers of the site only, audited, shown as text), the
incident flag and the early-deletion request (the API's own rules: never while held)."""

from __future__ import annotations

import re
from typing import Any

import markupsafe
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from api.console import casework
from api.core.models import AccessLog, Recording, RecordingNote
from evidence.audit_actions import Action
from retention import job
from retention.models import DeletionRequest
from tests.conftest import World, bearer
from tests.console.support import Login, page_csrf, provision_login, services_of, signed_in
from tests.support.retention_support import age, assert_purged_once, upload

SCRIPT = "<script>alert('x')</script>"


def _notes(app: FastAPI) -> list[RecordingNote]:
    with services_of(app).sessions() as session:
        return list(session.scalars(select(RecordingNote).order_by(RecordingNote.created_at)))


def _entries(app: FastAPI, action: Action) -> list[AccessLog]:
    with services_of(app).sessions() as session:
        return list(session.scalars(select(AccessLog).where(AccessLog.action == action).order_by(AccessLog.seq)))


def _add(client: TestClient, rid: str, text: str) -> Any:
    path = f"/console/recordings/{rid}"
    return client.post(f"{path}/notes", data={"csrf": page_csrf(client, path), "text": text})


def test_officer_adds_notes_shown_as_text_and_logged_without_their_text(
    client: TestClient, app: FastAPI, world: World, logins: dict[str, Login]
) -> None:
    rid = upload(client, world.device)
    officer = signed_in(app, logins["officer"])
    path = f"/console/recordings/{rid}"
    assert 'id="no-notes"' in officer.get(path).text
    reply = _add(officer, rid, f"Customer called back.\r\nSaid: {SCRIPT}")
    assert reply.status_code == 303 and reply.headers["location"] == path
    assert _add(officer, rid, "Second note").status_code == 303
    first, second = _notes(app)
    assert first.text == f"Customer called back.\nSaid: {SCRIPT}"  # the browser's CRLF kept as one line break
    assert first.recording_id == rid and first.created_at.utcoffset() is not None
    page = officer.get(path).text
    shown = str(markupsafe.escape(first.text))
    assert SCRIPT not in page and f'<p class="note-text">{shown}</p>' in page  # text, never markup
    assert page.index(shown) < page.index("Second note")  # oldest first
    assert "olivia" in page.split('id="notes"')[1].split("</ol>")[0]  # the author is shown
    entries = _entries(app, Action.CONSOLE_NOTE_ADD)
    assert [(e.actor, e.target, e.detail["note"]) for e in entries] == [
        (e.actor, f"recording:{rid}", n.id) for e, n in zip(entries, (first, second), strict=True)
    ]
    assert entries[0].detail["chars"] == len(first.text)
    log = client.get("/v1/audit", headers=bearer(world.auditor)).json()
    assert "Customer called back" not in str(log) and "Second note" not in str(log)  # the auditor's log has no text


def test_a_note_is_kept_only_with_its_log_entry(
    client: TestClient, app: FastAPI, world: World, logins: dict[str, Login], monkeypatch: pytest.MonkeyPatch
) -> None:
    rid = upload(client, world.device)
    officer = signed_in(app, logins["officer"])
    csrf = page_csrf(officer, f"/console/recordings/{rid}")

    def broken_log(*_args: Any, **_kwargs: Any) -> None:
        raise RuntimeError("log unavailable")

    monkeypatch.setattr(casework, "record_event", broken_log)
    reply = officer.post(f"/console/recordings/{rid}/notes", data={"csrf": csrf, "text": "must not be kept"})
    assert reply.status_code == 503 and "access log cannot be written" in reply.text
    assert _notes(app) == []


def test_only_the_sites_officers_add_or_see_notes(
    client: TestClient, app: FastAPI, world: World, logins: dict[str, Login]
) -> None:
    rid = upload(client, world.device)
    assert _add(signed_in(app, logins["officer"]), rid, "only for north's officers").status_code == 303
    otto = signed_in(app, provision_login(app, "otto"))  # another officer of north sees it
    assert "only for north&#39;s officers" in otto.get(f"/console/recordings/{rid}").text
    oscar = signed_in(app, logins["other_officer"])  # an officer of south: as if it did not exist
    csrf = page_csrf(oscar)
    assert oscar.get(f"/console/recordings/{rid}").status_code == 404
    refused = oscar.post(f"/console/recordings/{rid}/notes", data={"csrf": csrf, "text": "from the south"})
    assert refused.status_code == 404 and "north" not in refused.text
    for role in ("admin", "auditor"):
        browser = signed_in(app, logins[role])
        page = browser.get(f"/console/recordings/{rid}")
        assert page.status_code == 403 and "only for north" not in page.text
        posted = browser.post(f"/console/recordings/{rid}/notes", data={"csrf": page_csrf(browser), "text": "x"})
        assert posted.status_code == 403
    assert [n.text for n in _notes(app)] == ["only for north's officers"]


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "at least 1 visible character"),
        (" \r\n  \n ", "at least 1 visible character"),
        ("a\ttab", "U+0009"),  # only the line break is let through
        ("x" * (casework.NOTE_MAX + 1), f"longer than {casework.NOTE_MAX}"),
        ("bell \x07 here", "U+0007"),
        ("escape \x1b[31m red", "U+001B"),
        ("bidi \u202e override", "U+202E"),
    ],
    ids=["empty", "blank", "tab", "too-long", "bell", "escape", "bidi"],
)
def test_bad_notes_are_refused_clearly(
    client: TestClient, app: FastAPI, world: World, logins: dict[str, Login], text: str, why: str
) -> None:
    rid = upload(client, world.device)
    officer = signed_in(app, logins["officer"])
    reply = _add(officer, rid, text)
    assert reply.status_code == 422 and why in reply.text and "cannot be kept" in reply.text
    assert _notes(app) == [] and _entries(app, Action.CONSOLE_NOTE_ADD) == []


def test_the_longest_note_is_kept(client: TestClient, app: FastAPI, world: World, logins: dict[str, Login]) -> None:
    rid = upload(client, world.device)
    assert _add(signed_in(app, logins["officer"]), rid, "n" * casework.NOTE_MAX).status_code == 303
    assert [len(n.text) for n in _notes(app)] == [casework.NOTE_MAX]


@pytest.mark.parametrize("body", [b"text=caf\xe9", b"text=caf%E9"], ids=["raw-latin1", "percent-latin1"])
def test_a_form_that_is_not_utf8_is_refused(
    client: TestClient, app: FastAPI, world: World, logins: dict[str, Login], body: bytes
) -> None:
    rid = upload(client, world.device)
    officer = signed_in(app, logins["officer"])
    csrf = page_csrf(officer, f"/console/recordings/{rid}")
    reply = officer.post(
        f"/console/recordings/{rid}/notes",
        content=f"csrf={csrf}&".encode() + body,
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert reply.status_code == 400 and "not UTF-8" in reply.text
    assert reply.headers["content-security-policy"]  # the console's own page, not a bare error
    assert _notes(app) == []


def test_flag_an_incident_category(client: TestClient, app: FastAPI, world: World, logins: dict[str, Login]) -> None:
    rid = upload(client, world.device)
    officer = signed_in(app, logins["officer"])
    path = f"/console/recordings/{rid}"
    page = officer.get(path).text
    assert '<option value="threats">' in page  # the site's categories (the kiosk's defaults)
    reply = officer.post(f"{path}/flag", data={"csrf": page_csrf(officer, path), "category": "threats"})
    assert reply.status_code == 303
    detail = client.get(f"/v1/evidence/{rid}", headers=bearer(world.officer)).json()
    assert detail["incident_category"] == "threats"
    assert '<option value="threats" selected>' in officer.get(path).text
    (entry,) = _entries(app, Action.RECORDING_FLAG)
    assert entry.target == f"recording:{rid}" and entry.detail["category"] == "threats"
    bad = officer.post(f"{path}/flag", data={"csrf": page_csrf(officer, path), "category": "<b>no</b>"})
    assert bad.status_code == 422 and "category" in bad.text and "<b>" not in bad.text
    empty = officer.post(f"{path}/flag", data={"csrf": page_csrf(officer, path), "category": ""})
    assert empty.status_code == 422
    assert len(_entries(app, Action.RECORDING_FLAG)) == 1


def test_deletion_needs_confirmation_and_a_reason(
    client: TestClient, app: FastAPI, world: World, logins: dict[str, Login]
) -> None:
    rid = upload(client, world.device)
    officer = signed_in(app, logins["officer"])
    path = f"/console/recordings/{rid}"
    reason = "recorded by mistake, no incident"
    unconfirmed = officer.post(f"{path}/deletion", data={"csrf": page_csrf(officer, path), "reason": reason})
    assert unconfirmed.status_code == 422 and "Tick the box" in unconfirmed.text
    short = officer.post(
        f"{path}/deletion", data={"csrf": page_csrf(officer, path), "reason": "oops", "confirm": "yes"}
    )
    assert short.status_code == 422 and "reason" in short.text
    with services_of(app).sessions() as session:
        assert session.scalars(select(DeletionRequest)).all() == []
    asked = officer.post(
        f"{path}/deletion", data={"csrf": page_csrf(officer, path), "reason": reason, "confirm": "yes"}
    )
    assert asked.status_code == 303 and asked.headers["location"] == path
    with services_of(app).sessions() as session:
        (req,) = session.scalars(select(DeletionRequest)).all()
        assert session.get(Recording, rid) is not None  # asked, not carried out: the grace period runs
    assert req.reason == reason and req.requested_by.startswith("user:")
    page = officer.get(path).text
    assert 'id="deletion-requested"' in page and 'id="request-deletion"' not in page
    again = officer.post(
        f"{path}/deletion", data={"csrf": page_csrf(officer, path), "reason": reason, "confirm": "yes"}
    )
    assert again.status_code == 409 and "already requested" in again.text


def test_deletion_is_refused_while_held(
    client: TestClient, app: FastAPI, world: World, logins: dict[str, Login]
) -> None:
    rid = upload(client, world.device)
    officer = signed_in(app, logins["officer"])
    path = f"/console/recordings/{rid}"
    hold = {"csrf": page_csrf(officer, path), "case_ref": "C-9", "reason": "litigation notice received"}
    assert officer.post(f"{path}/holds", data=hold).status_code == 303
    assert 'id="deletion-held"' in officer.get(path).text  # the page says so before anyone tries
    form = {"csrf": page_csrf(officer, path), "reason": "recorded by mistake, no incident", "confirm": "yes"}
    refused = officer.post(f"{path}/deletion", data=form)
    assert refused.status_code == 409
    assert 'id="refusal"' in refused.text and "legal hold" in refused.text and "C-9" in refused.text
    with services_of(app).sessions() as session:
        assert session.scalars(select(DeletionRequest)).all() == []
    (denied,) = _entries(app, Action.RECORDING_DELETE)
    assert denied.outcome == "denied" and denied.target == f"recording:{rid}"  # the attempt on held evidence is logged


def test_a_purge_takes_the_notes_with_the_keys(
    client: TestClient, app: FastAPI, world: World, logins: dict[str, Login]
) -> None:
    """Notes say what was said: once a recording is purged they are gone too (a held one keeps them)."""
    due, held = upload(client, world.device), upload(client, world.device)
    officer = signed_in(app, logins["officer"])
    for rid in (due, held):
        assert _add(officer, rid, f"What the customer said in {rid[:8]}").status_code == 303
    body = {"case_ref": "2026-NOTES-1", "reason": "litigation hold for this case", "recordings": [held]}
    assert client.post("/v1/holds", json=body, headers=bearer(world.officer)).status_code == 201
    services = services_of(app)
    for rid in (due, held):
        age(services, rid, 400)
    summary = job.run(services)
    assert summary.purged == [due] and held in summary.kept_by_hold
    assert_purged_once(services, due)
    assert [n.recording_id for n in _notes(app)] == [held]
    assert len(_entries(app, Action.CONSOLE_NOTE_ADD)) == 2  # the log keeps that notes were written


def _found(browser: TestClient, **query: str) -> set[str]:
    page = browser.get("/console/search", params=query)
    assert page.status_code == 200, page.text
    return set(re.findall(r'href="/console/recordings/([0-9a-f-]{36})"', page.text))


def test_search_by_note_text_and_by_hold(
    client: TestClient, app: FastAPI, world: World, logins: dict[str, Login]
) -> None:
    loud, quiet, held = (upload(client, world.device) for _ in range(3))
    officer = signed_in(app, logins["officer"])
    assert _add(officer, loud, "Customer demanded a Refund, 100% of it").status_code == 303
    assert _add(officer, quiet, "calm conversation, 100 percent polite").status_code == 303
    body = {"case_ref": "2026-SEARCH-1", "reason": "litigation hold for this case", "recordings": [held]}
    assert client.post("/v1/holds", json=body, headers=bearer(world.officer)).status_code == 201
    assert _found(officer, note="refund") == {loud}  # case-insensitive
    assert _found(officer, note="100%") == {loud}  # LIKE's wildcards are literal: "100 percent" is no match
    assert _found(officer, note="_") == set()
    assert _found(officer, note="nobody wrote this") == set()
    assert _found(officer, held="yes") == {held}
    assert _found(officer, held="no") == {loud, quiet}
    assert _found(officer, held="no", note="calm") == {quiet}
    assert 'value="refund"' in officer.get("/console/search", params={"note": "refund"}).text  # the form keeps it
    oscar = signed_in(app, logins["other_officer"])  # south: north's notes find nothing, not even a count
    page = oscar.get("/console/search", params={"note": "refund"})
    assert page.status_code == 200 and loud not in page.text and "0 recordings" in page.text


def test_keep_a_recording_longer_never_shorter(
    client: TestClient, app: FastAPI, world: World, logins: dict[str, Login]
) -> None:
    rid = upload(client, world.device)
    officer = signed_in(app, logins["officer"])
    path = f"/console/recordings/{rid}"

    def extend(until: str, reason: str = "the court asked us to keep it") -> Any:
        return officer.post(f"{path}/extend", data={"csrf": page_csrf(officer, path), "until": until, "reason": reason})

    assert extend("2036-04-01").status_code == 303
    detail = client.get(f"/v1/evidence/{rid}", headers=bearer(world.officer)).json()
    assert detail["retain_until"].startswith("2036-04-01T14:59:59")  # the end of that day in Tokyo, in UTC
    (entry,) = _entries(app, Action.RECORDING_EXTEND)
    assert entry.target == f"recording:{rid}" and entry.purpose == "the court asked us to keep it"
    shorter = extend("2035-01-01")
    assert shorter.status_code == 409 and "never shortened" in shorter.text
    for until, reason, why in [
        ("01/04/2036", "the court asked us to keep it", "a date such as"),
        ("2036-04-01", "short", "reason"),
        ("2001-01-01", "the court asked us to keep it", "future"),
    ]:
        refused = extend(until, reason)
        assert refused.status_code == 422 and why in refused.text, (until, refused.text)
    assert len(_entries(app, Action.RECORDING_EXTEND)) == 1
    after = client.get(f"/v1/evidence/{rid}", headers=bearer(world.officer)).json()
    assert after["retain_until"] == detail["retain_until"]  # nothing refused changed it
