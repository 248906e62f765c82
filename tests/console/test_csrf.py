"""Every state-changing console form needs its session's CSRF token.

Without it, or with a wrong one (or another session's), the answer is 403 and nothing changes.
"""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from api.console import sessions
from api.core.models import AccessLog, ConsoleListenGrant, ConsoleSession, Recording, RecordingNote
from evidence.audit_actions import Action
from retention.models import DeletionRequest, Hold
from tests.conftest import World
from tests.console.support import PASSWORD, Login, browser, csrf_of, page_csrf, services_of, signed_in
from tests.support.retention_support import upload


def _state(app: FastAPI) -> tuple[int | str | None, ...]:
    """What a forged form could change: holds, released holds, grants, sessions, reads logged, notes,
    incident categories, deletion requests."""
    with services_of(app).sessions() as session:
        return (
            session.scalar(select(func.count()).select_from(Hold)) or 0,
            session.scalar(select(func.count()).select_from(Hold).where(Hold.released_at.is_not(None))) or 0,
            session.scalar(select(func.count()).select_from(ConsoleListenGrant)) or 0,
            session.scalar(select(func.count()).select_from(ConsoleSession)) or 0,
            session.scalar(select(func.count()).where(AccessLog.action == Action.EVIDENCE_READ)) or 0,
            session.scalar(select(func.count()).select_from(RecordingNote)) or 0,
            *session.scalars(select(Recording.incident_category).order_by(Recording.id)),
            *session.scalars(select(Recording.retain_until).order_by(Recording.id)),
            session.scalar(select(func.count()).select_from(DeletionRequest)) or 0,
        )


@pytest.fixture
def held(client: TestClient, app: FastAPI, world: World, logins: dict[str, Login]) -> tuple[TestClient, str, str]:
    """An officer's browser, a recording of theirs, and an active hold on it (placed with a valid token)."""
    rid = upload(client, world.device)
    officer = signed_in(app, logins["officer"])
    path = f"/console/recordings/{rid}"
    form = {"csrf": page_csrf(officer, path), "case_ref": "C-7", "reason": "litigation notice received"}
    assert officer.post(f"{path}/holds", data=form).status_code == 303
    with services_of(app).sessions() as session:
        hold = session.scalars(select(Hold)).one()
    return officer, rid, hold.id


def _forms(rid: str, hold_id: str) -> list[tuple[str, dict[str, str]]]:
    return [
        (f"/console/recordings/{rid}/listen", {"purpose": "complaint review"}),
        (f"/console/recordings/{rid}/holds", {"case_ref": "C-8", "reason": "another legal matter"}),
        (f"/console/holds/{hold_id}/release", {"reason": "case closed by court", "back": rid}),
        (f"/console/recordings/{rid}/notes", {"text": "a forged note"}),
        (f"/console/recordings/{rid}/flag", {"category": "threats"}),
        (f"/console/recordings/{rid}/extend", {"until": "2036-04-01", "reason": "forged: keep it for ever"}),
        (f"/console/recordings/{rid}/deletion", {"reason": "forged: delete the evidence", "confirm": "yes"}),
        ("/console/sign-out", {}),
    ]


@pytest.mark.parametrize("token", [None, "", "not-the-token"], ids=["missing", "empty", "wrong"])
def test_forms_without_the_token_are_refused(
    app: FastAPI, held: tuple[TestClient, str, str], logins: dict[str, Login], token: str | None
) -> None:
    officer, rid, hold_id = held
    before = _state(app)
    for path, fields in _forms(rid, hold_id):
        data = fields if token is None else {**fields, "csrf": token}
        reply = officer.post(path, data=data)
        assert reply.status_code == 403, path
        assert "CSRF" in reply.text
    assert _state(app) == before
    assert officer.get("/console/search").status_code == 200  # still signed in: sign-out was refused too


def test_another_sessions_token_is_refused(
    app: FastAPI, held: tuple[TestClient, str, str], logins: dict[str, Login]
) -> None:
    officer, rid, hold_id = held
    otto_login = logins["other_officer"]
    other = signed_in(app, otto_login)
    foreign = page_csrf(other)  # a real token, of another session
    before = _state(app)
    for path, fields in _forms(rid, hold_id):
        assert officer.post(path, data={**fields, "csrf": foreign}).status_code == 403, path
    assert _state(app) == before
    with services_of(app).sessions() as session:
        denied = session.scalars(select(AccessLog).where(AccessLog.action == Action.ACCESS_DENIED)).all()
    assert sum("CSRF" in str(e.detail.get("reason")) for e in denied) == len(_forms(rid, hold_id))  # each logged


def test_a_json_body_is_not_a_form(app: FastAPI, held: tuple[TestClient, str, str]) -> None:
    officer, rid, _ = held
    csrf = page_csrf(officer)
    before = _state(app)
    reply = officer.post(f"/console/recordings/{rid}/listen", json={"csrf": csrf, "purpose": "complaint review"})
    assert reply.status_code == 403 and _state(app) == before


def test_sign_in_needs_the_forms_token(app: FastAPI, logins: dict[str, Login]) -> None:
    login = logins["officer"]
    fields = {"name": login.name, "password": PASSWORD, "code": login.code()}
    stranger = browser(app)  # a page elsewhere posting a sign-in form (login CSRF): no cookie, no token
    assert stranger.post("/console/sign-in", data={**fields, "csrf": "guessed"}).status_code == 403
    own = browser(app)
    token = csrf_of(own.get("/console/sign-in").text)
    assert own.post("/console/sign-in", data={**fields, "csrf": token + "x"}).status_code == 403
    assert sessions.COOKIE not in own.cookies
    assert own.post("/console/sign-in", data={**fields, "csrf": token}).status_code == 303
