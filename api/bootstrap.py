"""First start of a service: data directory, keys, schema, notices, first admin."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from api import grants
from api.core.audit import init_head, record_event
from api.core.db import make_engine, transaction
from api.core.keys import CURRENT, KEYS_DIR, OFFLINE, SERVICE, KeyCustodian
from api.core.models import EvidenceKey, NoticeRow, User
from api.core.services import audit_sessions
from api.core.settings import Settings
from api.core.tokens import new_token, token_hash
from api.migrate import upgrade
from consent.catalogue import builtin_notices
from evidence import recovery
from evidence.audit_actions import Action


class AlreadyInitialised(RuntimeError):
    """The data directory already holds keys."""


@dataclass(frozen=True)
class InitResult:
    admin_token: str
    evidence_key_id: str
    service_public_key: str


def create_schema(settings: Settings) -> None:
    """Bring the database to the newest schema through the migrations (tables and append-only guards).

    Never create_all: a database made that way has no alembic_version row, so the
    next `countersign db upgrade` would try to create every table again.
    """
    upgrade(settings.sqlalchemy_url)


def init_data_dir(settings: Settings, admin_name: str = "admin", zero_knowledge: Path | None = None) -> InitResult:
    """A new data directory. With zero_knowledge (the public file `countersign recovery generate`
    wrote on the organisation's offline machine) the service gets no evidence key pair at all:
    that offline key is the only evidence key, and devices seal to it alone (zero-knowledge mode)."""
    passphrase = settings.passphrase()  # refuses placeholders before anything is written
    offline = recovery.read_public_document(zero_knowledge) if zero_knowledge is not None else None
    if (settings.data_dir / KEYS_DIR).exists():
        raise AlreadyInitialised(f"{settings.data_dir} is already initialised")
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    custodian, kid = KeyCustodian.create(
        settings.data_dir, passphrase, zero_knowledge_key=str(offline["key_id"]) if offline else None
    )
    create_schema(settings)
    engine = make_engine(settings.sqlalchemy_url)
    token = new_token("csu")
    assert custodian.signing_key is not None
    with transaction(audit_sessions(engine, custodian.signing_key, settings)) as session:
        init_head(session)
        if offline is None:
            session.add(
                EvidenceKey(key_id=kid, public_key=custodian.public_keys()[kid], state=CURRENT, custody=SERVICE)
            )
        else:
            session.add(
                EvidenceKey(
                    key_id=kid,
                    public_key=offline["public_key"],
                    state=CURRENT,
                    custody=OFFLINE,
                    recovery_verify_key=offline["recovery_verify_key"],
                )
            )
        sync_notices(session)
        admin = User(id=str(uuid.uuid4()), name=admin_name, role="admin", token_hash=token_hash(token))
        session.add(admin)
        record_event(
            session,
            actor="system",
            action=Action.SERVER_INIT,
            target=f"user:{admin.id}",
            detail={"evidence_key": kid, **({"zero_knowledge": True} if offline else {})},
        )
    engine.dispose()
    return InitResult(token, kid, bytes(custodian.signing_key.verify_key).hex())


def reset_admin(settings: Settings, name: str) -> tuple[str, bool]:
    """A new token for the admin `name` (created if absent, re-enabled if disabled); returns (token, created).

    The way back in when the only admin token is lost. It runs on the server with the data
    directory and the key passphrase, which is the trust root anyway, and it is audited.
    An existing user of another role is refused: this must never mint an officer's access.
    """

    custodian = KeyCustodian.load(settings.data_dir, settings.passphrase())
    assert custodian.signing_key is not None
    engine = make_engine(settings.sqlalchemy_url)
    token = new_token("csu")
    try:
        with transaction(audit_sessions(engine, custodian.signing_key, settings)) as session:
            user = session.scalar(select(User).where(User.name == name))
            created = user is None
            if user is None:
                user = User(id=str(uuid.uuid4()), name=name, role="admin", token_hash=token_hash(token))
                session.add(user)
            elif user.role != "admin":
                raise ValueError(f"user {name!r} is a {user.role}, not an admin: choose another name")
            user.token_hash, user.disabled = token_hash(token), False
            session.flush()
            record_event(
                session,
                actor="system",
                action=Action.ADMIN_RESET,
                target=f"user:{user.id}",
                detail={"name": name, "created": created},
            )
    finally:
        engine.dispose()
    return token, created


def approve_user(settings: Settings, name: str) -> User:
    """Approve a pending officer's or auditor's access on the server itself (the first auditor, say).

    Whoever holds the data directory and its passphrase holds the service's keys anyway;
    the approval is audited as the system's, so it stands out in the log.
    """
    custodian = KeyCustodian.load(settings.data_dir, settings.passphrase())
    assert custodian.signing_key is not None
    engine = make_engine(settings.sqlalchemy_url)
    try:
        with transaction(audit_sessions(engine, custodian.signing_key, settings)) as session:
            user = session.scalar(select(User).where(User.name == name))
            if user is None:
                raise ValueError(f"no user {name!r}")
            try:
                grants.approve(session, user, approver="system")
            except grants.GrantRefused as exc:
                raise ValueError(str(exc)) from exc
            session.flush()
            session.expunge(user)
    finally:
        engine.dispose()
    return user


def sync_notices(session: Session) -> int:
    """Load the shipped notice catalogue; existing (id, version, language) rows are never rewritten."""
    added = 0
    for notice in builtin_notices():
        row = session.get(NoticeRow, (notice.id, notice.version, notice.language))
        if row is None:
            session.add(
                NoticeRow(
                    id=notice.id,
                    version=notice.version,
                    language=notice.language,
                    title=notice.title,
                    text=notice.text,
                    sha256=notice.sha256,
                )
            )
            added += 1
        elif row.sha256 != notice.sha256:
            raise ValueError(
                f"notice {notice.id} v{notice.version} ({notice.language}) changed text without a new version"
            )
    session.flush()
    return added
