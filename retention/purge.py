"""Purging recordings: the one path used by the retention job and by an officer's early deletion.

Three steps, each idempotent and each leaving the recording in a state the next
run can finish from (``Recording.purge_state``)::

    NULL ──(1) shred: one transaction──► "shredding" ──(2) objects──► (3) finalise: one transaction ──► "purged"

0. *Store holds.* Before anything else, a recording the store still holds an
   object of (retention.holds_sync.check_store_holds: a hold left by a released
   hold is released; an unexplained one refuses) is not purged, and the error
   names the object: shredding it would lose the key to audio that stays.
1. *Shred.* Claim the recordings (purge_state NULL → "shredding"), decide again
   on fresh rows with the holds read under the write lock, delete the sealed
   data keys, start the tombstone, write the audit entry. Once this commits
   the audio is unreadable, even from a copy of the objects (crypto-shredding).
2. *Objects.* Delete the segment objects from the store. A missing object is
   fine (an earlier run got there); an error leaves the recording "shredding"
   and the run reports it; nothing is ever deleted *because* of an error.
3. *Finalise.* Claim again ("shredding" → "purged"), complete the tombstone with
   the hashes and a deletion record signed by the service key, delete the
   segment rows, write the audit entry.

Each step works on a batch of recordings with set-based statements (one claim, one
DELETE of the sealed keys, one executemany of tombstones, one batched audit append
per transaction), so its cost in statements does not grow with the batch; step 2
deletes several recordings' objects at once. What is committed before the objects
are deleted is the shredding (keys gone, tombstones started, "shred" entries);
what is committed after is the finalise. A crash in between leaves the batch
"shredding", and a recording whose objects could not be deleted stays so alone.

A run that finds a recording "shredding" resumes at step 2; the compare-and-set
in steps 1 and 3 means two runs at once never shred or finalise one recording
twice. ``crash_point`` lets tests kill the process between any two steps.
"""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import nacl.exceptions
import nacl.signing
from sqlalchemy import Table, bindparam, delete, insert, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from api.core.audit import record_events
from api.core.models import Recording, RecordingNote, SealedKey, Segment, iso
from api.core.storage import BlobStore
from api.core.storage.interface import ObjectHeld
from evidence.audit_actions import Action
from evidence.chain import canonical_json, header_hash
from evidence.errors import IntegrityError
from retention.decide import Decision, HoldFacts, Keep, Purge, RecordingFacts, covering_holds, decide
from retention.holds_sync import check_store_holds, object_keys
from retention.models import Tombstone
from retention.policy import Rule
from retention.store import FACT_COLUMNS, active_holds, facts_from_row, purge_state_is, rules_in_force

SHREDDING, PURGED = "shredding", "purged"
# The tables themselves: the purge's statements are Core (set-based, no ORM unit of work or bulk-persistence layer).
_REC: Table = Recording.__table__  # type: ignore[assignment]
_TOMB: Table = Tombstone.__table__  # type: ignore[assignment]
_SEG: Table = Segment.__table__  # type: ignore[assignment]
_SEALED: Table = SealedKey.__table__  # type: ignore[assignment]
_NOTES: Table = RecordingNote.__table__  # type: ignore[assignment]
DELETION_RECORD_TYPE = "countersign/deletion-record"
DELETION_RECORD_VERSION = 1
_RECORD_DOMAIN = b"countersign/deletion-record/v1\x00"

# --------------------------------------------------------------------------- crash injection (tests)

CRASH_ENV = "COUNTERSIGN_TEST_CRASH_AFTER"  # "point" or "point:N": SIGKILL ourselves there
PAUSE_ENV = "COUNTERSIGN_TEST_PAUSE_AFTER"  # "point:seconds": sleep there, to widen a race window
crash_hook: Callable[[str], None] | None = None  # in-process tests raise from here instead
_crash_counts: Counter[str] = Counter()
_crash_lock = threading.Lock()  # objects are deleted from several threads


def crash_point(name: str) -> None:
    """Test hook between purge steps: die here as kill -9 would, or pause, when the environment asks."""
    if crash_hook is not None:
        crash_hook(name)
    pause_point, _, seconds = os.environ.get(PAUSE_ENV, "").partition(":")
    if pause_point == name:
        time.sleep(float(seconds))
    wanted = os.environ.get(CRASH_ENV)
    if not wanted:
        return
    point, _, nth = wanted.partition(":")
    if point == name:
        with _crash_lock:
            _crash_counts[name] += 1
            reached = _crash_counts[name] >= int(nth or 1)
        if reached:
            os.kill(os.getpid(), signal.SIGKILL)


# --------------------------------------------------------------------------- step 1: shred


@dataclass
class ShredOutcome:
    shredded: list[str] = field(default_factory=list)
    held: dict[str, tuple[str, ...]] = field(default_factory=dict)  # id -> case references
    kept: dict[str, str] = field(default_factory=dict)  # id -> why policy keeps it
    not_claimed: list[str] = field(default_factory=list)  # already being purged (or gone)
    store_held: dict[str, str] = field(default_factory=dict)  # id -> which object the store holds: not shredded


def claim(session: Session, ids: Sequence[str], from_state: str | None, to_state: str) -> list[str]:
    """Move recordings from one purge state to the next; return the ids this caller won.

    The compare-and-set is what makes concurrent runs safe: the UPDATE changes only rows still in
    ``from_state`` and RETURNING names the ones it changed. On SQLite writers are serialised, so the
    UPDATE alone is the compare-and-set and the loser's matches nothing. On PostgreSQL a
    SELECT ... FOR UPDATE SKIP LOCKED first makes a second worker skip rows the first holds instead
    of waiting for them. Core statements on the session's connection: no ORM compile step, and no
    identity map to synchronise (the purge never loads Recording objects).
    """
    if not ids:
        return []
    state = purge_state_is(from_state)  # by primary key: never let the planner walk the purge index instead
    connection = session.connection()
    free: Sequence[str] = ids
    if connection.dialect.name == "postgresql":
        locked = select(_REC.c.id).where(_REC.c.id.in_(ids), state).with_for_update(skip_locked=True)
        free = list(connection.execute(locked).scalars())
        if not free:
            return []
    won = connection.execute(
        update(_REC).where(_REC.c.id.in_(free), state).values(purge_state=to_state).returning(_REC.c.id)
    )
    return sorted(won.scalars())


def _lock_holds(session: Session) -> None:
    """Holds must not change between the decision and the shredding.

    SQLite: the claim's UPDATE already took the database write lock, so no hold
    can be committed until we are done. PostgreSQL: block new holds (and
    releases) for the length of this short transaction.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("LOCK TABLE holds, hold_recordings IN SHARE MODE"))


def _secure_delete(session: Session) -> None:
    # SQLite leaves deleted rows' bytes in free pages; overwrite them, so the
    # sealed keys do not survive in the database file after shredding.
    if session.get_bind().dialect.name == "sqlite":
        session.execute(text("PRAGMA secure_delete = ON"))


def _verdict(
    facts: RecordingFacts, rules: Sequence[Rule], holds: Sequence[HoldFacts], now: datetime, early_reason: str | None
) -> Decision:
    if early_reason is None:
        return decide(facts, rules, holds, now)
    # an officer overrides policy, never a hold
    refs = tuple(sorted({h.case_ref for h in covering_holds(facts, holds)}))
    return Keep(f"held: {', '.join(refs)}", holds=refs) if refs else Purge(early_reason, "")


def store_check(
    session: Session, store: BlobStore, ids: Sequence[str], now: datetime, early_reason: str | None
) -> dict[str, str]:
    """Step 0, before the shredding and outside its lock: of the recordings that would be purged now,
    those whose objects the store still holds ({id: why}). They are not shredded: shredding them
    would destroy the only key to audio that the store keeps anyway (retention.holds_sync)."""
    rules, holds = rules_in_force(session), active_holds(session)
    query = select(*FACT_COLUMNS).where(Recording.id.in_(ids), purge_state_is(None)).order_by(Recording.id)
    facts = [facts_from_row(r) for r in session.connection().execute(query)]  # Core rows: no ORM loading
    going = [f for f in facts if isinstance(_verdict(f, rules, holds, now, early_reason), Purge)]
    return check_store_holds(session, store, [f.id for f in going], facts=going)


def shred(
    session: Session, ids: Sequence[str], *, now: datetime, actor: str, early_reason: str | None = None
) -> ShredOutcome:
    """Step 1, in the caller's transaction (commit it to make the shredding durable).

    With ``early_reason`` None this is the retention job: each recording is
    purged only if ``decide`` says so. With a reason it is an officer deleting
    before its time: policy is overridden, holds never are.
    """
    outcome = ShredOutcome()
    _secure_delete(session)
    won = claim(session, ids, None, SHREDDING)
    outcome.not_claimed = sorted(set(ids) - set(won))
    if not won:
        return outcome
    _lock_holds(session)
    rules, holds = rules_in_force(session), active_holds(session)
    connection = session.connection()  # the rest is Core on the transaction's connection: columns, not objects
    rows = connection.execute(
        select(*FACT_COLUMNS, Recording.ended_at).where(Recording.id.in_(won)).order_by(Recording.id)
    ).all()
    key_ids: dict[str, list[str]] = {rid: [] for rid in won}
    sealed = select(SealedKey.recording_id, SealedKey.key_id).where(SealedKey.recording_id.in_(won))
    for rid, key_id in connection.execute(sealed.order_by(SealedKey.recording_id, SealedKey.key_id)):
        key_ids[rid].append(key_id)
    keep: list[str] = []
    tombstones: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    for row in rows:
        facts = facts_from_row(row)
        verdict = _verdict(facts, rules, holds, now, early_reason)
        if isinstance(verdict, Keep):
            keep.append(row.id)
            if verdict.holds:
                outcome.held[row.id] = verdict.holds
            else:
                outcome.kept[row.id] = verdict.reason
            continue
        reason, rule = verdict.reason, verdict.rule or None
        tombstones.append(
            {
                "recording_id": row.id,
                "site_id": row.site_id,
                "device_id": row.device_id,
                "started_at": row.started_at,
                "ended_at": row.ended_at,
                "categories": sorted(facts.categories),
                "reason": reason,
                "rule": rule,
                "actor": actor,
                "sealed_key_ids": key_ids[row.id],
                "shredded_at": now,
            }
        )
        events.append(
            {
                "actor": actor,
                "action": Action.RECORDING_SHRED,
                "target": f"recording:{row.id}",
                "purpose": early_reason,
                "detail": {"reason": reason, "rule": rule, "sealed_keys": key_ids[row.id]},
            }
        )
        outcome.shredded.append(row.id)
    if keep:  # un-claim: nobody else saw the claim, this transaction holds the lock
        connection.execute(update(_REC).where(_REC.c.id.in_(keep)).values(purge_state=None))
    if outcome.shredded:
        # The shredding itself: one statement for the batch, in the transaction that holds the claims;
        # then every tombstone in one executemany and every audit entry in one batched append.
        connection.execute(delete(_SEALED).where(_SEALED.c.recording_id.in_(outcome.shredded)))
        # Officers' notes describe what was said: they go with the keys, not with the audit trail.
        connection.execute(delete(_NOTES).where(_NOTES.c.recording_id.in_(outcome.shredded)))
        connection.execute(insert(_TOMB), tombstones)
        record_events(session, events)
    return outcome


# --------------------------------------------------------------------------- step 2: objects


DELETE_WORKERS = 8  # recordings whose objects are deleted at once (S3 requests wait on the network); see delete_all


def delete_objects(store: BlobStore, keys: Sequence[str]) -> None:
    """Step 2 for one recording. Missing objects are fine; any other error propagates and the
    recording stays "shredding"."""
    for key in keys:
        store.delete(key)
        crash_point("object")


def delete_all(store: BlobStore, keys: dict[str, list[str]]) -> dict[str, BaseException | None]:
    """Step 2 for a batch: each recording's objects in turn, several recordings at once (the
    store calls wait on the network, so threads overlap them). {id: its error or None}.

    A store may say how many deletes are worth running at once (``delete_workers``): the
    filesystem store says 1, as an unlink is a short local call that threads only make dearer
    (thread start-up and GIL hand-offs cost more CPU than they overlap). In that case, or for a
    single recording, the deletes run in this thread, in order; the outcome is the same."""
    workers = min(DELETE_WORKERS, getattr(store, "delete_workers", DELETE_WORKERS), len(keys))
    if workers <= 1:  # one recording, or a store whose deletes gain nothing from threads (local files)
        outcome: dict[str, BaseException | None] = {}
        for rid, its in keys.items():
            try:
                delete_objects(store, its)
                outcome[rid] = None
            except Exception as exc:
                outcome[rid] = exc
        return outcome
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="purge-delete") as pool:
        futures: dict[str, Future[None]] = {rid: pool.submit(delete_objects, store, its) for rid, its in keys.items()}
    found = {rid: future.exception() for rid, future in futures.items()}
    for error in found.values():
        if error is not None and not isinstance(error, Exception):
            raise error  # a crash injected by a test (or an interrupt): as it would be without threads
    return found


# --------------------------------------------------------------------------- step 3: finalise


def _sign(key: nacl.signing.SigningKey, canonical_record: bytes) -> bytes:
    """Sign a deletion record given as its canonical JSON (verify_deletion_record checks the same bytes)."""
    return key.sign(_RECORD_DOMAIN + canonical_record).signature


def verify_deletion_record(record: dict[str, Any], signature: bytes, public_key: bytes) -> None:
    """Raise IntegrityError unless the service key signed exactly this deletion record."""
    try:
        nacl.signing.VerifyKey(public_key).verify(_RECORD_DOMAIN + canonical_json(record), signature)
    except (nacl.exceptions.BadSignatureError, ValueError) as exc:
        raise IntegrityError("deletion record signature does not verify") from exc


def finalise(session: Session, ids: Sequence[str], *, now: datetime, key: nacl.signing.SigningKey) -> list[str]:
    """Step 3, in the caller's transaction: returns the recordings this caller completed.

    Set-based: the rows are read in three queries, every tombstone is completed in one
    executemany UPDATE, the segment rows go in one DELETE and the audit entries in one append.
    """
    won = claim(session, ids, SHREDDING, PURGED)
    if not won:
        return won
    connection = session.connection()  # Core on the transaction's connection, as in shred
    recordings = {
        r.id: r
        for r in connection.execute(select(_REC.c.id, _REC.c.header, _REC.c.head_hash).where(_REC.c.id.in_(won)))
    }
    tomb_columns = [_TOMB.c[c] for c in _TOMB_COLUMNS]
    tombs = {t.recording_id: t for t in connection.execute(select(*tomb_columns).where(_TOMB.c.recording_id.in_(won)))}
    segments: dict[str, list[tuple[bytes, int]]] = {rid: [] for rid in won}
    query = select(_SEG.c.recording_id, _SEG.c.ciphertext_sha256, _SEG.c.size).where(_SEG.c.recording_id.in_(won))
    for rid, digest, size in connection.execute(query.order_by(_SEG.c.recording_id, _SEG.c.index)):
        segments[rid].append((digest, size))
    updates: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    for rid in won:
        recording, tomb = recordings.get(rid), tombs.get(rid)
        if recording is None or tomb is None:  # shredding always writes both, in one transaction
            raise RuntimeError(f"recording {rid} is being purged but has no tombstone")
        values, event = _complete_tombstone(tomb, recording, segments[rid], now, key)
        updates.append(values)
        events.append(event)
    connection.execute(_COMPLETE_TOMBSTONE, updates)  # one executemany UPDATE by primary key
    connection.execute(delete(_SEG).where(_SEG.c.recording_id.in_(won)))
    record_events(session, events)
    return won


# The completion, by primary key: the SET columns are the parameters' keys (all but "tomb_id").
_COMPLETE_TOMBSTONE = update(_TOMB).where(_TOMB.c.recording_id == bindparam("tomb_id"))
_TOMB_COLUMNS = (
    "recording_id",
    "site_id",
    "device_id",
    "started_at",
    "ended_at",
    "categories",
    "reason",
    "rule",
    "actor",
    "sealed_key_ids",
    "shredded_at",
)


def _complete_tombstone(
    tomb: Any, recording: Any, segments: list[tuple[bytes, int]], now: datetime, key: nacl.signing.SigningKey
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The completed tombstone's new values and its audit entry (the deletion record signed by the service key)."""
    digest = hashlib.sha256(b"".join(d for d, _ in segments)).digest()
    total = sum(size for _, size in segments)
    record = {
        "type": DELETION_RECORD_TYPE,
        "version": DELETION_RECORD_VERSION,
        "recording_id": recording.id,
        "site": tomb.site_id,
        "device": tomb.device_id,
        "started_at": iso(tomb.started_at),
        "ended_at": iso(tomb.ended_at),
        "categories": tomb.categories,
        "reason": tomb.reason,
        "rule": tomb.rule,
        "actor": tomb.actor,
        "sealed_key_ids": tomb.sealed_key_ids,
        "shredded_at": iso(tomb.shredded_at),
        "purged_at": iso(now),
        "header_sha256": header_hash(recording.header).hex(),
        "segment_count": len(segments),
        "bytes": total,
        "head_hash": recording.head_hash.hex(),
        "ciphertext_sha256_digest": digest.hex(),
    }
    signed = canonical_json(record)  # the bytes signed, and hashed for the audit entry
    signature = _sign(key, signed)
    values = {
        "tomb_id": recording.id,
        "purged_at": now,
        "segment_count": len(segments),
        "bytes_total": total,
        "head_hash": recording.head_hash,
        "ciphertext_digest": digest,
        "record": record,
        "signature": signature,
    }
    event = {
        "actor": tomb.actor,
        "action": Action.RECORDING_PURGE,
        "target": f"recording:{recording.id}",
        "detail": {
            "rule": tomb.rule,
            "segments": len(segments),
            "record_sha256": hashlib.sha256(signed).hexdigest(),
            "signature": signature.hex(),
        },
    }
    return values, event


# --------------------------------------------------------------------------- all three, for a few recordings


@dataclass
class PurgeResult:
    shred: ShredOutcome
    purged: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)


def complete(
    sessions: sessionmaker[Session], store: BlobStore, key: nacl.signing.SigningKey, ids: Sequence[str], now: datetime
) -> tuple[list[str], dict[str, str]]:
    """Steps 2 and 3 for recordings already shredded. Returns (purged, errors by id)."""
    errors: dict[str, str] = {}
    ready = []
    with sessions() as session:
        keys = object_keys(session, ids)
    failed = delete_all(store, {rid: keys[rid] for rid in ids})
    for rid in ids:
        exc = failed[rid]
        if exc is None:
            ready.append(rid)
        elif isinstance(exc, ObjectHeld):  # held after shredding (placed by hand meanwhile): say so, retry next run
            errors[rid] = f"deleting objects: the object store holds {exc.key} under a legal hold ({exc})"
        else:  # reported; the recording stays "shredding" for the next run
            errors[rid] = f"deleting objects: {exc}"
    crash_point("objects")
    with sessions() as session, session.begin():
        purged = finalise(session, ready, now=now, key=key)
    crash_point("purge")
    return purged, errors


def purge(
    sessions: sessionmaker[Session],
    store: BlobStore,
    key: nacl.signing.SigningKey,
    ids: Sequence[str],
    *,
    now: datetime,
    actor: str,
    early_reason: str | None = None,
) -> PurgeResult:
    """Check the store's holds, shred, delete objects, finalise: the whole path for a batch of recordings.

    A recording whose objects the store holds is refused before step 1 (reported in
    ``store_held`` and ``errors``), so it never loses its keys while its audio must stay.
    """
    with sessions() as session:
        refused = store_check(session, store, ids, now, early_reason)
    with sessions() as session, session.begin():
        outcome = shred(session, [i for i in ids if i not in refused], now=now, actor=actor, early_reason=early_reason)
    outcome.store_held = refused
    crash_point("shred")
    purged, errors = complete(sessions, store, key, outcome.shredded, now)
    return PurgeResult(outcome, purged, {**refused, **errors})
