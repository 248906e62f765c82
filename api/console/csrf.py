"""CSRF: every state-changing form carries a token that only the page's own session knows.

Signed in: the session's random csrf_token (in the database beside the session) is put in each
form; a POST whose `csrf` field is missing or differs (hmac.compare_digest) is refused with 403
before anything is read or changed. Signing in (no session yet): a double-submit token, a
random value both in a SameSite=Strict cookie and in the form. Form bodies are parsed here
(application/x-www-form-urlencoded only, UTF-8 only), which needs no multipart library.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Annotated
from urllib.parse import parse_qs

from fastapi import Depends, Request, Response

from api.console.sessions import PATH, is_https

FIELD = "csrf"
LOGIN_COOKIE = "countersign_console_login"


class CsrfRefused(Exception):
    pass


class FormRefused(Exception):
    """A form body that is not UTF-8 (raw or percent-encoded): answered 400, nothing read or changed."""


async def read_form(request: Request) -> dict[str, str]:
    """The form's fields (the first value of each); {} for any other kind of body.

    Text is UTF-8 or refused (FormRefused), never silently replaced: what an officer typed is
    stored and logged as typed, or not at all."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        return {}
    try:
        body = (await request.body()).decode("utf-8")
        fields = parse_qs(body, keep_blank_values=True, encoding="utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        raise FormRefused("this form's text is not UTF-8; reload the page and try again") from exc
    return {k: v[0] for k, v in fields.items()}


Form = Annotated[dict[str, str], Depends(read_form)]


def same(expected: str, given: str | None) -> bool:
    return bool(expected) and given is not None and hmac.compare_digest(expected.encode(), given.encode())


def check(expected: str, form: dict[str, str]) -> None:
    if not same(expected, form.get(FIELD)):
        raise CsrfRefused("this form has no valid CSRF token; reload the page and try again")


def login_token(request: Request) -> str:
    """The sign-in form's token: the one in the cookie if there is one, else a new one (set by set_login)."""
    return request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(32)


def set_login(response: Response, request: Request, token: str) -> None:
    response.set_cookie(
        LOGIN_COOKIE, token, max_age=3600, path=PATH, secure=is_https(request), httponly=True, samesite="strict"
    )
