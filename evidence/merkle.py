"""RFC 6962 / RFC 9162 §2.1 Merkle trees: hashes, proofs, verifiers, a streaming accumulator.

Pure and dependency-free (hashlib only), so an auditor's machine can check a
proof with nothing else. Leaves are already hashed (``leaf_hash``); a node is
``SHA-256(0x01 || left || right)``; the root of ``n`` leaves (MTH) splits at the
largest power of two below ``n``; the empty tree's root is ``SHA-256("")``.

Proofs are generated from *perfect* subtrees only: ``(level, index)`` names the
subtree over leaves ``[index * 2**level, (index + 1) * 2**level)``, level 0
being a leaf. Every hash a proof needs is a fold of O(log n) such subtrees, so
a service that stores them answers a proof with a few dozen lookups. The
``*_plan`` functions say which subtrees are needed (so they can be fetched in
one query); ``build_proof`` folds them; ``inclusion_proof`` and
``consistency_proof`` do both through a callable.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
NodeId = tuple[int, int]  # (level, index) of a perfect subtree
Plan = list[list[NodeId]]  # one proof element each: the perfect subtrees it folds, left to right
Subtree = Callable[[int, int], bytes]


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than n (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def root(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH of a list of leaf hashes (streaming: O(log n) memory besides the list)."""
    acc = CompactRange()
    for leaf in leaf_hashes:
        acc.append(leaf)
    return acc.root()


def perfect_subtrees(start: int, end: int) -> list[NodeId]:
    """The perfect subtrees that tile [start, end), left to right, largest aligned first.

    For the ranges an RFC 6962 tree is made of (and for every prefix [0, n)), the root
    of the range is these hashes folded from the right.
    """
    out: list[NodeId] = []
    while start < end:
        level = (start & -start).bit_length() - 1 if start else (end - start).bit_length() - 1
        while start + (1 << level) > end:
            level -= 1
        out.append((level, start >> level))
        start += 1 << level
    return out


def fold(hashes: Sequence[bytes]) -> bytes:
    """The root of consecutive perfect subtrees of decreasing size: fold from the right."""
    if not hashes:
        return EMPTY_ROOT
    acc = hashes[-1]
    for h in reversed(hashes[:-1]):
        acc = node_hash(h, acc)
    return acc


def inclusion_plan(index: int, size: int) -> Plan:
    """RFC 9162 §2.1.3.1 PATH(index, D[size]) as perfect subtrees (leaf to root)."""
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of size {size}")
    out: Plan = []

    def path(start: int, end: int) -> None:
        n = end - start
        if n == 1:
            return
        k = _split(n)
        if index - start < k:
            path(start, start + k)
            out.append(perfect_subtrees(start + k, end))
        else:
            path(start + k, end)
            out.append(perfect_subtrees(start, start + k))

    path(0, size)
    return out


def consistency_plan(old_size: int, new_size: int) -> Plan:
    """RFC 9162 §2.1.4.1 PROOF(old_size, D[new_size]) as perfect subtrees."""
    if not 0 <= old_size <= new_size:
        raise ValueError(f"no consistency proof from size {old_size} to size {new_size}")
    out: Plan = []
    if old_size == 0 or old_size == new_size:
        return out

    def subproof(m: int, start: int, end: int, whole: bool) -> None:
        n = end - start
        if m == n:
            if not whole:
                out.append(perfect_subtrees(start, end))
            return
        k = _split(n)
        if m <= k:
            subproof(m, start, start + k, whole)
            out.append(perfect_subtrees(start + k, end))
        else:
            subproof(m - k, start + k, end, False)
            out.append(perfect_subtrees(start, start + k))

    subproof(old_size, 0, new_size, True)
    return out


def plan_nodes(plan: Plan) -> set[NodeId]:
    return {node for element in plan for node in element}


def build_proof(plan: Plan, hashes: Mapping[NodeId, bytes]) -> list[bytes]:
    """Fold each element of a plan from looked-up subtree hashes (KeyError if one is missing)."""
    return [fold([hashes[node] for node in element]) for element in plan]


def inclusion_proof(index: int, size: int, subtree: Subtree) -> list[bytes]:
    plan = inclusion_plan(index, size)
    return build_proof(plan, {node: subtree(*node) for node in plan_nodes(plan)})


def consistency_proof(old_size: int, new_size: int, subtree: Subtree) -> list[bytes]:
    plan = consistency_plan(old_size, new_size)
    return build_proof(plan, {node: subtree(*node) for node in plan_nodes(plan)})


def _hashes_ok(*values: bytes) -> bool:
    return all(isinstance(v, bytes) and len(v) == HASH_SIZE for v in values)


def verify_inclusion(leaf: bytes, index: int, size: int, path: Sequence[bytes], root_hash: bytes) -> bool:
    """RFC 9162 §2.1.3.2: does `path` prove leaf hash `leaf` at `index` in the tree of `size` with `root_hash`?"""
    if not _hashes_ok(leaf, root_hash, *path) or not 0 <= index < size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and r == root_hash


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]) -> bool:
    """RFC 9162 §2.1.4.2: is the tree of `new_size` with `new_root` an extension of the one of `old_size`?

    Outside the RFC's 0 < old < new: equal sizes need an empty proof and equal roots;
    every tree extends the empty one (empty proof, old root SHA-256("")).
    """
    if not _hashes_ok(old_root, new_root, *proof) or not 0 <= old_size <= new_size:
        return False
    if old_size == 0:
        return not proof and old_root == EMPTY_ROOT
    if old_size == new_size:
        return not proof and old_root == new_root
    if not proof:
        return False
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # an exact power of two: the old root is a node of the new tree
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and fr == old_root and sr == new_root


class CompactRange:
    """The perfect subtrees of the prefix [0, size) of a log: append leaves, get the root.

    Memory is O(log n) hashes; an append costs amortised one node hash and returns the
    nodes it completed, (level, index, hash), level >= 1 (what a service stores).
    """

    __slots__ = ("_hashes", "size")

    def __init__(self) -> None:
        self._hashes: list[bytes] = []
        self.size = 0

    @classmethod
    def from_prefix(cls, size: int, hashes: Iterable[bytes]) -> CompactRange:
        """Resume at `size` from its perfect subtrees (prefix_nodes(size) order); ValueError if they do not fit."""
        acc = cls()
        acc._hashes = list(hashes)
        if size < 0 or len(acc._hashes) != size.bit_count() or not _hashes_ok(*acc._hashes):
            raise ValueError(f"a log of {size} leaves has {max(size, 0).bit_count()} compact-range hashes")
        acc.size = size
        return acc

    @staticmethod
    def prefix_nodes(size: int) -> list[NodeId]:
        return perfect_subtrees(0, size)

    @property
    def hashes(self) -> list[bytes]:
        return list(self._hashes)

    def append(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        made: list[tuple[int, int, bytes]] = []
        h, i, level = leaf, self.size, 0
        while i & 1:
            h = node_hash(self._hashes.pop(), h)
            i >>= 1
            level += 1
            made.append((level, i, h))
        self._hashes.append(h)
        self.size += 1
        return made

    def root(self) -> bytes:
        return fold(self._hashes)
