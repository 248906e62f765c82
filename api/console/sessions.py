"""Console sessions: a random cookie, only its SHA-256 stored, with idle and absolute expiry.

The cookie is HttpOnly (no script reads it), SameSite=Strict (no other site's page sends it)
and Secure when the request came over https, directly or per X-Forwarded-Proto from the proxy
that terminates TLS (the rule HSTS follows in api.middleware). Every request re-reads the
user: a disabled user, or one whose approval was withdrawn, is signed out at once.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta

from fastapi import Request, Response
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from api.core.deps import Principal
from api.core.models import ConsoleListenGrant, ConsoleSession, User, UserSite, utcnow
from api.core.tokens import token_hash

COOKIE = "countersign_console"
PATH = "/console"
IDLE = timedelta(minutes=30)
ABSOLUTE = timedelta(hours=12)
TOUCH_EVERY = timedelta(seconds=60)  # last_seen_at is written at most this often


@dataclass(frozen=True)
class ConsoleUser:
    principal: Principal
    name: str
    csrf: str
    session_hash: str


def is_https(request: Request) -> bool:
    forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return request.url.scheme == "https" or forwarded == "https"


def start(session: Session, user_id: str) -> str:
    """A new session for this user, in the caller's transaction; the cookie's value (never stored)."""
    token = secrets.token_urlsafe(32)
    now = utcnow()
    session.add(
        ConsoleSession(
            token_hash=token_hash(token),
            user_id=user_id,
            csrf_token=secrets.token_urlsafe(32),
            created_at=now,
            last_seen_at=now,
            expires_at=now + ABSOLUTE,
        )
    )
    return token


def end(session: Session, digest: str) -> None:
    session.execute(delete(ConsoleListenGrant).where(ConsoleListenGrant.session_hash == digest))
    session.execute(delete(ConsoleSession).where(ConsoleSession.token_hash == digest))


def end_all(session: Session, user_id: str) -> int:
    digests = list(session.scalars(select(ConsoleSession.token_hash).where(ConsoleSession.user_id == user_id)))
    for digest in digests:
        end(session, digest)
    return len(digests)


def current(session: Session, request: Request) -> ConsoleUser | None:
    """The signed-in user of this request, or None (no cookie, unknown, expired, or user no longer allowed).

    An expired session is deleted here; the caller commits."""
    token = request.cookies.get(COOKIE)
    if not token:
        return None
    digest = token_hash(token)
    row = session.get(ConsoleSession, digest)
    if row is None:
        return None
    now = utcnow()
    user = session.get(User, row.user_id)
    if now >= row.expires_at or now >= row.last_seen_at + IDLE or user is None or user.disabled:
        end(session, digest)
        return None
    if user.pending_approval:
        end(session, digest)
        return None
    if now - row.last_seen_at >= TOUCH_EVERY:
        row.last_seen_at = now
    sites = frozenset(session.scalars(select(UserSite.site_id).where(UserSite.user_id == user.id)))
    return ConsoleUser(Principal("user", user.id, user.role, sites), user.name, row.csrf_token, digest)


def set_cookie(response: Response, request: Request, token: str) -> None:
    response.set_cookie(
        COOKIE,
        token,
        max_age=int(ABSOLUTE.total_seconds()),
        path=PATH,
        secure=is_https(request),
        httponly=True,
        samesite="strict",
    )


def clear_cookie(response: Response, request: Request) -> None:
    response.delete_cookie(COOKIE, path=PATH, secure=is_https(request), httponly=True, samesite="strict")
