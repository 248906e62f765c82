"""What every console page does first, and the two ways a page ends early.

signed_in (the cookie's user, else SignInNeeded: a redirect to the sign-in page), officer (an
admin or auditor gets a logged 403 page), checked (the form's CSRF token), and as_page (the
API's refusals shown as the console's error page). pages.install turns SignInNeeded, Refused
and csrf.FormRefused into responses.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, time

from fastapi import HTTPException, Request
from fastapi.responses import RedirectResponse
from pydantic import ValidationError
from sqlalchemy.orm import Session

from api.console import csrf, render, sessions
from api.console.csrf import CsrfRefused
from api.console.sessions import ConsoleUser
from api.core.deps import deny
from api.core.services import Services

PREFIX = "/console"


class SignInNeeded(Exception):
    pass


class Refused(Exception):
    def __init__(self, status: int, message: str, user: ConsoleUser | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.user = status, message, user


def signed_in(session: Session, request: Request) -> ConsoleUser:
    user = sessions.current(session, request)
    session.commit()  # an expired session's deletion, or the idle clock's touch
    if user is None:
        raise SignInNeeded()
    return user


def of_role(services: Services, request: Request, user: ConsoleUser, role: str) -> ConsoleUser:
    """The user if their role is ``role``; else a logged 403 page (each page is for one role)."""
    if user.principal.role != role:
        why = f"role {user.principal.role} may not do this"
        deny(services, request, 403, why, user.principal.actor)  # logged like the API's refusals
        raise Refused(403, f"This page is for {role}s; a {user.principal.role} may not open it.", user)
    return user


def officer(services: Services, request: Request, user: ConsoleUser) -> ConsoleUser:
    return of_role(services, request, user, "officer")


def checked(services: Services, request: Request, user: ConsoleUser, form: dict[str, str]) -> None:
    try:
        csrf.check(user.csrf, form)
    except CsrfRefused as exc:
        deny(services, request, 403, "console form without a valid CSRF token", user.principal.actor)
        raise Refused(403, str(exc), user) from exc


def signed_in_officer(services: Services, request: Request, session: Session) -> ConsoleUser:
    """The signed-in officer of this request (every officer page's first line)."""
    return officer(services, request, signed_in(session, request))


def officer_form(services: Services, request: Request, session: Session, form: dict[str, str]) -> ConsoleUser:
    """The signed-in officer, whose form carries this session's CSRF token (every officer form's first line)."""
    user = signed_in_officer(services, request, session)
    checked(services, request, user, form)
    return user


def signed_in_as(services: Services, request: Request, session: Session, role: str) -> ConsoleUser:
    """The signed-in user of this request, who must hold ``role`` (an auditor's or an admin's page's first line)."""
    return of_role(services, request, signed_in(session, request), role)


def form_as(services: Services, request: Request, session: Session, form: dict[str, str], role: str) -> ConsoleUser:
    """The signed-in user of ``role`` whose form carries this session's CSRF token (an admin form's first line)."""
    user = signed_in_as(services, request, session, role)
    checked(services, request, user, form)
    return user


@contextmanager
def as_page(user: ConsoleUser) -> Iterator[None]:
    """The API's refusals (HTTPException, a body that fails its schema) as the console's error page."""
    try:
        yield
    except HTTPException as exc:
        raise Refused(exc.status_code, str(exc.detail), user) from exc
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise Refused(422, problems, user) from exc


def local_day(value: str | None, field: str, user: ConsoleUser) -> datetime | None:
    """A date typed in a form (2026-04-01) as the start of that day in the console's zone; None if empty."""
    if not value:
        return None
    try:
        return datetime.combine(datetime.strptime(value, "%Y-%m-%d").date(), time(), tzinfo=render.ZONE)
    except ValueError as exc:
        raise Refused(422, f"{field}: a date such as 2026-04-01", user) from exc


def see_other(path: str) -> RedirectResponse:
    return RedirectResponse(path, status_code=303)
