"""Changes to a recording's life that move its retain-until date: an incident flag, an interruption.

The device's flag (at the counter) and the officer's flag (afterwards) are one
operation here; so are the device's "cut short" report and the job's expiry of
uploads that went silent. No web framework: routes and the retention job both call
these and translate `RecordingGone` into their own answer.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.core.audit import record_event
from api.core.models import Recording, iso, utcnow
from api.core.storage import BlobStore
from evidence.audit_actions import Action
from retention.holds_sync import hold_if_covered
from retention.store import refresh_retention


class RecordingGone(Exception):
    """This recording has been deleted."""


def flag_incident(session: Session, store: BlobStore, recording: Recording, category: str, actor: str) -> None:
    """Flag (or re-categorise) a recording as an incident: kept longer, caught by scoped holds."""
    if recording.purge_state is not None:
        raise RecordingGone(f"recording {recording.id} has been deleted")
    previous = recording.incident_category
    recording.incident_category = category
    old, new = refresh_retention(session, recording)  # incidents are kept longer
    record_event(
        session,
        actor=actor,
        action=Action.RECORDING_FLAG,
        target=f"recording:{recording.id}",
        detail={"category": category, "previous": previous, "retain_until": [iso(old), iso(new)]},
    )
    hold_if_covered(session, store, recording)  # a scoped hold on this category: store hold before commit


def mark_interrupted(session: Session, recording: Recording, actor: str, reason: str) -> None:
    """An open recording that will receive nothing more: it now follows the "interrupted" policy."""
    if recording.status != "open":
        return
    recording.status = "interrupted"
    recording.ended_at = utcnow()
    refresh_retention(session, recording)  # now under the "interrupted" policy
    record_event(
        session,
        actor=actor,
        action=Action.RECORDING_INTERRUPTED,
        target=f"recording:{recording.id}",
        detail={"reason": reason},
    )


def is_stale(recording: Recording, timeout_seconds: int, now: datetime | None = None) -> bool:
    """Open, yet silent for longer than the timeout: the device is lost (read-only test, for listings)."""
    cutoff = (now or utcnow()) - timedelta(seconds=timeout_seconds)
    return recording.status == "open" and recording.last_activity_at < cutoff


def shown_status(recording: Recording, timeout_seconds: int) -> str:
    """The status officers see: a stale upload is shown as interrupted before the job records it so."""
    return "interrupted" if is_stale(recording, timeout_seconds) else recording.status


def expire_stale(session: Session, timeout_seconds: int) -> int:
    """Open recordings silent for longer than the timeout become interrupted (device lost)."""
    cutoff = utcnow() - timedelta(seconds=timeout_seconds)
    stale = session.scalars(select(Recording).where(Recording.status == "open", Recording.last_activity_at < cutoff))
    count = 0
    for recording in stale:
        mark_interrupted(session, recording, "system", f"no segment for {timeout_seconds} s")
        count += 1
    return count
