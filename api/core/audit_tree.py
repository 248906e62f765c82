"""The audit log as an RFC 6962 Merkle tree: stored nodes, signed tree heads, proofs.

The leaves are the entries' hashes (access_log.entry_hash, leaf index = seq - 1:
SHA-256(0x00 || canonical entry) is already an RFC 6962 leaf hash). Every
perfect subtree of level >= 1 over the signed part of the log is stored in
audit_nodes, filled in batch when the service signs a checkpoint
(api.core.audit._checkpoint, under the append lock, from the entries it has
just re-checked), so a proof is a fold of O(log n) stored hashes fetched in two
queries, whatever the log's size. A checkpoint with a tree root is a *tree
head*: the service's signature over (size, root, chain hash, time)
(evidence.audit_log.tree_head_message).

A proof says nothing by itself: the caller checks it against a tree head
whose signature it verified (client/audit.py does both).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, insert, or_, select
from sqlalchemy.orm import Session

from api.core.models import AccessLog, AuditCheckpoint, AuditHead, AuditNode
from evidence.audit_log import timestamp, tree_head_message
from evidence.merkle import CompactRange, NodeId, build_proof, consistency_plan, inclusion_plan, plan_nodes

INSERT_BATCH = 5000


class NoTreeHead(LookupError):
    """No signed tree head (of that size) exists yet."""


class TreeIncomplete(LookupError):
    """A node the tree needs is not stored (the log was edited behind the service's back, or not yet filled)."""


@dataclass(frozen=True)
class TreeHead:
    """A tree head as the service signed it."""

    size: int
    root: bytes
    chain_hash: bytes
    at: datetime
    at_text: str  # the exact time string inside the signed message
    signature: bytes  # Ed25519, by the service's audit key, over `message`

    @property
    def message(self) -> bytes:
        return tree_head_message(self.size, self.root, self.chain_hash, self.at_text)

    @classmethod
    def of(cls, row: AuditCheckpoint) -> TreeHead:
        if row.tree_root is None:
            raise NoTreeHead(f"checkpoint {row.seq} was signed before the tree (no root)")
        return cls(row.seq, row.tree_root, row.chain_hash, row.at, timestamp(row.at), row.signature)

    def public(self) -> dict[str, int | str]:
        return {
            "size": self.size,
            "root": self.root.hex(),
            "chain_hash": self.chain_hash.hex(),
            "at": self.at_text,
            "signature": self.signature.hex(),
        }


_HEADS = select(AuditCheckpoint).where(AuditCheckpoint.tree_root.is_not(None))


def latest_tree_head(session: Session) -> TreeHead:
    """The newest signed tree head; NoTreeHead if the service has signed none yet."""
    row = session.scalars(_HEADS.order_by(AuditCheckpoint.seq.desc()).limit(1)).first()
    if row is None:
        raise NoTreeHead("the service has not signed a tree head yet")
    return TreeHead.of(row)


def tree_head(session: Session, size: int) -> TreeHead:
    """The signed tree head of exactly `size` entries; NoTreeHead if there is none."""
    row = session.scalars(_HEADS.where(AuditCheckpoint.seq == size)).first()
    if row is None:
        raise NoTreeHead(f"no signed tree head of size {size}")
    return TreeHead.of(row)


def tree_heads(session: Session, after: int = 0, limit: int = 1000) -> list[TreeHead]:
    rows = session.scalars(_HEADS.where(AuditCheckpoint.seq > after).order_by(AuditCheckpoint.seq).limit(limit))
    return [TreeHead.of(row) for row in rows]


def subtree_hashes(session: Session, nodes: Iterable[NodeId]) -> dict[NodeId, bytes]:
    """The hashes of these perfect subtrees: leaves from access_log, the rest from audit_nodes (two queries)."""
    wanted = set(nodes)
    out: dict[NodeId, bytes] = {}
    leaves = sorted(index + 1 for level, index in wanted if level == 0)
    if leaves:
        leaf_query = select(AccessLog.seq, AccessLog.entry_hash).where(AccessLog.seq.in_(leaves))
        out.update(((0, seq - 1), h) for seq, h in session.execute(leaf_query))
    by_level: dict[int, list[int]] = {}
    for level, index in wanted:
        if level > 0:
            by_level.setdefault(level, []).append(index)
    if by_level:
        # (level = l AND index IN (...)) OR ...: a primary-key lookup per node on SQLite and PostgreSQL alike.
        where = or_(*(and_(AuditNode.level == lv, AuditNode.index.in_(ix)) for lv, ix in by_level.items()))
        query = select(AuditNode.level, AuditNode.index, AuditNode.hash).where(where)
        out.update(((lv, ix), h) for lv, ix, h in session.execute(query))
    missing = wanted - out.keys()
    if missing:
        raise TreeIncomplete(f"the audit tree has no node {min(missing)} (level, index)")
    return out


def _filled(session: Session) -> int:
    return session.scalar(select(AuditHead.nodes_filled).where(AuditHead.id == 1)) or 0


def inclusion_proof(session: Session, seq: int, size: int) -> list[bytes]:
    """The RFC 9162 inclusion path of entry `seq` (leaf seq - 1) in the tree of the first `size` entries.

    ValueError if seq is not in 1..size; TreeIncomplete if the tree is not filled up to `size`.
    """
    if not 1 <= seq <= size:
        raise ValueError(f"entry {seq} is not in a tree of {size} entries")
    if size > _filled(session):
        raise TreeIncomplete(f"the audit tree is not filled up to size {size}")
    plan = inclusion_plan(seq - 1, size)
    return build_proof(plan, subtree_hashes(session, plan_nodes(plan)))


def consistency_proof(session: Session, old: int, new: int) -> list[bytes]:
    """The RFC 9162 consistency proof from the tree of `old` entries to the tree of `new` entries."""
    if not 0 <= old <= new:
        raise ValueError(f"no consistency proof from size {old} to size {new}")
    if new > _filled(session):
        raise TreeIncomplete(f"the audit tree is not filled up to size {new}")
    plan = consistency_plan(old, new)
    return build_proof(plan, subtree_hashes(session, plan_nodes(plan)))


def compact_range_at(session: Session, size: int, filled: int | None = None) -> CompactRange:
    """The compact range of the first `size` leaves: stored nodes, then any leaves past the filled part."""
    filled = _filled(session) if filled is None else filled
    base = min(size, filled)
    nodes = CompactRange.prefix_nodes(base)
    hashes = subtree_hashes(session, nodes)
    acc = CompactRange.from_prefix(base, [hashes[n] for n in nodes])
    if size > base:
        rest = select(AccessLog.entry_hash).where(AccessLog.seq > base, AccessLog.seq <= size).order_by(AccessLog.seq)
        for leaf in session.scalars(rest.execution_options(yield_per=5000)):
            acc.append(leaf)
        if acc.size != size:
            raise TreeIncomplete(f"the log has fewer than {size} entries")
    return acc


class NodeFiller:
    """Extends the stored tree leaf by leaf from `start` (<= nodes_filled), inserting nodes in batches.

    Used under the append lock only (api.core.audit._checkpoint): leaves go in only
    after the entry has been re-checked (content, link, seal).
    """

    def __init__(self, session: Session, start: int) -> None:
        self.session = session
        self.acc = compact_range_at(session, start, filled=start)
        self._batch: list[dict[str, int | bytes]] = []

    @property
    def size(self) -> int:
        return self.acc.size

    def add(self, leaf: bytes) -> None:
        for level, index, h in self.acc.append(leaf):
            self._batch.append({"level": level, "index": index, "hash": h})
        if len(self._batch) >= INSERT_BATCH:
            self.flush()

    def flush(self) -> None:
        if self._batch:
            self.session.execute(insert(AuditNode), self._batch)  # one executemany
            self._batch = []

    def root(self) -> bytes:
        return self.acc.root()
