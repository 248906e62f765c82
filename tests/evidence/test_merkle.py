"""evidence.merkle against the RFC 6962 test vectors, a naive recursive reference, and tampering.

The vectors are the 8-leaf tree of certificate-transparency / transparency-dev/merkle
(testonly/constants.go, proof/verify_test.go): leaf inputs, every root, and the
known inclusion and consistency proofs.
"""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evidence.merkle import (
    EMPTY_ROOT,
    CompactRange,
    consistency_plan,
    consistency_proof,
    inclusion_plan,
    inclusion_proof,
    leaf_hash,
    node_hash,
    perfect_subtrees,
    root,
    verify_consistency,
    verify_inclusion,
)

LEAVES = [bytes.fromhex(x) for x in ("", "00", "10", "2021", "3031", "40414243", "5051525354555657",
                                     "606162636465666768696a6b6c6d6e6f")]  # fmt: skip
HASHES = [leaf_hash(x) for x in LEAVES]
ROOTS = [bytes.fromhex(x) for x in (
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
)]  # fmt: skip


def hx(*values: str) -> list[bytes]:
    return [bytes.fromhex(v) for v in values]


# (leaf index, tree size, path): leaf numbers in the Go vectors are 1-based.
INCLUSION = [
    (0, 1, []),
    (0, 8, hx("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
              "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
              "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4")),
    (5, 8, hx("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
              "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
              "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7")),
    (2, 3, hx("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125")),
    (1, 5, hx("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
              "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
              "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b")),
]  # fmt: skip
CONSISTENCY = [
    (1, 1, []),
    (1, 8, hx("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
              "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
              "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4")),
    (6, 8, hx("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
              "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
              "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7")),
    (2, 5, hx("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
              "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b")),
    (6, 7, hx("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
              "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
              "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7")),
]  # fmt: skip


# A naive reference, straight from RFC 9162 §2.1.1, 2.1.3.1 and 2.1.4.1 (lists, recursion).
def mth(d: list[bytes]) -> bytes:
    if not d:
        return hashlib.sha256(b"").digest()
    if len(d) == 1:
        return d[0]
    k = 1
    while k * 2 < len(d):
        k *= 2
    return node_hash(mth(d[:k]), mth(d[k:]))


def naive_path(m: int, d: list[bytes]) -> list[bytes]:
    if len(d) == 1:
        return []
    k = 1
    while k * 2 < len(d):
        k *= 2
    if m < k:
        return [*naive_path(m, d[:k]), mth(d[k:])]
    return [*naive_path(m - k, d[k:]), mth(d[:k])]


def naive_subproof(m: int, d: list[bytes], whole: bool) -> list[bytes]:
    if m == len(d):
        return [] if whole else [mth(d)]
    k = 1
    while k * 2 < len(d):
        k *= 2
    if m <= k:
        return [*naive_subproof(m, d[:k], whole), mth(d[k:])]
    return [*naive_subproof(m - k, d[k:], False), mth(d[:k])]


def leaves(n: int) -> list[bytes]:
    return [leaf_hash(i.to_bytes(4, "big")) for i in range(n)]


def subtree_of(d: list[bytes]):  # type: ignore[no-untyped-def]
    def subtree(level: int, index: int) -> bytes:
        start, end = index << level, (index + 1) << level
        assert end <= len(d), "asked for a subtree outside the tree"
        return mth(d[start:end])

    return subtree


def test_roots_match_the_vectors() -> None:
    assert EMPTY_ROOT == ROOTS[0] == root([])
    for size in range(9):
        assert root(HASHES[:size]) == ROOTS[size] == mth(HASHES[:size])


def test_compact_range_matches_the_vectors() -> None:
    acc = CompactRange()
    assert acc.root() == ROOTS[0]
    for size in range(1, 9):
        acc.append(HASHES[size - 1])
        assert acc.size == size and acc.root() == ROOTS[size]
        resumed = CompactRange.from_prefix(size, acc.hashes)
        assert resumed.root() == ROOTS[size]


@pytest.mark.parametrize(("index", "size", "path"), INCLUSION)
def test_inclusion_vectors(index: int, size: int, path: list[bytes]) -> None:
    assert inclusion_proof(index, size, subtree_of(HASHES[:size])) == path
    assert verify_inclusion(HASHES[index], index, size, path, ROOTS[size])


@pytest.mark.parametrize(("old", "new", "proof"), CONSISTENCY)
def test_consistency_vectors(old: int, new: int, proof: list[bytes]) -> None:
    assert consistency_proof(old, new, subtree_of(HASHES[:new])) == proof
    assert verify_consistency(old, new, ROOTS[old], ROOTS[new], proof)


def test_every_proof_matches_the_naive_reference_up_to_70() -> None:
    for size in range(1, 71):
        d = leaves(size)
        top = mth(d)
        subtree = subtree_of(d)
        acc = CompactRange()
        for leaf in d:
            acc.append(leaf)
        assert acc.root() == top
        for index in range(size):
            path = inclusion_proof(index, size, subtree)
            assert path == naive_path(index, d)
            assert verify_inclusion(d[index], index, size, path, top)
        for old in range(1, size + 1):
            proof = consistency_proof(old, size, subtree)
            assert proof == naive_subproof(old, d, True)
            assert verify_consistency(old, size, mth(d[:old]), top, proof)


def test_compact_range_emits_every_perfect_node_once() -> None:
    d = leaves(70)
    acc = CompactRange()
    made: dict[tuple[int, int], bytes] = {}
    for leaf in d:
        for level, index, h in acc.append(leaf):
            assert (level, index) not in made
            made[(level, index)] = h
    expected = {(lv, i) for lv in range(1, 7) for i in range(70 >> lv)}
    assert set(made) == expected
    assert all(h == mth(d[i << lv : (i + 1) << lv]) for (lv, i), h in made.items())
    for size in range(71):
        assert [mth(d[i << lv : (i + 1) << lv]) for lv, i in perfect_subtrees(0, size)] == CompactRange.from_prefix(
            size, [mth(d[i << lv : (i + 1) << lv]) for lv, i in perfect_subtrees(0, size)]
        ).hashes


def test_proofs_need_only_log_many_subtrees() -> None:
    size = 1_000_003
    assert len({n for e in inclusion_plan(123_456, size) for n in e}) <= 2 * size.bit_length()
    assert len({n for e in consistency_plan(654_321, size) for n in e}) <= 3 * size.bit_length()


def flip(value: bytes) -> bytes:
    return bytes([value[0] ^ 1]) + value[1:]


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 70).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n - 1))), st.data())
def test_tampered_inclusion_is_rejected(case: tuple[int, int], data: st.DataObject) -> None:
    size, index = case
    d = leaves(size)
    top = mth(d)
    path = naive_path(index, d)
    assert verify_inclusion(d[index], index, size, path, top)
    assert not verify_inclusion(flip(d[index]), index, size, path, top)  # another entry
    assert not verify_inclusion(d[index], index, size, path, flip(top))
    if path:
        i = data.draw(st.integers(0, len(path) - 1))
        wrong = list(path)
        wrong[i] = flip(wrong[i])
        assert not verify_inclusion(d[index], index, size, wrong, top)  # a wrong sibling
        assert not verify_inclusion(d[index], index, size, path[:-1], top)
    assert not verify_inclusion(d[index], index, size, [*path, top], top)
    other = data.draw(st.integers(0, size))
    if other != index and d[other % size] != d[index]:
        assert not verify_inclusion(d[index], other, size, path, top)  # a wrong index
    for bad_size in {size * 2, size // 2} - {size}:  # sizes of the same shape verify: the signature binds the size
        if bad_size > index:
            assert not verify_inclusion(d[index], index, bad_size, path, top)  # a wrong size
    assert not verify_inclusion(d[index], index, size, path, top[:31])


@settings(max_examples=300, deadline=None)
@given(st.integers(2, 70).flatmap(lambda n: st.tuples(st.integers(1, n - 1), st.just(n))), st.data())
def test_tampered_consistency_is_rejected(case: tuple[int, int], data: st.DataObject) -> None:
    old, new = case
    d = leaves(new)
    r1, r2 = mth(d[:old]), mth(d)
    proof = naive_subproof(old, d, True)
    assert verify_consistency(old, new, r1, r2, proof)
    i = data.draw(st.integers(0, len(proof) - 1))
    wrong = list(proof)
    wrong[i] = flip(wrong[i])
    assert not verify_consistency(old, new, r1, r2, wrong)  # a wrong hash
    assert not verify_consistency(old, new, flip(r1), r2, proof)  # a rewritten old tree
    assert not verify_consistency(old, new, r1, flip(r2), proof)
    assert not verify_consistency(old, new, r2, r1, proof)
    assert not verify_consistency(old, new, r1, r2, proof[:-1])
    assert not verify_consistency(old, new, r1, r2, [*proof, r1])
    assert not verify_consistency(old, new, r1, r2, [])
    for bad_old in {old - 1, old + 1, old ^ 2} - {old}:
        if 0 < bad_old < new:
            assert not verify_consistency(bad_old, new, r1, r2, proof)
    for bad_new in {new * 2}:
        if bad_new > old:
            assert not verify_consistency(old, bad_new, r1, r2, proof)
    # A rewritten history: change one leaf before `old`; the new tree no longer extends the old one.
    victim = data.draw(st.integers(0, old - 1))
    rewritten = list(d)
    rewritten[victim] = flip(rewritten[victim])
    forged = naive_subproof(old, rewritten, True)
    assert not verify_consistency(old, new, r1, mth(rewritten), forged)


def test_edge_cases() -> None:
    h = leaf_hash(b"data")
    assert verify_inclusion(h, 0, 1, [], h)
    assert not verify_inclusion(h, 0, 0, [], h)
    assert not verify_inclusion(h, 1, 1, [], h)
    assert not verify_inclusion(b"", 0, 1, [], b"")
    assert verify_consistency(0, 5, EMPTY_ROOT, ROOTS[5], [])
    assert not verify_consistency(0, 5, EMPTY_ROOT, ROOTS[5], [ROOTS[5]])
    assert verify_consistency(3, 3, ROOTS[3], ROOTS[3], [])
    assert not verify_consistency(3, 3, ROOTS[3], ROOTS[4], [])
    assert not verify_consistency(4, 3, ROOTS[4], ROOTS[3], [])
    with pytest.raises(ValueError):
        inclusion_plan(3, 3)
    with pytest.raises(ValueError):
        consistency_plan(4, 3)
    with pytest.raises(ValueError):
        CompactRange.from_prefix(3, [ROOTS[1]])
