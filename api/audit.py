"""The access log: one append-only table, one function that writes it.

Tags are shaped source:subject:action (e.g. "api:evidence:read"). Entries hold
ids and hashes, never audio. Evidence reads are written and committed *before*
any byte leaves; if the write fails the read fails (fail closed).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from api.models import AccessLog


def record_event(
    session: Session,
    *,
    actor: str,
    action: str,
    target: str | None = None,
    outcome: str = "allowed",
    purpose: str | None = None,
    detail: dict[str, Any] | None = None,
) -> AccessLog:
    entry = AccessLog(actor=actor, action=action, target=target, outcome=outcome, purpose=purpose, detail=detail or {})
    session.add(entry)
    session.flush()
    return entry


def record_committed(factory: sessionmaker[Session], **fields: Any) -> int:
    """Write one entry in its own transaction; return its sequence number once it is durable."""
    with factory() as session, session.begin():
        return record_event(session, **fields).seq
