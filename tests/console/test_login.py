"""Signing in to the console: password (Argon2id) and TOTP, refusals, replay, lockout, expiry, sign-out."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pyotp
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from typer.testing import CliRunner

from api.cli import app as server_cli
from api.console import accounts, passwords, sessions
from api.core.models import AccessLog, ConsoleLogin, ConsoleSession, User, utcnow
from api.core.tokens import token_hash
from evidence.audit_actions import Action
from tests.conftest import World
from tests.console.support import PASSWORD, Login, csrf_of, page_csrf, provision_login, services_of, sign_in, signed_in


def _entries(app: FastAPI, action: Action) -> list[AccessLog]:
    with services_of(app).sessions() as session:
        return list(session.scalars(select(AccessLog).where(AccessLog.action == action).order_by(AccessLog.seq)))


def test_password_and_totp_sign_in(app: FastAPI, logins: dict[str, Login]) -> None:
    client, status = sign_in(app, logins["officer"])
    assert status == 303
    cookie = next(h for h in client.cookies.jar if h.name == sessions.COOKIE)
    assert cookie.path == "/console" and not cookie.secure
    assert cookie.has_nonstandard_attr("HttpOnly")
    home = client.get("/console")
    assert home.status_code == 200 and "Welcome, olivia" in home.text
    with services_of(app).sessions() as session:
        rows = list(session.scalars(select(ConsoleSession)))
        stored = session.get(ConsoleLogin, rows[0].user_id)
    assert [r.token_hash for r in rows] == [token_hash(cookie.value or "")]  # the hash only, never the cookie
    assert stored is not None and stored.password_hash.startswith("$argon2id$")
    assert PASSWORD not in stored.password_hash
    signed = _entries(app, Action.CONSOLE_SIGN_IN)
    assert [e.outcome for e in signed] == ["allowed"]


def test_cookie_attributes_and_secure_behind_tls(app: FastAPI, logins: dict[str, Login]) -> None:
    client = TestClient(app, follow_redirects=False)
    form = client.get("/console/sign-in")
    reply = client.post(
        "/console/sign-in",
        data={"csrf": csrf_of(form.text), "name": "olivia", "password": PASSWORD, "code": logins["officer"].code()},
        headers={"X-Forwarded-Proto": "https"},
    )
    assert reply.status_code == 303
    set_cookie = [
        v for k, v in reply.headers.multi_items() if k == "set-cookie" and v.startswith(sessions.COOKIE + "=")
    ]
    assert len(set_cookie) == 1
    attributes = {part.strip().lower() for part in set_cookie[0].split(";")}
    assert {"httponly", "secure", "samesite=strict", "path=/console"} <= attributes


def test_wrong_code_and_wrong_password_are_refused(app: FastAPI, logins: dict[str, Login]) -> None:
    login = logins["officer"]
    wrong = f"{(int(login.code()) + 1) % 1_000_000:06d}"
    client, status = sign_in(app, login, wrong)
    assert status == 401 and sessions.COOKIE not in client.cookies
    _, status = sign_in(app, login, password="not the password at all")
    assert status == 401
    _, status = sign_in(app, Login("nobody", login.secret))
    assert status == 401
    reasons = [e.detail["reason"] for e in _entries(app, Action.CONSOLE_SIGN_IN)]
    assert reasons == ["wrong code", "wrong password", "unknown name or no console sign-in"]
    with services_of(app).sessions() as session:
        assert session.scalars(select(ConsoleSession)).all() == []


def test_a_code_is_not_accepted_twice(app: FastAPI, logins: dict[str, Login]) -> None:
    login = logins["officer"]
    code = login.code()
    _, first = sign_in(app, login, code)
    _, again = sign_in(app, login, code)  # seen over a shoulder, replayed in its window
    assert (first, again) == (303, 401)
    assert _entries(app, Action.CONSOLE_SIGN_IN)[-1].detail["reason"] == "code already used"
    _, earlier = sign_in(app, login, login.code(-1))  # the step before is in the drift window, but older
    assert earlier == 401
    _, later = sign_in(app, login, login.code(+1))  # the next step's code is new
    assert later == 303


def test_repeated_failures_lock_the_account_even_for_the_right_password(app: FastAPI, logins: dict[str, Login]) -> None:
    login = logins["officer"]
    for _ in range(accounts.LOCK_AFTER):
        _, status = sign_in(app, login, password="a wrong password!")
        assert status == 401
    locked = _entries(app, Action.CONSOLE_LOCKED)
    assert len(locked) == 1 and locked[0].outcome == "denied"
    _, status = sign_in(app, login)  # the right password and a fresh code
    assert status == 401
    assert _entries(app, Action.CONSOLE_SIGN_IN)[-1].detail["reason"] == "account locked"
    with services_of(app).sessions() as session, session.begin():
        session.execute(update(ConsoleLogin).values(locked_until=utcnow() - timedelta(seconds=1)))
    _, status = sign_in(app, login, login.code(+1))  # the lock has run out
    assert status == 303


def test_sessions_expire_when_idle_and_absolutely(app: FastAPI, logins: dict[str, Login]) -> None:
    idle = signed_in(app, logins["officer"])
    absolute = signed_in(app, logins["other_officer"])
    assert idle.get("/console/search").status_code == 200
    with services_of(app).sessions() as session, session.begin():
        for row in session.scalars(select(ConsoleSession)):
            if row.user_id == _user_id(app, "olivia"):
                row.last_seen_at = utcnow() - sessions.IDLE - timedelta(seconds=1)
            else:
                row.expires_at = utcnow() - timedelta(seconds=1)
    for client in (idle, absolute):
        reply = client.get("/console/search")
        assert reply.status_code == 303 and reply.headers["location"] == "/console/sign-in"
    with services_of(app).sessions() as session:
        assert session.scalars(select(ConsoleSession)).all() == []  # deleted when found expired


def _user_id(app: FastAPI, name: str) -> str:
    with services_of(app).sessions() as session:
        user = session.scalar(select(User).where(User.name == name))
        assert user is not None
        return user.id


def test_sign_out_ends_the_session(app: FastAPI, logins: dict[str, Login]) -> None:
    client = signed_in(app, logins["officer"])
    stolen = client.cookies.get(sessions.COOKIE, path="/console")
    reply = client.post("/console/sign-out", data={"csrf": page_csrf(client)})
    assert reply.status_code == 303 and reply.headers["location"] == "/console/sign-in"
    with services_of(app).sessions() as session:
        assert session.scalars(select(ConsoleSession)).all() == []
    replay = TestClient(app, follow_redirects=False, cookies={sessions.COOKIE: stolen or ""})
    assert replay.get("/console/search").status_code == 303  # the old cookie is worth nothing now
    assert [e.outcome for e in _entries(app, Action.CONSOLE_SIGN_OUT)] == ["allowed"]


def test_disabled_user_is_signed_out_at_once(app: FastAPI, world: World, logins: dict[str, Login]) -> None:
    client = signed_in(app, logins["officer"])
    reply = client.get("/console/search")
    assert reply.status_code == 200
    with services_of(app).sessions() as session, session.begin():  # what POST /v1/users/{id}/disable sets
        session.execute(update(User).where(User.name == "olivia").values(disabled=True))
    assert client.get("/console/search").status_code == 303


def test_weak_password_is_refused_and_argon2id_verifies() -> None:
    with pytest.raises(passwords.WeakPassword):
        passwords.hash_password("short")
    stored = passwords.hash_password(PASSWORD)
    assert passwords.verify_password(stored, PASSWORD)
    assert not passwords.verify_password(stored, PASSWORD + "!")


def test_server_command_provisions_and_prints_the_uri_once(
    app: FastAPI, world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COUNTERSIGN_ENV", "development")  # as the test service (tests/conftest.py's settings)
    result = CliRunner().invoke(
        server_cli,
        ["console-login", "olivia", "--data", str(tmp_path / "server")],
        input=f"{PASSWORD}\n{PASSWORD}\n",
    )
    assert result.exit_code == 0, result.output
    uri = next(line for line in result.output.splitlines() if line.startswith("otpauth://"))
    secret = pyotp.parse_uri(uri).secret
    _, status = sign_in(app, Login("olivia", secret))
    assert status == 303
    assert [e.actor for e in _entries(app, Action.CONSOLE_LOGIN_SET)] == ["system"]
    again = CliRunner().invoke(server_cli, ["console-login", "olivia", "--data", str(tmp_path / "server")],
                               input="short\nshort\n")  # fmt: skip
    assert again.exit_code != 0 and "12 characters" in again.output
    provision_login(app, "olivia")  # a reset: the earlier sessions end
    with services_of(app).sessions() as session:
        assert session.scalars(select(ConsoleSession)).all() == []
