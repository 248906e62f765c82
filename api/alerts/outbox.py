"""The delivery outbox: rows written with the alert, claimed by one worker at a time, retried with backoff.

Why our own and not a job library: the deployments are SQLite or PostgreSQL, and the libraries
that serve PostgreSQL alone (procrastinate) or need Redis or their own store (huey, dramatiq, RQ)
cannot put the notification in the same transaction as the alert and its audit entry. Here they
are one commit: an alert that rolls back notifies nobody, a committed one is never lost.

A worker claims a due row with one compare-and-set UPDATE (state pending, lease expired) that
works the same on both databases; the loser of a race updates no row. The lease covers the send,
so a restart or a second process does not send it again while it is in flight; a worker that dies
mid-send leaves a lease that expires, and the row is sent again (at-least-once at the transport:
the delivery id is the e-mail's Message-ID and the webhook's idempotency key, for receivers to dedupe).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from api.alerts.config import AlertSettings
from api.core.audit import record_event
from api.core.models import AlertContact, AlertDelivery, utcnow
from evidence.audit_actions import Action
from evidence.text import neutral

CLAIM_BATCH = 20


def rows(result: Any) -> int:
    """How many rows an UPDATE changed (CursorResult.rowcount, which the Result type does not declare)."""
    return int(getattr(result, "rowcount", 0) or 0)


def enqueue(
    session: Session, contacts: list[AlertContact], event: str, payload: dict[str, Any], alert_id: str | None
) -> list[str]:
    """Outbox rows for these contacts, in the caller's transaction (nothing is sent before it commits)."""
    ids = []
    for contact in contacts:
        delivery_id = str(uuid.uuid4())
        session.add(
            AlertDelivery(
                id=delivery_id,
                alert_id=alert_id,
                contact_id=contact.id,
                channel=contact.channel,
                target=contact.target,
                event=event,
                payload=payload,
                state="pending",
                attempts=0,
                next_attempt_at=utcnow(),
            )
        )
        ids.append(delivery_id)
    return ids


@dataclass(frozen=True)
class Claimed:
    id: str
    alert_id: str | None
    contact_id: str
    channel: str
    target: str
    event: str
    payload: dict[str, Any]
    attempts: int  # before this one
    created_at: datetime


def _due(now: datetime) -> Any:
    lease_over = or_(AlertDelivery.claimed_until.is_(None), AlertDelivery.claimed_until < now)
    return and_(AlertDelivery.state == "pending", AlertDelivery.next_attempt_at <= now, lease_over)


def claim(sessions: sessionmaker[Session], worker: str, lease_seconds: float) -> list[Claimed]:
    """Due rows this worker now holds a lease on; each one's claim is a compare-and-set of its own."""
    now = utcnow()
    with sessions() as session:  # a read first: an idle scan takes no write lock (SQLite's is the database's)
        candidates = session.scalars(
            select(AlertDelivery.id).where(_due(now)).order_by(AlertDelivery.next_attempt_at).limit(CLAIM_BATCH)
        ).all()
    claimed = []
    for delivery_id in candidates:
        with sessions() as session, session.begin():
            until = utcnow() + timedelta(seconds=lease_seconds)
            won = rows(
                session.execute(
                    update(AlertDelivery)
                    .where(AlertDelivery.id == delivery_id, _due(utcnow()))
                    .values(claimed_until=until, claimed_by=worker)
                    .execution_options(synchronize_session=False)
                )
            )
            if won != 1:
                continue  # another worker took it first
            row = session.get(AlertDelivery, delivery_id)
            assert row is not None
            claimed.append(
                Claimed(
                    row.id,
                    row.alert_id,
                    row.contact_id,
                    row.channel,
                    row.target,
                    row.event,
                    dict(row.payload),
                    row.attempts,
                    row.created_at,
                )
            )
    return claimed


def contact_of(sessions: sessionmaker[Session], contact_id: str) -> tuple[bool, str | None]:
    """Whether the contact still exists (a removed one is not notified), and its webhook secret."""
    with sessions() as session:
        contact = session.get(AlertContact, contact_id)
        return contact is not None, contact.secret if contact is not None else None


def _own(delivery_id: str, worker: str) -> Any:
    return and_(AlertDelivery.id == delivery_id, AlertDelivery.claimed_by == worker, AlertDelivery.state == "pending")


def delivered(sessions: sessionmaker[Session], item: Claimed, worker: str, receipt: dict[str, Any]) -> bool:
    """Mark it sent and log it (once: whoever marks it first logs it)."""
    with sessions() as session, session.begin():
        done = rows(
            session.execute(
                # Not only our own claim: if our lease ran out mid-send, the row is still sent, and marking
                # it now spares the receiver a second copy from whoever claims it next.
                update(AlertDelivery)
                .where(AlertDelivery.id == item.id, AlertDelivery.state == "pending")
                .values(state="delivered", delivered_at=utcnow(), attempts=item.attempts + 1, claimed_until=None)
                .execution_options(synchronize_session=False)
            )
        )
        if done != 1:
            return False
        record_event(
            session,
            actor="system",
            action=Action.ALERT_DELIVERED,
            target=f"alert:{item.alert_id}" if item.alert_id else f"delivery:{item.id}",
            detail={
                "delivery": item.id,
                "channel": item.channel,
                "event": item.event,
                "attempt": item.attempts + 1,
                "contact": item.contact_id,
                **receipt,
            },
        )
        return True


def backoff(attempt: int, config: AlertSettings) -> float:
    """Seconds before attempt `attempt + 1`: base * 2**(attempt - 1), capped."""
    return float(min(config.alerts_retry_base_seconds * 2 ** max(attempt - 1, 0), config.alerts_retry_max_seconds))


def failed(
    sessions: sessionmaker[Session], item: Claimed, worker: str, error: str, config: AlertSettings, final: bool = False
) -> str:
    """Record the failed attempt; retry later, or give up (logged) after the last one. Returns the new state."""
    attempt = item.attempts + 1
    final = final or attempt >= config.alerts_max_attempts
    state = "failed" if final else "pending"
    with sessions() as session, session.begin():
        done = rows(
            session.execute(
                update(AlertDelivery)
                .where(_own(item.id, worker))
                .values(
                    state=state,
                    attempts=attempt,
                    last_error=neutral(error, 300),
                    next_attempt_at=utcnow() + timedelta(seconds=backoff(attempt, config)),
                    claimed_until=None,
                    claimed_by=None,
                )
                .execution_options(synchronize_session=False)
            )
        )
        if done == 1 and final:
            record_event(
                session,
                actor="system",
                action=Action.ALERT_DELIVERY_FAILED,
                target=f"alert:{item.alert_id}" if item.alert_id else f"delivery:{item.id}",
                outcome="failed",
                detail={
                    "delivery": item.id,
                    "channel": item.channel,
                    "attempts": attempt,
                    "error": neutral(error, 200),
                },
            )
    return state
