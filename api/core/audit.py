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

import hmac
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import nacl.hash
import nacl.signing
from nacl.encoding import RawEncoder
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from api.core.audit_tree import NodeFiller
from api.core.models import AccessLog, AuditCheckpoint, AuditHead, utcnow
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

    @property
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
    bumped = session.execute(
        update(AuditHead).where(AuditHead.id == 1).values(seq=AuditHead.seq + 1).returning(AuditHead.seq)
    ).scalar_one_or_none()
    if bumped is None:
        raise RuntimeError("audit log has no head row: run 'countersign server init'")
    head = _fresh_head(session)
    policy: CheckpointPolicy | None = session.info.get(SIGNER_KEY)
    now = utcnow()
    entry = AccessLog(
        seq=bumped,
        at=now,
        actor=actor,
        action=action,
        target=target,
        outcome=outcome,
        purpose=purpose,
        detail=detail or {},
    )
    entry.entry_hash = entry_hash(entry_fields(entry))
    entry.chain_hash = link = chain_hash(head.chain_hash, entry.entry_hash)
    entry.seal = policy.seal(link) if policy is not None else b""
    session.add(entry)
    head.chain_hash = link
    if policy is not None and (
        bumped - head.checkpoint_seq >= policy.every_entries
        or now - head.checkpoint_at >= timedelta(seconds=policy.every_seconds)
    ):
        session.flush()
        _checkpoint(session, policy, head, now)
    session.flush()
    return entry


def entry_fields(row: AccessLog) -> dict[str, Any]:
    """The fields an entry's hash covers, in their hashed form (see evidence.audit_log)."""
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
        rows = select(AccessLog).where(AccessLog.seq >= expected).order_by(AccessLog.seq).limit(VERIFY_BATCH)
        batch = session.scalars(rows).all()
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
