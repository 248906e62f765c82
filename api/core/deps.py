"""Annotated dependencies: routes read like their signatures."""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from sqlalchemy import Connection, bindparam, false, literal, null, select, union_all
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from api.core.audit import record_committed
from api.core.models import Device, Recording, User, UserSite
from api.core.services import Services
from api.core.throttle import Verdict
from api.core.tokens import token_hash
from evidence.audit_actions import Action
from evidence.text import neutral

ROLES = ("device", "officer", "admin", "auditor")
PATH_LIMIT = 160  # characters of a path kept in a log entry (the target column holds 200)
_RECORDING_IN_PATH = re.compile(r"^/v1/(?:evidence|recordings|audit/custody)/([0-9a-fA-F-]{36})(?:/|$)")


async def get_services(request: Request) -> Services:  # async: no I/O, so no thread hand-off
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def get_session(services: ServicesDep) -> Iterator[Session]:
    with services.sessions() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


@dataclass(frozen=True)
class Principal:
    kind: str  # user | device
    id: str
    role: str
    sites: frozenset[str] = field(default_factory=frozenset)
    # A device's Ed25519 verify key, read with its token (None: a user, or a device not yet enrolled).
    public_key: bytes | None = field(default=None, compare=False, repr=False)

    @property
    def actor(self) -> str:
        return f"{self.kind}:{self.id}"

    def may_see_site(self, site_id: str) -> bool:
        return site_id in self.sites


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def request_line(request: Request) -> str:
    """The request as the log may keep it: the caller chose the path, so it is escaped and bounded."""
    return f"{request.method[:10]} {neutral(request.url.path, PATH_LIMIT)}"


def deny(
    services: Services,
    request: Request,
    status: int,
    detail: str,
    actor: str = "anonymous",
    answer: str | None = None,
) -> HTTPException:
    """Log a refused attempt (committed), then hand back the error to raise.

    `detail` is the reason the log keeps; `answer`, if given, is what the caller is told instead
    (an out-of-scope id is answered like a missing one, so ids cannot be probed across sites).
    """
    line = request_line(request)
    # Name the recording when the path carries one, so the denial shows in its chain of custody.
    about = _RECORDING_IN_PATH.search(request.url.path)
    record_committed(
        services.sessions,
        actor=actor,
        action=Action.ACCESS_DENIED,
        target=f"recording:{about.group(1).lower()}" if about else line,
        outcome="denied",
        detail={"status": status, "reason": detail, "request": line},
    )
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return HTTPException(status_code=status, detail=answer or detail, headers=headers)


def stranger_failed(services: Services, request: Request) -> Verdict:
    """Count a failure by someone we cannot name; write the summary of their last window if one is due."""
    address = client_address(request)
    verdict = services.failures.failure(address)
    if verdict.summary:
        record_committed(
            services.sessions,
            actor="anonymous",
            action=Action.ACCESS_DENIED_SUMMARY,
            outcome="denied",
            detail={"client": neutral(address, 64), "suppressed": verdict.summary},
        )
    return verdict


def too_many(retry_after: int) -> HTTPException:
    return HTTPException(429, "too many failed attempts; try again later", {"Retry-After": str(retry_after)})


def deny_stranger(services: Services, request: Request, status: int, detail: str) -> HTTPException:
    """A refusal of someone we cannot name: logged one by one up to a rate, then counted (429)."""
    verdict = stranger_failed(services, request)
    if verdict.limited:
        return too_many(verdict.retry_after)
    return deny(services, request, status, detail)


def _token_statement() -> Any:
    """Users and devices with the token hash `digest`, in one statement (users first, as before)."""
    digest: Any = bindparam("digest")
    users = select(
        literal("user").label("kind"), User.id, User.role, User.disabled, User.pending_approval,
        null().label("site_id"), null().label("public_key"),
    ).where(User.token_hash == digest)  # fmt: skip
    devices = select(
        literal("device").label("kind"), Device.id, literal("device").label("role"), Device.disabled,
        false().label("pending_approval"), Device.site_id, Device.public_key,
    ).where(Device.token_hash == digest)  # fmt: skip
    return union_all(users, devices)


# Built once: every request runs them, and building a statement cost more than running it (profile,
# README's ingest row). Run on a plain connection: no ORM session is needed to read two rows.
_TOKEN_LOOKUP = _token_statement()
_USER_SITES = select(UserSite.site_id).where(UserSite.user_id == bindparam("user"))


def lookup_token(connection: Connection, services: Services, request: Request, token: str) -> Principal:
    """The principal a bearer token names: one statement (plus a user's sites), or a logged refusal."""
    rows = {row.kind: row for row in connection.execute(_TOKEN_LOOKUP, {"digest": token_hash(token)})}
    user, device = rows.get("user"), rows.get("device")
    if user is not None and not user.disabled:
        if user.pending_approval:  # known, so logged as themselves, and never rate-limited as a stranger
            why = "your access awaits approval by a second person (an officer of your site or an auditor)"
            raise deny(services, request, 403, why, f"user:{user.id}")
        sites = connection.execute(_USER_SITES, {"user": user.id}).scalars()
        return Principal("user", user.id, user.role, frozenset(sites))
    if device is not None and not device.disabled:
        return Principal("device", device.id, "device", frozenset({device.site_id}), device.public_key)
    raise deny_stranger(services, request, 401, "unknown or revoked token")


def authenticate_sync(request: Request, services: Services, roles: tuple[str, ...] | None = None) -> Principal:
    """Authenticate in the calling thread with a short connection of its own (closed before the route runs).

    With `roles`, anyone else is refused (logged) here too, in the same thread.
    """
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise deny_stranger(services, request, 401, "a bearer token is required")
    with services.engine.connect() as connection:
        principal = lookup_token(connection, services, request, token)
    if roles is not None and principal.role not in roles:
        raise deny(services, request, 403, f"role {principal.role} may not do this", principal.actor)
    return principal


async def authenticate(request: Request, services: ServicesDep) -> Principal:
    """Every request authenticates afresh (a disabled user or device is refused at once).

    One thread hand-off for the database work; the connection is back in the pool before the
    route runs, so a slow request body never holds one.
    """
    return await run_in_threadpool(authenticate_sync, request, services)


def require(*roles: str) -> Callable[..., Awaitable[Principal]]:
    """A dependency that lets only these roles through, logging everyone else."""

    async def dependency(
        request: Request, services: ServicesDep, principal: Annotated[Principal, Depends(authenticate)]
    ) -> Principal:
        if principal.role not in roles:  # the refusal is logged: database work, so in a thread
            why = f"role {principal.role} may not do this"
            raise await run_in_threadpool(deny, services, request, 403, why, principal.actor)
        return principal

    return dependency


AnyPrincipal = Annotated[Principal, Depends(authenticate)]
AdminDep = Annotated[Principal, Depends(require("admin"))]
DeviceDep = Annotated[Principal, Depends(require("device"))]
OfficerDep = Annotated[Principal, Depends(require("officer"))]
AuditorDep = Annotated[Principal, Depends(require("auditor"))]


def recording_in_scope(
    request: Request, services: Services, session: Session, principal: Principal, recording_id: uuid.UUID
) -> Recording:
    """The recording, if it exists and an officer's sites include it (auditors see every site); denials are logged."""
    recording = session.get(Recording, str(recording_id))
    if recording is None:
        raise HTTPException(404, "no such recording")
    if principal.role == "officer" and not principal.may_see_site(recording.site_id):
        reason = "recording belongs to a site outside your scope"
        raise deny(services, request, 404, reason, principal.actor, answer="no such recording")
    return recording


def live(recording: Recording) -> Recording:
    """Refuse a purged (or purging) recording with 410, pointing at its tombstone."""
    if recording.purge_state is not None:
        raise HTTPException(410, f"recording {recording.id} was deleted ({recording.purge_state}); see its tombstone")
    return recording
