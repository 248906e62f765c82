"""The audit log: one append-only, hash-chained table, one function that writes it.

Tags are shaped source:subject:action (e.g. "api:evidence:read"). Entries hold
ids and hashes, never audio. Evidence reads are written and committed *before*
any byte leaves; if the write fails the read fails (fail closed).

Appends are serialised by first bumping the single audit_head row (an UPDATE,
so it takes SQLite's write lock or PostgreSQL's row lock before anything is
read): sequence numbers have no gaps and the chain stays linear across threads
and processes. The service signs a checkpoint every N entries or T seconds
(see evidence.audit_log for the format and the offline verifier). Each
checkpoint also extends the log's Merkle tree (api.core.audit_tree) over the
entries it has just re-checked and signs a tree head over its root.
"""

from __future__ import annotations

import functools
import hmac
import logging
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

import nacl.hash
import nacl.signing
from nacl.encoding import RawEncoder
from sqlalchemy import Engine, Table, bindparam, insert, select, update
from sqlalchemy import event as sa_event
from sqlalchemy.orm import Session, sessionmaker

from api.core.audit_tree import NodeFiller
from api.core.batch_rows import insert_row
from api.core.models import AccessLog, AuditCheckpoint, AuditHead, AuditNode, utcnow
from evidence.audit_actions import Action
from evidence.audit_log import GENESIS, chain_hash, entry_hash, sign_tree_head, timestamp

SIGNER_KEY = "audit_signer"
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CheckpointPolicy:
    """How the service seals entries and signs checkpoints; handed to sessions through Session.info."""

    key: nacl.signing.SigningKey
    every_entries: int = 1000
    every_seconds: int = 600

    @functools.cached_property  # derived once per policy: every read re-checks many seals (api.anchors)
    def mac_key(self) -> bytes:
        # A separate key for entry seals, derived from the signing seed with keyed BLAKE2b
        # (libsodium's generic hash), so the seal key never signs and the signing key never MACs.
        return nacl.hash.blake2b(bytes(self.key), key=b"countersign-audit-seal-v1", digest_size=32, encoder=RawEncoder)

    def seal(self, chain: bytes) -> bytes:
        return nacl.hash.blake2b(chain, key=self.mac_key, digest_size=32, encoder=RawEncoder)


def record_event(
    session: Session,
    *,
    actor: str,
    action: Action,
    target: str | None = None,
    outcome: str = "allowed",
    purpose: str | None = None,
    detail: dict[str, Any] | None = None,
) -> AccessLog:
    """Append one entry in the caller's transaction: three Core statements, no ORM unit of work
    (one, the INSERT, after the first of a transaction flagged APPEND_BATCH).

    The head UPDATE is the append lock and hands back, in the same statement, the new seq and
    the chain hash to link to (not yet moved: it is this transaction's to move). A checkpoint
    that falls due is not signed here, inside the caller's transaction and under its lock: it
    is queued for after the commit (checkpoint_pending, via the session's after_commit), so the
    entries it re-checks are committed and no append waits on the re-check. Returns the entry
    (not attached to the session).
    """
    if session.autoflush:  # what session.execute would do first: pending ORM changes precede the entry
        session.flush()
    # The session's own connection and transaction, but Core execution: no ORM compile step per statement.
    connection = session.connection()
    tail: tuple[int, bytes, int, datetime] | None = session.info.get(_TAIL)
    if tail is not None:  # this transaction holds the head since its first append (see APPEND_BATCH)
        seq, prev, checkpoint_seq, checkpoint_at = tail[0] + 1, tail[1], tail[2], tail[3]
    else:
        head = connection.execute(_BUMP).one_or_none()
        if head is None:
            raise RuntimeError("audit log has no head row: run 'countersign server init'")
        seq, prev, checkpoint_seq, checkpoint_at = head
    policy: CheckpointPolicy | None = session.info.get(SIGNER_KEY)
    now = utcnow()
    fields = {
        "seq": seq,
        "at": now,
        "actor": actor,
        "action": action,
        "target": target,
        "outcome": outcome,
        "purpose": purpose,
        "detail": detail or {},
    }
    leaf = entry_hash({**fields, "at": timestamp(now)})
    link = chain_hash(prev, leaf)
    seal = policy.seal(link) if policy is not None else b""
    insert_row(session, _ENTRIES, {**fields, "entry_hash": leaf, "chain_hash": link, "seal": seal})
    if session.info.get(APPEND_BATCH):
        if not session.info.get(_HOOKED):  # once per session: each is a no-op without a tail
            session.info[_HOOKED] = True
            sa_event.listen(session, "before_commit", settle_head)
            sa_event.listen(session, "after_transaction_end", _drop_tail)
        session.info[_TAIL] = (seq, link, checkpoint_seq, checkpoint_at)
    else:
        connection.execute(_MOVE_HEAD, {"link": link})
    if policy is not None and _due(policy, seq, checkpoint_seq, checkpoint_at, now):
        _checkpoint_after_commit(session)
    return AccessLog(**fields, entry_hash=leaf, chain_hash=link, seal=seal)


_BUMP = (
    update(AuditHead)
    .where(AuditHead.id == 1)
    .values(seq=AuditHead.seq + 1)
    .returning(AuditHead.seq, AuditHead.chain_hash, AuditHead.checkpoint_seq, AuditHead.checkpoint_at)
    .execution_options(synchronize_session=False)
)
_MOVE_HEAD = (
    update(AuditHead)
    .where(AuditHead.id == 1)
    .values(chain_hash=bindparam("link"))
    .execution_options(synchronize_session=False)
)
_ENTRIES = cast(Table, AccessLog.__table__)

# Session.info flag for a transaction that appends many entries one at a time (the group commit's
# batches, api.core.group_commit): after its first append, which bumps the head and so holds it
# (the append lock) to the end of the transaction, the next ones number and chain from the last
# one this transaction wrote (kept under _TAIL) instead of bumping and moving the head again, and
# the head is moved once, to the last entry, just before the commit (settle_head). Two statements
# fewer per append after the first; the entries, their order and the log are exactly the same.
# Only for transactions whose code reads no audit_head row between its appends.
APPEND_BATCH = "audit_append_batch"
_TAIL = "audit_append_tail"
_HOOKED = "audit_append_hooked"
_SETTLE = (
    update(AuditHead)
    .where(AuditHead.id == 1)
    .values(seq=bindparam("last"), chain_hash=bindparam("link"))
    .execution_options(synchronize_session=False)
)


def settle_head(session: Session) -> None:
    """Move the head to the last entry this transaction appended under APPEND_BATCH (before its commit)."""
    tail = session.info.pop(_TAIL, None)
    if tail is not None:
        session.connection().execute(_SETTLE, {"last": tail[0], "link": tail[1]})


def _drop_tail(session: Session, transaction: Any) -> None:
    # Every flush runs in a subtransaction whose end fires this event too: only the end of the
    # outermost one (rolled back, or committed and already settled) ends the appends' run.
    if transaction.parent is None:
        session.info.pop(_TAIL, None)


def _due(policy: CheckpointPolicy, seq: int, checkpoint_seq: int, checkpoint_at: datetime, now: datetime) -> bool:
    return seq - checkpoint_seq >= policy.every_entries or now - checkpoint_at >= timedelta(
        seconds=policy.every_seconds
    )


# --------------------------------------------------------------------------- checkpoints after the commit
#
# Session.info keys: CHECKPOINT_DUE marks a session whose commit should be followed by a
# checkpoint attempt; a list under CHECKPOINT_DEFER (set by a caller, e.g. the upload route)
# receives the attempt as a callable instead of running it inside commit(), so the caller can
# run it after its answer has gone out (a background task).
CHECKPOINT_DUE = "audit_checkpoint_due"
CHECKPOINT_DEFER = "audit_checkpoint_defer"
# Past this many unsigned entries (the first fill of an upgraded log) the checkpoint is made the
# old way, under the append lock, in batches: an ordinary one (~every_entries) is made outside it.
OUTSIDE_LOCK_MAX = 50_000
_locks: weakref.WeakKeyDictionary[Engine, threading.Lock] = weakref.WeakKeyDictionary()
_attempted: weakref.WeakKeyDictionary[Engine, int] = weakref.WeakKeyDictionary()  # head seq at the last failure
_locks_guard = threading.Lock()


def _checkpoint_after_commit(session: Session) -> None:
    if session.info.get(CHECKPOINT_DUE):
        return
    session.info[CHECKPOINT_DUE] = True
    sa_event.listen(session, "after_commit", _after_commit, once=True)


def _after_commit(session: Session) -> None:
    session.info.pop(CHECKPOINT_DUE, None)
    policy: CheckpointPolicy | None = session.info.get(SIGNER_KEY)
    bind = session.get_bind()
    if policy is None or not isinstance(bind, Engine):  # a session on a borrowed connection: the next append
        return
    job = functools.partial(checkpoint_pending, bind, policy)
    deferred: list[Callable[[], Any]] | None = session.info.get(CHECKPOINT_DEFER)
    if deferred is not None:
        deferred.append(job)
    else:
        job()


def checkpoint_pending(bind: Engine, policy: CheckpointPolicy) -> int | None:
    """Sign a checkpoint if one is due (N entries or T seconds since the last); the seq signed, or None.

    Outside any append: the re-check of the committed entries and the Merkle fill are reads; only the
    final claim takes the append lock, for a few statements. The claim is a compare-and-set on the
    head row's checkpoint_seq and nodes_filled, so across threads and processes exactly one signer
    wins each stretch (a loser rolls back its nodes and signature unseen). One attempt at a time
    per process and engine; a stretch that fails verification is retried after N more entries.
    Never raises: the commit it follows has already succeeded.
    """
    with _locks_guard:
        lock = _locks.setdefault(bind, threading.Lock())
    if not lock.acquire(blocking=False):
        return None  # this process is signing now; the next append that finds it due tries again
    try:
        with Session(bind, info={SIGNER_KEY: policy}) as session:
            return _checkpoint_outside(session, bind, policy)
    except Exception:
        logger.exception("audit log: checkpoint failed; the next append that finds one due tries again")
        return None
    finally:
        lock.release()


def _checkpoint_outside(session: Session, bind: Engine, policy: CheckpointPolicy) -> int | None:
    state = session.execute(
        select(AuditHead.seq, AuditHead.checkpoint_seq, AuditHead.checkpoint_at, AuditHead.nodes_filled)
    ).one_or_none()
    if state is None:
        return None
    seq, start, checkpoint_at, filled = state
    now = utcnow()
    if seq <= start or not _due(policy, seq, start, checkpoint_at, now):
        return None
    failed_at = _attempted.get(bind)
    if failed_at is not None and seq - failed_at < policy.every_entries and start < failed_at:
        return None  # this stretch failed to verify a moment ago: not on every append
    if filled != start or seq - start > OUTSIDE_LOCK_MAX:
        # Unusual: a log signed before the tree (filled behind), a head set back (filled ahead),
        # or a long unsigned stretch. The old way: under the append lock, with every check.
        session.execute(update(AuditHead).where(AuditHead.id == 1).values(seq=AuditHead.seq))
        head = _fresh_head(session)
        before = head.checkpoint_seq
        _checkpoint(session, policy, head, now)
        session.commit()
        if head.checkpoint_seq == before:
            _attempted[bind] = head.seq
        return head.checkpoint_seq if head.checkpoint_seq != before else None
    filler = NodeFiller(session, start)
    prior = session.get(AuditCheckpoint, start) if start else None
    claim = update(AuditHead).where(
        AuditHead.id == 1, AuditHead.checkpoint_seq == start, AuditHead.nodes_filled == start
    )
    if prior is not None and prior.tree_root is not None and filler.root() != prior.tree_root:
        logger.error("audit log: the tree up to seq %s is not the one the service signed: not signing", start)
        _failed(session, bind, claim, seq, now)
        return None
    nodes: list[dict[str, Any]] = []

    def on_leaf(leaf: bytes) -> None:
        nodes.extend({"level": lv, "index": ix, "hash": h} for lv, ix, h in filler.acc.append(leaf))

    verified = last_own_entry(session, policy, start, on_leaf=on_leaf)
    if verified is None or verified[0] <= start:
        _failed(session, bind, claim, seq, now)
        return None
    reached, link = verified
    session.rollback()  # end the reads; what follows is one short write transaction
    moved = session.execute(claim.values(checkpoint_seq=reached, nodes_filled=filler.size, checkpoint_at=now))
    if moved.rowcount != 1:  # type: ignore[attr-defined]
        session.rollback()  # another thread or process signed this stretch first
        return None
    if nodes:
        session.execute(insert(AuditNode), nodes)
    at = timestamp(now)
    signature = sign_tree_head(policy.key, reached, filler.root(), link, at)
    session.execute(
        insert(AuditCheckpoint),
        {"seq": reached, "chain_hash": link, "at": now, "signature": signature, "tree_root": filler.root()},
    )
    session.commit()
    if reached < seq:
        _attempted[bind] = seq  # stopped short of the head: an entry the service did not write
    else:
        _attempted.pop(bind, None)
    return int(reached)


def _failed(session: Session, bind: Engine, claim: Any, seq: int, now: datetime) -> None:
    """Nothing to sign past the last checkpoint: note the attempt (as _checkpoint does) and stop."""
    session.rollback()
    session.execute(claim.values(checkpoint_at=now))
    session.commit()
    _attempted[bind] = seq


# What re-checking an entry needs, as plain rows: a checkpoint re-checks every_entries of them
# and a read its recording's uploads, and building ORM objects for them was a third of the
# checkpoint's CPU (py-spy). Such a row has the attributes entry_fields reads.
ENTRY_COLUMNS = (
    AccessLog.seq,
    AccessLog.at,
    AccessLog.actor,
    AccessLog.action,
    AccessLog.target,
    AccessLog.outcome,
    AccessLog.purpose,
    AccessLog.detail,
    AccessLog.chain_hash,
    AccessLog.seal,
)


def entry_fields(row: Any) -> dict[str, Any]:
    """The fields an entry's hash covers, in their hashed form (see evidence.audit_log).

    `row` is an AccessLog or a row of ENTRY_COLUMNS.
    """
    return {
        "seq": row.seq,
        "at": timestamp(row.at),
        "actor": row.actor,
        "action": row.action,
        "target": row.target,
        "outcome": row.outcome,
        "purpose": row.purpose,
        "detail": row.detail,
    }


def _fresh_head(session: Session) -> AuditHead:
    """The head row as the database has it now (not a stale identity-map copy)."""
    query = select(AuditHead).where(AuditHead.id == 1).execution_options(populate_existing=True)
    return session.execute(query).scalar_one()


VERIFY_BATCH = 5000


def last_own_entry(
    session: Session, policy: CheckpointPolicy, after: int, on_leaf: Callable[[bytes], None] | None = None
) -> tuple[int, bytes] | None:
    """Re-check the entries after a checkpoint; return the last (seq, chain hash) this service wrote.

    Stops at the first entry whose content, link or seal does not hold: a row
    edited or inserted behind the service's back. Nothing from there on gets
    signed, so an offline verifier reports it as not covered by a checkpoint.
    `on_leaf` gets each good entry's recomputed hash, in order (the Merkle fill).
    Reads in batches, so a long stretch (the first fill of an upgraded log) stays in flat memory.
    """
    prev = session.scalar(select(AccessLog.chain_hash).where(AccessLog.seq == after)) if after else GENESIS
    last: tuple[int, bytes] | None = None
    expected = after + 1
    while True:
        rows = select(*ENTRY_COLUMNS).where(AccessLog.seq >= expected).order_by(AccessLog.seq).limit(VERIFY_BATCH)
        batch = session.execute(rows).all()
        for row in batch:
            leaf = entry_hash(entry_fields(row))
            link = chain_hash(prev or GENESIS, leaf)
            if row.seq != expected or link != row.chain_hash or not hmac.compare_digest(policy.seal(link), row.seal):
                logger.error(
                    "audit log: entry seq %s was not written by this service; not signing past seq %s",
                    row.seq,
                    expected - 1,
                )
                return last
            if on_leaf is not None:
                on_leaf(leaf)
            prev, last = link, (row.seq, link)
            expected += 1
        if len(batch) < VERIFY_BATCH:
            return last


def _checkpoint(session: Session, policy: CheckpointPolicy, head: AuditHead, now: datetime) -> None:
    """Re-check the entries since the last checkpoint, extend the Merkle tree over them, sign a tree head.

    Runs under the append lock. Normally the tree is filled exactly up to the last
    checkpoint; a log signed before the tree existed (nodes_filled 0) is re-checked
    and filled from its first entry, once.
    """
    head.checkpoint_at = now  # tried now, whatever the outcome: do not re-verify on every append
    if head.nodes_filled > head.checkpoint_seq:
        # The service moves both together: the head row was set back behind its back (a truncated log).
        # Sign nothing more; the signed checkpoints past the head then show the removal.
        logger.error("audit log: the head was set back to seq %s below the filled tree: not signing", head.seq)
        return
    start = min(head.nodes_filled, head.checkpoint_seq)
    filler = NodeFiller(session, start)
    prior = session.get(AuditCheckpoint, start) if start else None
    if prior is not None and prior.tree_root is not None and filler.root() != prior.tree_root:
        # The stored tree no longer has the root the service signed at `start`: the log before it was
        # rewritten. A new tree head would not extend the last one, so sign none (the chain alone would).
        logger.error("audit log: the tree up to seq %s is not the one the service signed: not signing", start)
        return
    verified = last_own_entry(session, policy, start, on_leaf=filler.add)
    filler.flush()
    head.nodes_filled = filler.size  # every stored node is over entries just re-checked
    reached = verified[0] if verified is not None else start
    if reached < head.checkpoint_seq:
        logger.error("audit log: entry seq %s, signed before, no longer verifies: not signing", reached + 1)
    if verified is None or reached <= head.checkpoint_seq:
        return
    seq, link = verified
    at = timestamp(now)
    root = filler.root()
    signature = sign_tree_head(policy.key, seq, root, link, at)
    session.add(AuditCheckpoint(seq=seq, chain_hash=link, at=now, signature=signature, tree_root=root))
    head.checkpoint_seq = seq


def checkpoint_now(session: Session) -> int:
    """Sign the log up to its head (as far as this service wrote it); return the last signed seq."""
    policy: CheckpointPolicy | None = session.info.get(SIGNER_KEY)
    if policy is None:
        raise RuntimeError("no service signing key in this session")
    # The no-op UPDATE takes the append lock so the head cannot move under us.
    session.execute(update(AuditHead).where(AuditHead.id == 1).values(seq=AuditHead.seq))
    head = _fresh_head(session)
    if head.seq > 0 and head.checkpoint_seq != head.seq:
        _checkpoint(session, policy, head, utcnow())
        session.flush()
    return head.checkpoint_seq


def init_head(session: Session) -> None:
    session.add(AuditHead(id=1, seq=0, chain_hash=GENESIS, checkpoint_seq=0, checkpoint_at=utcnow(), nodes_filled=0))
    session.flush()


def record_committed(factory: sessionmaker[Session], **fields: Any) -> int:
    """Write one entry in its own transaction; return its sequence number once it is durable."""
    with factory() as session, session.begin():
        return record_event(session, **fields).seq


def record_events(session: Session, events: list[dict[str, Any]]) -> list[int]:
    """Append several entries at once, in the caller's transaction; return their sequence numbers.

    Each event is a dict of record_event's keyword arguments (actor, action; optionally target,
    outcome, purpose, detail). The entries are exactly what as many record_event calls in a row
    would write: one gap-free run of sequence numbers, each entry hashed, chained to the one
    before and sealed the same way. But the batch costs three statements whatever its size: one
    head UPDATE (the append lock, moving seq by the batch and handing back the link to chain
    from), one executemany INSERT, and one UPDATE moving the head's chain hash. A checkpoint
    that falls due is queued for after the commit, as record_event does.
    """
    if not events:
        return []
    settle_head(session)  # after record_event's under APPEND_BATCH: the head as they left it, then as usual
    bump = (
        update(AuditHead)
        .where(AuditHead.id == 1)
        .values(seq=AuditHead.seq + len(events))
        .returning(AuditHead.seq, AuditHead.chain_hash, AuditHead.checkpoint_seq, AuditHead.checkpoint_at)
        .execution_options(synchronize_session=False)
    )
    head = session.execute(bump).one_or_none()
    if head is None:
        raise RuntimeError("audit log has no head row: run 'countersign server init'")
    last, link, checkpoint_seq, checkpoint_at = head
    policy: CheckpointPolicy | None = session.info.get(SIGNER_KEY)
    now = utcnow()
    at = timestamp(now)
    first = last - len(events) + 1
    rows: list[dict[str, Any]] = []
    for seq, event in enumerate(events, first):
        fields = {
            "seq": seq,
            "at": now,
            "actor": event["actor"],
            "action": event["action"],
            "target": event.get("target"),
            "outcome": event.get("outcome", "allowed"),
            "purpose": event.get("purpose"),
            "detail": event.get("detail") or {},
        }
        leaf = entry_hash({**fields, "at": at})
        link = chain_hash(link, leaf)
        seal = policy.seal(link) if policy is not None else b""
        rows.append({**fields, "entry_hash": leaf, "chain_hash": link, "seal": seal})
    session.execute(insert(AccessLog), rows)
    session.execute(_MOVE_HEAD, {"link": link})
    if policy is not None and _due(policy, last, checkpoint_seq, checkpoint_at, now):
        _checkpoint_after_commit(session)
    return list(range(first, last + 1))
