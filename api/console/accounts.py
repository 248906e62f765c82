"""Console accounts: provisioning a user's sign-in, and signing in (password, TOTP, lockout), all audited.

A user (admin, officer or auditor, from the users table) has a console sign-in only once an
administrator provisioned one on the server (`countersign server console-login NAME`): a
password hashed with Argon2id and a fresh TOTP secret, whose otpauth:// URI is shown once.

Signing in takes the name, the password and a current TOTP code that was not used before.
LOCK_AFTER failures in a row lock the account for LOCK_FOR; while locked, even the right password
and code are refused. Every refusal and every lock is in the audit log; the person is told only
"wrong name, password or code" (or that the account is locked), never which part was wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from api.console import passwords, totp
from api.console.sessions import end_all
from api.core.audit import record_event
from api.core.models import ConsoleLogin, User, utcnow
from evidence.audit_actions import Action
from evidence.text import neutral

LOCK_AFTER = 5
LOCK_FOR = timedelta(minutes=15)
CONSOLE_ROLES = ("officer", "admin", "auditor")


class SignInRefused(Exception):
    """Why the form is shown again: in words for the person (the log holds the real reason)."""


@dataclass(frozen=True)
class Provisioned:
    user: str
    role: str
    secret: str
    uri: str  # otpauth://totp/Countersign:NAME?secret=...&issuer=Countersign: shown once, as a QR code or text


def provision(session: Session, name: str, password: str, actor: str = "system") -> Provisioned:
    """Set (or reset) a user's console password and TOTP secret in the caller's transaction, audited.

    A reset ends every console session the user has (their old factors are void)."""
    user = session.scalar(select(User).where(User.name == name))
    if user is None:
        raise ValueError(f"no user {name!r}")
    if user.role not in CONSOLE_ROLES:
        raise ValueError(f"{user.role}s have no console sign-in")
    hashed = passwords.hash_password(password)  # WeakPassword (a ValueError) before anything changes
    secret = totp.new_secret()
    login = session.get(ConsoleLogin, user.id)
    reset = login is not None
    if login is None:
        login = ConsoleLogin(user_id=user.id, created_by=actor)
        session.add(login)
    login.password_hash, login.totp_secret = hashed, secret
    login.last_totp_step, login.failures, login.locked_until = 0, 0, None
    login.created_by, login.created_at = actor, utcnow()
    ended = end_all(session, user.id)
    record_event(
        session,
        actor=actor,
        action=Action.CONSOLE_LOGIN_SET,
        target=f"user:{user.id}",
        detail={"name": user.name, "reset": reset, "sessions_ended": ended},
    )
    return Provisioned(user.name, user.role, secret, totp.provisioning_uri(secret, user.name))


def _refuse(session: Session, actor: str, name: str, reason: str, client: str) -> None:
    record_event(
        session,
        actor=actor,
        action=Action.CONSOLE_SIGN_IN,
        outcome="denied",
        detail={"name": neutral(name, 100), "reason": reason, "client": neutral(client, 64)},
    )


WRONG = "wrong name, password or code"


def sign_in(session: Session, name: str, password: str, code: str, client: str, now_ts: float | None = None) -> User:
    """The user, if every check passes; otherwise SignInRefused, with the refusal logged.

    The caller commits in both cases (the failure count and the log entry are the point)."""
    now = utcnow()
    user = session.scalar(select(User).where(User.name == name)) if len(name) <= 100 else None
    login = session.get(ConsoleLogin, user.id) if user is not None else None
    if user is None or login is None:
        passwords.verify_password(passwords.dummy_hash(), password)  # the same time as a known name
        _refuse(session, "anonymous", name, "unknown name or no console sign-in", client)
        raise SignInRefused(WRONG)
    actor = f"user:{user.id}"
    if login.locked_until is not None and login.locked_until > now:
        _refuse(session, actor, name, "account locked", client)
        raise SignInRefused("this account is locked after repeated failures; try again later")
    reason = None
    step = None
    if not passwords.verify_password(login.password_hash, password):
        reason = "wrong password"
    else:
        step = totp.matching_step(login.totp_secret, code, -1, now_ts)
        if step is None:
            reason = "wrong code"
        elif step <= login.last_totp_step:
            reason = "code already used"
        else:
            # The code is spent atomically: of two sign-ins racing with one code, one wins.
            spent = session.execute(
                update(ConsoleLogin)
                .where(ConsoleLogin.user_id == user.id, ConsoleLogin.last_totp_step < step)
                .values(last_totp_step=step)
                .execution_options(synchronize_session=False)
            )
            if spent.rowcount != 1:  # type: ignore[attr-defined]
                reason = "code already used"
    if reason is None and (user.disabled or user.pending_approval):
        reason = "user disabled" if user.disabled else "access awaits approval"
    if reason is not None:
        login.failures += 1
        _refuse(session, actor, name, reason, client)
        if login.failures >= LOCK_AFTER:
            login.locked_until, login.failures = now + LOCK_FOR, 0
            record_event(
                session,
                actor=actor,
                action=Action.CONSOLE_LOCKED,
                target=f"user:{user.id}",
                outcome="denied",
                detail={"failures": LOCK_AFTER, "until": login.locked_until.isoformat()},
            )
        raise SignInRefused(WRONG)
    session.refresh(login)
    login.failures = 0
    record_event(
        session,
        actor=actor,
        action=Action.CONSOLE_SIGN_IN,
        target=f"user:{user.id}",
        detail={"client": neutral(client, 64), "totp_step": step},
    )
    return user
