"""Legal holds mirrored onto the object store's own legal holds (S3 object lock, filesystem markers).

The database is the authority on holds; the store's hold is what stops a client that goes around
the service (someone holding the bucket's credentials) from deleting held evidence. The
invariant kept across crashes is

    an active hold in the database covers a recording  ⇒  the store holds every object of it

and every ordering below errs on the safe side: an object the store holds that no active hold
covers any more is only a delay (the purge clears it, below), the reverse would be evidence a
bypassing client could delete.

- *Placing* a hold (retention.routes.holds) sets the store holds **before** the hold's transaction
  commits; if the store fails, the transaction is rolled back and nothing is held. After the
  commit a catch-up pass holds segments whose upload raced the placement.
- *Uploading* a segment (api.ingest.check_segment, then write_segment): put → store hold (if an
  active hold covers the recording) → commit the row. A crash in between leaves an object without a
  row, which the device's retry (the same bytes: a no-op put) completes.
- *Flagging* a recording into a scoped hold's category sets its store holds before the commit.
- *Releasing* a hold commits the release **first**, then clears the store holds of recordings no
  other active hold covers. A crash in between leaves store holds that a released hold explains.
- The *purge* (retention.purge, the one path for the job and an officer's deletion) calls
  ``check_store_holds`` before shredding anything: objects still held because a released hold
  once covered them are released (the crash above, healed); an object held with no hold in the
  database to explain it (placed by hand, or by a hold placement that crashed before its commit)
  is never released by us: the recording is refused, with the object named, and not shredded.
- The purge *job* first calls ``reconcile_store_holds``: every object of every recording an active
  hold covers is held again if its store hold went missing (a restored bucket, a hand edit, a bug).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from sqlalchemy import ColumnElement, and_, false, or_, select
from sqlalchemy.orm import InstrumentedAttribute, Session, sessionmaker

from api.core.models import Recording, Segment
from api.core.storage import BlobStore
from api.core.storage.interface import ObjectMissing, segment_key
from retention.decide import RecordingFacts, covering_holds
from retention.models import Hold, HoldRecording
from retention.store import FACT_COLUMNS, active_holds, facts_from_row, facts_of, hold_facts

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- which objects, which recordings


def object_keys(session: Session, ids: Sequence[str]) -> dict[str, list[str]]:
    """Every key each recording's objects can have: its segments, plus the one an upload may have
    stored just before its transaction failed (segments are accepted strictly in order)."""
    keys: dict[str, set[str]] = {rid: set() for rid in ids}
    for rid, count in session.execute(select(Recording.id, Recording.segment_count).where(Recording.id.in_(ids))):
        keys[rid].update(segment_key(rid, i) for i in range(count + 1))
    for rid, key in session.execute(
        select(Segment.recording_id, Segment.object_key).where(Segment.recording_id.in_(ids))
    ):
        keys[rid].add(key)
    return {rid: sorted(k) for rid, k in keys.items()}


def covers_clause(hold: Hold) -> ColumnElement[bool]:
    """SQL for "this hold covers the recording" (mirror of retention.decide.hold_covers, active or not)."""
    explicit = Recording.id.in_(select(HoldRecording.recording_id).where(HoldRecording.hold_id == hold.id))
    scope: ColumnElement[bool] = false()
    if hold.scoped:
        conditions = [Recording.site_id == hold.site_id]
        if hold.device_id is not None:
            conditions.append(Recording.device_id == hold.device_id)
        if hold.started_from is not None:
            conditions.append(Recording.started_at >= hold.started_from)
        if hold.started_to is not None:
            conditions.append(Recording.started_at < hold.started_to)
        if hold.incident_category is not None:
            conditions.append(Recording.incident_category == hold.incident_category)
        scope = and_(*conditions)
    return or_(explicit, scope)


def covered_ids(session: Session, hold: Hold) -> list[str]:
    """The live recordings the hold's terms cover."""
    query = select(Recording.id).where(Recording.purge_state.is_(None), covers_clause(hold))
    return list(session.scalars(query.order_by(Recording.id)))


def _facts(session: Session, ids: Sequence[str]) -> list[RecordingFacts]:
    return [facts_from_row(r) for r in session.execute(select(*FACT_COLUMNS).where(Recording.id.in_(ids)))]


def active_on_site(site: str | ColumnElement[str] | InstrumentedAttribute[str]) -> ColumnElement[bool]:
    """A hold that is active and belongs to `site` (a site id, or a column such as Recording.site_id)."""
    return and_(Hold.released_at.is_(None), Hold.site_id == site)


def held_by_active(session: Session, facts: RecordingFacts) -> list[str]:
    """Case references of the active holds covering one recording (cheap: holds of its site only)."""
    query = select(Hold).where(active_on_site(facts.site))
    return sorted({h.case_ref for h in session.scalars(query) if covering_holds(facts, [hold_facts(h)])})


# --------------------------------------------------------------------------- setting and clearing


def hold_objects(store: BlobStore, keys: Iterable[str], on: bool = True) -> int:
    """Set (or clear) the store hold on each key that exists; returns how many changed. Errors propagate."""
    changed = 0
    for key in keys:
        try:
            if store.legal_hold(key) == on:
                continue
            store.set_legal_hold(key, on)
        except ObjectMissing:
            continue  # the in-flight key that was never stored, or a segment already purged
        changed += 1
    return changed


def place_store_holds(session: Session, store: BlobStore, ids: Sequence[str]) -> dict[str, int]:
    """Hold every object of these recordings, in the caller's (uncommitted) transaction; returns the
    segment count seen per recording, for ``catch_up``. Raises if the store fails: roll back then."""
    seen: dict[str, int] = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        for keys in object_keys(session, chunk).values():
            hold_objects(store, keys)
        counts = session.execute(select(Recording.id, Recording.segment_count).where(Recording.id.in_(chunk)))
        seen.update((rid, int(n)) for rid, n in counts)
    return seen


def catch_up(sessions: sessionmaker[Session], store: BlobStore, hold_id: str, seen: dict[str, int]) -> None:
    """After a placement commits: hold the segments (and new recordings) whose upload checked for
    holds before the commit and so did not hold its object itself. Best effort: the purge job's
    reconcile step finishes what this cannot."""
    try:
        with sessions() as session:
            hold = session.get(Hold, hold_id)
            if hold is None:
                return
            ids = covered_ids(session, hold)
            query = select(Recording.id, Recording.segment_count).where(Recording.id.in_(ids))
            counts = {rid: int(n) for rid, n in session.execute(query)}
        for rid in ids:
            count = counts.get(rid, 0)
            hold_objects(store, (segment_key(rid, i) for i in range(seen.get(rid, 0), count + 1)))
    except Exception:
        log.warning("hold %s: store holds not complete; the retention job will finish them", hold_id, exc_info=True)


def hold_new_segment(session: Session, store: BlobStore, recording: Recording, key: str) -> None:
    """After ``store.put`` and before the row commits: hold the object if an active hold covers it."""
    if held_by_active(session, facts_of(recording)):
        store.set_legal_hold(key, True)


def hold_if_covered(session: Session, store: BlobStore, recording: Recording) -> None:
    """After a change that may bring a recording under a scoped hold (an incident flag), before the commit."""
    if held_by_active(session, facts_of(recording)):
        place_store_holds(session, store, [recording.id])


def release_store_holds(sessions: sessionmaker[Session], store: BlobStore, hold_id: str) -> None:
    """After a release commits: clear the store holds of the recordings no other active hold covers.
    Best effort: one left held is released by the purge when it is due (``check_store_holds``)."""
    try:
        with sessions() as session:
            hold = session.get(Hold, hold_id)
            if hold is None:
                return
            holds = active_holds(session)
            free = [f.id for f in _facts(session, covered_ids(session, hold)) if not covering_holds(f, holds)]
            keys = object_keys(session, free)
        for rid in free:
            hold_objects(store, keys[rid], on=False)
    except Exception:
        log.warning("hold %s released, but some store holds remain; the purge releases them", hold_id, exc_info=True)


# --------------------------------------------------------------------------- before a purge


def held_objects(store: BlobStore, keys: Iterable[str]) -> list[str]:
    found = []
    for key in keys:
        try:
            if store.legal_hold(key):
                found.append(key)
        except ObjectMissing:
            continue
    return found


def check_store_holds(
    session: Session, store: BlobStore, ids: Sequence[str], facts: Sequence[RecordingFacts] | None = None
) -> dict[str, str]:
    """For recordings about to be purged (no active hold covers them): release store holds a released
    hold explains, and return {id: why} for those the store still holds, which must not be shredded.

    ``facts``: the recordings' facts, when the caller has just read them in this session (the purge's
    store check), so they are not read again; otherwise they are read here."""
    if not ids:
        return {}
    released = [
        replace(hold_facts(h), active=True)  # "would it cover it, were it active"
        for h in session.scalars(select(Hold).where(Hold.released_at.is_not(None)))
    ]
    keys = object_keys(session, ids)
    refused: dict[str, str] = {}
    for rec in _facts(session, ids) if facts is None else facts:
        held = held_objects(store, keys[rec.id])
        if not held:
            continue
        explained = sorted({h.case_ref for h in covering_holds(rec, released)})
        if explained:
            log.info("recording %s: releasing store holds left by released hold(s) %s", rec.id, explained)
            try:
                hold_objects(store, held, on=False)
                continue
            except Exception as exc:
                refused[rec.id] = f"the store still holds {held[0]} and could not release it ({exc}); not shredded"
                continue
        refused[rec.id] = (
            f"the object store holds {held[0]}"
            + (f" and {len(held) - 1} more" if len(held) > 1 else "")
            + " under a legal hold that no hold in Countersign explains (placed outside the service, or by a "
            "hold placement that did not complete); not shredded: release the store hold by hand if it is not needed"
        )
    return refused


# --------------------------------------------------------------------------- the job's repair step


@dataclass
class ReconcileReport:
    checked: int = 0  # recordings an active hold covers
    repaired: list[str] = field(default_factory=list)  # recordings whose store holds had to be set again
    errors: dict[str, str] = field(default_factory=dict)


def reconcile_store_holds(sessions: sessionmaker[Session], store: BlobStore, batch: int = 500) -> ReconcileReport:
    """Hold again every object of every recording an active hold covers (held in DB ⇒ held in store).

    Runs before the purge job purges anything. Cost: one hold check per held object per run (two
    requests on S3), which is small next to the purge itself unless a hold covers a whole site."""
    report = ReconcileReport()
    with sessions() as session:
        holds = session.scalars(select(Hold).where(Hold.released_at.is_(None))).all()
        ids = sorted({rid for h in holds for rid in covered_ids(session, h)})
    report.checked = len(ids)
    for start in range(0, len(ids), batch):
        chunk = ids[start : start + batch]
        with sessions() as session:
            keys = object_keys(session, chunk)
        for rid in chunk:
            try:
                if hold_objects(store, keys[rid]):
                    report.repaired.append(rid)
                    log.warning("recording %s: store hold was missing and has been set again", rid)
            except Exception as exc:
                report.errors[rid] = f"setting its store hold: {type(exc).__name__}: {exc}"
    return report
