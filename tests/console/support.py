"""Console test helpers: provision sign-ins for the World's users, sign in, read CSRF tokens."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

import pyotp
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.console.accounts import provision
from api.core.services import Services

PASSWORD = "correct horse battery staple"
NAMES = {"officer": "olivia", "other_officer": "oscar", "admin": "admin", "auditor": "audrey"}
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@dataclass
class Login:
    name: str
    secret: str

    def code(self, offset_steps: int = 0) -> str:
        return pyotp.TOTP(self.secret).at(time.time() + 30 * offset_steps)


def services_of(app: FastAPI) -> Services:
    services: Services = app.state.services
    return services


def provision_login(app: FastAPI, name: str, password: str = PASSWORD) -> Login:
    with services_of(app).sessions() as session, session.begin():
        done = provision(session, name, password)
    assert done.uri.startswith("otpauth://totp/Countersign:")
    return Login(name, done.secret)


def csrf_of(html: str) -> str:
    match = _CSRF.search(html)
    assert match is not None, "no CSRF field on the page"
    return match.group(1)


def browser(app: FastAPI) -> TestClient:
    """A client with its own cookie jar (a browser of its own); redirects are not followed."""
    return TestClient(app, follow_redirects=False)


def sign_in(app: FastAPI, login: Login, code: str | None = None, password: str = PASSWORD) -> tuple[TestClient, int]:
    """A fresh browser that submitted the sign-in form; (browser, status). 303 means signed in."""
    client = browser(app)
    form = client.get("/console/sign-in")
    assert form.status_code == 200
    reply = client.post(
        "/console/sign-in",
        data={"csrf": csrf_of(form.text), "name": login.name, "password": password, "code": code or login.code()},
    )
    return client, reply.status_code


def signed_in(app: FastAPI, login: Login, offset_steps: int = 0) -> TestClient:
    client, status = sign_in(app, login, login.code(offset_steps))
    assert status == 303, "sign-in failed"
    return client


def page_csrf(client: TestClient, path: str = "/console") -> str:
    reply = client.get(path)
    assert reply.status_code == 200, reply.text
    return csrf_of(reply.text)
