"""The audit log's hash chain, its signed checkpoints, and the offline verifier.

Hashing follows RFC 6962's domain separation (0x00 for leaves, 0x01 for
interior nodes), applied to a linear chain rather than a Merkle tree::

    entry_hash(e)  = SHA-256(0x00 || canonical_json(e's fields))
    chain_hash(0)  = 32 zero bytes
    chain_hash(n)  = SHA-256(0x01 || chain_hash(n-1) || entry_hash(entry n))

A checkpoint is the service's Ed25519 signature over
``"countersign/audit-checkpoint/v1\\n" || seq (u64) || chain_hash(seq) || time``.
Entries are protected from the moment a checkpoint covers them; an export
always ends with a fresh checkpoint, so anything after the last checkpoint in a
file was appended after the service signed it.

The entry hashes are also the leaves of an RFC 6962 Merkle tree (evidence.merkle;
leaf index = seq - 1). Checkpoints signed since then are *tree heads*: they carry
the tree's root at their size and are signed over
``"countersign/audit-tree-head/v1\n" || size (u64) || root || chain_hash(size) || time``
(older checkpoints, without a root, keep their v1 signature and still verify).
A v2 export puts each checkpoint right after the entry it covers, and a range
export's header carries the compact-range hashes of the entries before it, so
the verifier recomputes the root in one pass with flat memory.

A v3 export writes each entry as the very bytes its entry hash covers, so the
verifier hashes what it read instead of rebuilding them (export_entry_line)::

    {"type": "entry", "entry_hash": "<64 hex>", "chain_hash": "<64 hex>", "entry": <canonical JSON>}

byte for byte, at fixed offsets up to the payload. An entry whose canonical form
is not ASCII is written as ``"entry_escaped": <the same JSON, \\u-escaped>``
instead (the export stays ASCII, so no reader splits a line on U+2028 and
friends), and the verifier rebuilds its canonical form as it does for v1 and v2.

verify_file reads a v3 export in chunks of whole lines, scanned side by side in worker
processes if asked (the CLI: one per core): a scan checks each run of entry lines but
for the run's first seq and chain link, which the pass in file order checks with every
other line (checkpoints, escaped entries, anything unusual), so the report is the one
verify_export gives over the same lines.

This module has no database or service dependency so auditors can verify an
export on their own machine with nothing but the service's public key.
"""

from __future__ import annotations

import binascii
import contextlib
import hashlib
import json
import re
import struct
import sys
from collections import deque
from collections.abc import Generator, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import compress, islice
from pathlib import Path
from typing import Any, BinaryIO

import nacl.exceptions
import nacl.signing

from evidence.chain import canonical_json
from evidence.merkle import CompactRange, fold

EXPORT_FORMAT = "countersign-audit-export/v3"
# v1: checkpoints at the end, no tree roots; v2: entries as re-serialised fields; v3: their canonical bytes
EXPORT_FORMATS = ("countersign-audit-export/v1", "countersign-audit-export/v2", EXPORT_FORMAT)
GENESIS = bytes(32)
_CHECKPOINT_DOMAIN = b"countersign/audit-checkpoint/v1\n"
_TREE_HEAD_DOMAIN = b"countersign/audit-tree-head/v1\n"
ENTRY_FIELDS = ("seq", "at", "actor", "action", "target", "outcome", "purpose", "detail")


def timestamp(value: datetime) -> str:
    """The one textual form of a time that goes into a hash."""
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def entry_hash(fields: Mapping[str, Any]) -> bytes:
    return hashlib.sha256(b"\x00" + canonical_json({k: fields[k] for k in ENTRY_FIELDS})).digest()


def chain_hash(prev: bytes, entry: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + prev + entry).digest()


def checkpoint_message(seq: int, head: bytes, at: str) -> bytes:
    return _CHECKPOINT_DOMAIN + struct.pack(">Q", seq) + head + at.encode()


def sign_checkpoint(key: nacl.signing.SigningKey, seq: int, head: bytes, at: str) -> bytes:
    return bytes(key.sign(checkpoint_message(seq, head, at)).signature)


def tree_head_message(size: int, root: bytes, chain_hash: bytes, at: str) -> bytes:
    """What a tree head's signature covers: the Merkle root and the chain head at `size` entries."""
    if len(root) != 32 or len(chain_hash) != 32:
        raise ValueError("a tree head's root and chain hash are 32 bytes")
    return _TREE_HEAD_DOMAIN + struct.pack(">Q", size) + root + chain_hash + at.encode()


def sign_tree_head(key: nacl.signing.SigningKey, size: int, root: bytes, chain_hash: bytes, at: str) -> bytes:
    return bytes(key.sign(tree_head_message(size, root, chain_hash, at)).signature)


def verify_tree_head(public_key: bytes, size: int, root: bytes, chain_hash: bytes, at: str, signature: bytes) -> bool:
    """Is `signature` the service's (Ed25519 `public_key`) over this tree head?"""
    try:
        message = tree_head_message(size, root, chain_hash, at)
        nacl.signing.VerifyKey(public_key).verify(message, signature)
    except (ValueError, TypeError, nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError):
        return False
    return True


def export_header_line(
    service_key: bytes,
    first_seq: int,
    prev_chain_hash: bytes,
    *,
    complete: bool,
    tree_prefix: list[str] | None,
    fmt: str = EXPORT_FORMAT,
) -> str:
    """An export's first line (a v2 or v3 export: checkpoints inline)."""
    header = {
        "type": "header",
        "format": fmt,
        "service_public_key": service_key.hex(),
        "first_seq": first_seq,
        "prev_chain_hash": prev_chain_hash.hex(),
        "complete": complete,
        "checkpoints": "inline",
        "tree_prefix": tree_prefix,
    }
    return json.dumps(header) + "\n"


def export_checkpoint_line(seq: int, chain: bytes, at: str, signature: bytes, tree_root: bytes | None) -> str:
    record: dict[str, Any] = {"type": "checkpoint", "seq": seq, "chain_hash": chain.hex(), "at": at}
    record["signature"] = signature.hex()
    if tree_root is not None:  # a v1 checkpoint, signed before the tree, has none
        record["tree_root"] = tree_root.hex()
    return json.dumps(record) + "\n"


_V3_HEAD = b'{"type": "entry", "entry_hash": "'  # then 64 hex digits
_V3_MID = b'", "chain_hash": "'  # then 64 hex digits
_V3_RAW = b'", "entry": '  # then the canonical JSON verbatim, then "}"
_V3_ESCAPED = b'", "entry_escaped": '  # then the canonical JSON with \u escapes, then "}"


def export_entry_line(fields: Mapping[str, Any], entry_hash: bytes, chain_hash: bytes) -> str:
    """A v3 entry line: the canonical JSON the entry hash covers, verbatim (escaped only if not ASCII)."""
    entry = {k: fields[k] for k in ENTRY_FIELDS}
    canonical = canonical_json(entry)
    if canonical.isascii():
        key, payload = "entry", canonical.decode("ascii")
    else:  # U+2028, U+0085 and friends travel as \u escapes, so no reader splits a line on them
        key, payload = "entry_escaped", json.dumps(entry, sort_keys=True, separators=(",", ":"))
    return (
        f'{{"type": "entry", "entry_hash": "{entry_hash.hex()}", "chain_hash": "{chain_hash.hex()}", '
        f'"{key}": {payload}}}\n'
    )


@dataclass
class VerifyReport:
    entries: int = 0
    checkpoints: int = 0
    tree_heads: int = 0  # checkpoints whose Merkle root was recomputed and matched
    tree_root: bytes | None = None  # the root of the tree up to last_seq, when the export lets it be computed
    first_seq: int | None = None
    last_seq: int | None = None
    last_checkpoint: int | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def fail(self, message: str) -> VerifyReport:
        self.problems.append(message)
        return self


def _hex(value: Any, name: str) -> bytes:
    if not isinstance(value, str):
        raise ValueError(f"{name} is not hex")
    raw = bytes.fromhex(value)
    if len(raw) != 32 and name != "signature":
        raise ValueError(f"{name} is not 32 bytes")
    return raw


def _checkpoint_signed(cp: Mapping[str, Any], key: nacl.signing.VerifyKey) -> tuple[int, bytes, bytes | None]:
    """(seq, chain hash, tree root or None) of a checkpoint line whose signature holds; ValueError otherwise."""
    try:
        seq, head, at = int(cp["seq"]), _hex(cp["chain_hash"], "chain_hash"), str(cp["at"])
        raw_root = cp.get("tree_root")
        tree_root = None if raw_root is None else _hex(raw_root, "tree_root")
        message = (
            checkpoint_message(seq, head, at) if tree_root is None else tree_head_message(seq, tree_root, head, at)
        )
        key.verify(message, bytes.fromhex(cp["signature"]))
    except (KeyError, ValueError, TypeError, nacl.exceptions.BadSignatureError) as exc:
        raise ValueError(f"checkpoint seq {cp.get('seq')}: signature invalid or malformed") from exc
    if seq < 0:
        raise ValueError(f"checkpoint seq {seq}: signature invalid or malformed")
    return seq, head, tree_root


def _service_key(header: Mapping[str, Any], public_key: bytes | None) -> nacl.signing.VerifyKey | None:
    try:
        return nacl.signing.VerifyKey(public_key or bytes.fromhex(header["service_public_key"]))
    except (KeyError, ValueError, TypeError, nacl.exceptions.ValueError):
        return None


class _Failed(Exception):
    """The first problem, found mid-pass (its text is the report's problem)."""


_H0 = len(_V3_HEAD)
_H1 = _H0 + 64
_C0 = _H1 + len(_V3_MID)
_C1 = _C0 + 64
_PAY = _C1 + len(_V3_RAW)
_PAY_ESCAPED = _C1 + len(_V3_ESCAPED)
_FIELD_SET = frozenset(ENTRY_FIELDS)


def _inline(header: Mapping[str, Any]) -> bool:
    """Does each checkpoint follow the entry it covers (v2, v3), or are they all at the end (v1)?"""
    return header.get("format") != EXPORT_FORMATS[0] and header.get("checkpoints") == "inline"


def _seq_problem(seq: Any, number: int, expected: int) -> _Failed:
    what = "removed or reordered" if isinstance(seq, int) and seq > expected else "reordered or duplicated"
    return _Failed(f"entry seq {seq} (line {number}): expected seq {expected}; entries {what}")


def _v3_entry(line: bytes, number: int, expected: int, prev: bytes) -> tuple[int, bytes, bytes]:
    """(seq, entry hash, chain hash) of a v3 entry line, checked the long way; _Failed names what is wrong.

    The fast path in verify_export comes here for an escaped entry and for any line it
    does not accept outright, so every problem is reported the same way.
    """
    line = line.rstrip(b"\r\n")
    try:
        record = json.loads(line)
    except ValueError:
        raise _Failed(f"line {number}: not JSON") from None
    raw = line[_C1:_PAY] == _V3_RAW
    layout = line.startswith(_V3_HEAD) and line[_H1:_C0] == _V3_MID and line.endswith(b"}")
    if not (isinstance(record, dict) and layout and (raw or line[_C1:_PAY_ESCAPED] == _V3_ESCAPED)):
        raise _Failed(f"line {number}: malformed entry (not the v3 layout, byte for byte)")
    try:
        fields = json.loads(line[_PAY if raw else _PAY_ESCAPED : -1])
    except ValueError:
        fields = None
    if not isinstance(fields, dict) or len(record) != 4:
        raise _Failed(f"line {number}: malformed entry (the payload is not exactly one JSON object)")
    seq = fields.get("seq")
    if seq != expected or seq.__class__ is not int:
        raise _seq_problem(seq, number, expected)
    if fields.keys() != _FIELD_SET:
        raise _Failed(f"entry seq {seq} (line {number}): malformed (fields {sorted(fields)})")
    try:
        stored_entry = _hex(record.get("entry_hash"), "entry_hash")
        stored_chain = _hex(record.get("chain_hash"), "chain_hash")
    except ValueError as exc:
        raise _Failed(f"entry seq {seq} (line {number}): malformed ({exc})") from None
    canonical = canonical_json(fields)
    # A verbatim entry is hashed as read: the bytes parsed are the bytes hashed, so what was checked is what shows.
    leaf = hashlib.sha256(b"\x00" + (line[_PAY:-1] if raw else canonical)).digest()
    if leaf != stored_entry:
        raise _Failed(f"entry seq {seq} (line {number}): content altered (entry hash does not match)")
    if raw and line[_PAY:-1] != canonical:
        raise _Failed(f"entry seq {seq} (line {number}): not in canonical form (the service hashes only that)")
    head = chain_hash(prev, leaf)
    if head != stored_chain:
        raise _Failed(f"entry seq {seq} (line {number}): chain broken (does not follow seq {seq - 1})")
    return seq, leaf, head


def verify_export(
    lines: Iterable[str | bytes],
    public_key: bytes | None = None,
    *,
    checkpoint_seqs: set[int] | None = None,
) -> VerifyReport:
    """Verify an exported log; stop at (and name) the first entry where the chain breaks.

    `public_key` overrides the key named in the file (auditors should pass the
    key they obtained independently; the file's own claim proves nothing).
    One pass: the chain and the Merkle tree (a compact range, O(log n) memory) are
    recomputed entry by entry, and each checkpoint of a v2 or v3 export is checked where
    it stands, right after the entry it covers. A v1 export (checkpoints at the end) keeps
    the chain hash of every entry until the end instead, or only those at
    `checkpoint_seqs` (verify_file finds them first).

    A v3 entry line is taken apart at fixed offsets: its payload is hashed as read, its
    seq read from the payload's canonical `,"seq":N,"target":` (the last top-level key
    before `target`). Parsing it as JSON would prove nothing more: an entry counts only
    once the chain through it reaches a chain hash (and the tree a root) the service
    signed, which bytes other than the canonical ones the service hashed cannot do. Any
    line the fast path does not accept is parsed in full (_v3_entry) to say what is wrong.
    """
    return _verify(lines, public_key, checkpoint_seqs)


def _verify(
    lines: Iterable[str | bytes | _Run], public_key: bytes | None, checkpoint_seqs: set[int] | None
) -> VerifyReport:
    """verify_export's pass; verify_file's chunked pass also hands it runs of entries checked elsewhere (_Run)."""
    report = VerifyReport()
    header: dict[str, Any] | None = None
    key: nacl.signing.VerifyKey | None = None
    inline = v3 = False
    computed: dict[int, bytes] = {}  # v1 only: chain hashes, for checkpoints listed at the end
    pending: list[dict[str, Any]] = []  # checkpoints checked at the end
    stack: list[bytes] | None = None  # the compact range: perfect subtrees of the tree so far
    prev = GENESIS
    first_seq = expected = 0  # the header's first seq; the seq the next entry must have
    sha256, hexlify, failed = hashlib.sha256, binascii.hexlify, False
    number = 0
    try:
        for item in lines:
            number += 1
            if item.__class__ is _Run:  # verify_file's chunked pass: entries the worker checked all but the ends of
                run = item
                if not (v3 and inline and run.fits(expected, prev)):
                    number -= 1
                    run.replay()  # its lines come next, one by one, checked as any other line is
                    continue
                if stack is not None:
                    size = expected - 1  # the tree's size before the run's first leaf
                    for level, node in run.subtrees:
                        n = size >> level
                        while n & 1:
                            node = sha256(b"\x01" + stack.pop() + node).digest()
                            n >>= 1
                        stack.append(node)
                        size += 1 << level
                prev, expected = run.last_chain, expected + run.count
                number += run.count - 1
                continue
            line: bytes = item.encode() if isinstance(item, str) else item  # type: ignore[assignment]
            if v3 and line.startswith(_V3_HEAD):  # the fast path: the bytes are checked where they lie
                line = line.rstrip(b"\r\n")
                payload = line[_PAY:-1]
                i = payload.rfind(b',"seq":') + 7
                j = payload.find(b',"target":', i)
                leaf = sha256(b"\x00" + payload).digest()
                if (
                    i > 6
                    and j > 0
                    and payload[i:j] == b"%d" % expected
                    and line[_C1:_PAY] == _V3_RAW
                    and line[_H1:_C0] == _V3_MID
                    and line[-1] == 125  # "}"
                    and hexlify(leaf) == line[_H0:_H1]
                ):
                    seq = expected
                    head = sha256(b"\x01" + prev + leaf).digest()
                    if hexlify(head) != line[_C0:_C1]:
                        seq, leaf, head = _v3_entry(line, number, expected, prev)
                else:
                    seq, leaf, head = _v3_entry(line, number, expected, prev)
            else:
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except ValueError:
                    raise _Failed(f"line {number}: not JSON") from None
                kind = record.get("type") if isinstance(record, dict) else None
                if kind == "header":
                    if record.get("format") not in EXPORT_FORMATS:
                        raise _Failed(f"line {number}: unknown export format {record.get('format')!r}")
                    if header is not None:
                        raise _Failed(f"line {number}: a second header")
                    header = record
                    try:
                        prev = _hex(record["prev_chain_hash"], "prev_chain_hash")
                        first_seq = expected = int(record["first_seq"])
                        if expected < 1:
                            raise ValueError("first_seq")
                        prefix = record.get("tree_prefix")
                        if prefix is not None:
                            stack = CompactRange.from_prefix(
                                expected - 1, [_hex(h, "tree_prefix") for h in prefix]
                            ).hashes
                    except (KeyError, ValueError, TypeError):
                        raise _Failed(f"line {number}: malformed header") from None
                    v3 = record.get("format") == EXPORT_FORMAT
                    inline = _inline(record)
                    key = _service_key(record, public_key)
                    continue
                if header is None:
                    raise _Failed(f"line {number}: export has no header")
                if kind == "checkpoint":
                    if not inline:
                        pending.append(record)
                        continue
                    if key is None:
                        raise _Failed("no usable service public key")
                    try:
                        cp_seq, cp_head, tree_root = _checkpoint_signed(record, key)
                    except ValueError as exc:
                        raise _Failed(str(exc)) from None
                    last = expected - 1
                    if expected > first_seq and cp_seq == last:
                        problem = _compare(cp_seq, cp_head, prev, tree_root, stack)
                        if problem:
                            raise _Failed(problem)
                        report.checkpoints += 1
                        report.tree_heads += tree_root is not None
                        report.last_checkpoint = cp_seq
                    elif expected > first_seq and first_seq <= cp_seq:
                        raise _Failed(
                            f"checkpoint seq {cp_seq} (line {number}): out of place (it must follow entry {cp_seq})"
                        )
                    else:
                        pending.append(record)  # beyond the last entry so far, or before this export's range
                    continue
                if kind != "entry":
                    raise _Failed(f"line {number}: unknown record type {kind!r}")
                if v3:
                    seq, leaf, head = _v3_entry(line, number, expected, prev)
                else:
                    seq, leaf, head = _v2_entry(record, number, expected, prev)
            # Every entry, whichever path checked it: link it, grow the tree.
            if not inline and (checkpoint_seqs is None or seq in checkpoint_seqs):
                computed[seq] = head
            if stack is not None:
                node, n = leaf, seq - 1  # leaf index = seq - 1: the tree's size before it
                while n & 1:
                    node = sha256(b"\x01" + stack.pop() + node).digest()
                    n >>= 1
                stack.append(node)
            prev = head
            expected = seq + 1
    except _Failed as exc:
        report.fail(str(exc))
        failed = True
    if expected > first_seq:
        report.entries, report.first_seq, report.last_seq = expected - first_seq, first_seq, expected - 1
    if failed:
        return report
    if header is None:
        return report.fail("empty export")
    if key is None:
        return report.fail("no usable service public key")
    if stack is not None:
        report.tree_root = fold(stack)
    return _check_pending(report, header, key, pending, computed, prev, stack)


def _v2_entry(record: dict[str, Any], number: int, expected: int, prev: bytes) -> tuple[int, bytes, bytes]:
    """(seq, entry hash, chain hash) of a v1 or v2 entry: its fields re-serialised canonically, then hashed."""
    seq = record.get("seq")
    if seq != expected or seq.__class__ is not int:
        raise _seq_problem(seq, number, expected)
    try:
        computed_entry = entry_hash(record)
        stored_entry = _hex(record.get("entry_hash"), "entry_hash")
        stored_chain = _hex(record.get("chain_hash"), "chain_hash")
    except (KeyError, ValueError) as exc:
        raise _Failed(f"entry seq {seq} (line {number}): malformed ({exc})") from None
    if computed_entry != stored_entry:
        raise _Failed(f"entry seq {seq} (line {number}): content altered (entry hash does not match)")
    head = chain_hash(prev, computed_entry)
    if head != stored_chain:
        raise _Failed(f"entry seq {seq} (line {number}): chain broken (does not follow seq {seq - 1})")
    return seq, computed_entry, head


def _checkpoints_in(path: str | Path) -> set[int]:
    """The seq of every checkpoint line in a file (one pass, each line parsed: no shortcut to fool)."""
    seqs: set[int] = set()
    with open(path, "rb") as f:
        for line in f:
            try:
                record = json.loads(line)
            except ValueError:
                continue  # the verifying pass reports it
            if isinstance(record, dict) and record.get("type") == "checkpoint" and isinstance(record.get("seq"), int):
                seqs.add(record["seq"])
    return seqs


def verify_file(
    path: str | Path, public_key: bytes | None = None, *, jobs: int = 1, chunk_bytes: int = 1 << 20
) -> VerifyReport:
    """verify_export over a file, streamed: memory stays flat whatever its size.

    A v1 export lists its checkpoints at the end, so its file is read twice: first for
    the checkpoints' seqs, then to verify keeping only the chain hashes at those seqs.

    A v3 export is read in chunks of about `chunk_bytes` (whole lines), each scanned by
    _scan_chunk, in `jobs` worker processes when jobs > 1 (forked: POSIX only; the CLI
    asks for one per core). The scan checks, for each run of plain entry lines between
    other lines, everything the one-pass verifier's fast path checks except the run's
    two ends, which depend on the lines before it; verify_export's pass checks those
    (_Run.fits) and every other line, in file order, and takes any run that does not
    fit line by line, so the report is the one verify_export gives over the same lines.
    """
    with open(path, "rb", buffering=1 << 20) as f:
        first = f.readline()
        try:
            header = json.loads(first)
        except ValueError:
            header = None
        if isinstance(header, dict) and header.get("format") == EXPORT_FORMAT and _inline(header):
            with contextlib.closing(_chunked(path, max(1, jobs), max(1, chunk_bytes))) as items:
                return _verify(items, public_key, None)
        at_end = isinstance(header, dict) and not _inline(header)
        seqs = _checkpoints_in(path) if at_end else None
        f.seek(0)
        return verify_export(f, public_key, checkpoint_seqs=seqs)


# A run as _scan_chunk reports it: (index of its first line in the chunk, its first seq, entries, first entry
# hash, first chain hash as written, last chain hash, the perfect subtrees tiling its leaves, left to right).
_RunTuple = tuple[int, int, int, bytes, bytes, bytes, list[tuple[int, bytes]]]


class _Run:
    """Consecutive v3 entry lines of one chunk, checked by _scan_chunk except where they join the lines before.

    Within the run, each line has the v3 layout byte for byte, its seq is the one before
    plus one (as the fast path reads it: the canonical `,"seq":N,"target":`), its entry hash
    is the SHA-256 of its payload as read, and its chain hash follows from the line before's
    and its own entry hash. What the scan cannot know is the seq and chain hash the run must
    follow: `fits` checks the first line's seq and chain link against them. Then every line
    passes the fast path exactly as it would have one by one.
    """

    __slots__ = ("_chunk", "_replay", "chain0", "count", "first", "last_chain", "leaf0", "seq0", "subtrees")

    def __init__(self, run: _RunTuple, chunk: tuple[BinaryIO, int, int], replay: deque[bytes]) -> None:
        self.first, self.seq0, self.count, self.leaf0, self.chain0, self.last_chain, self.subtrees = run
        self._chunk, self._replay = chunk, replay

    def fits(self, expected: int, prev: bytes) -> bool:
        return self.seq0 == expected and hashlib.sha256(b"\x01" + prev + self.leaf0).digest() == self.chain0

    def replay(self) -> None:
        """Its lines are the next ones the pass reads (re-read from the file), to be checked one by one."""
        f, start, end = self._chunk
        lines = _chunk_lines(f, start, end)
        self._replay.extend(lines[self.first : self.first + self.count])


def _line_start(f: BinaryIO, offset: int) -> int:
    """The offset of the first line that starts at or after `offset` (the file's size if none does)."""
    if offset <= 0:
        return 0
    f.seek(offset - 1)
    at = offset - 1
    while block := f.read(1 << 16):
        newline = block.find(b"\n")
        if newline >= 0:
            return at + newline + 1
        at += len(block)
    return at


def _tiling(start: int, nodes: list[bytes]) -> list[tuple[int, bytes]]:
    """(level, hash) of the perfect subtrees that tile leaves [start, start + len(nodes)), left to right."""
    sha256 = hashlib.sha256
    left: list[tuple[int, bytes]] = []
    right: list[tuple[int, bytes]] = []
    level, lo, hi = 0, start, start + len(nodes)
    while nodes:
        if lo & 1:  # a right child whose sibling is outside the range: a whole subtree of the tiling
            left.append((level, nodes[0]))
            nodes, lo = nodes[1:], lo + 1
        if hi & 1 and nodes:  # a left child whose sibling is outside the range
            right.append((level, nodes[-1]))
            nodes, hi = nodes[:-1], hi - 1
        pairs = iter(nodes)
        nodes = [sha256(b"\x01" + a + b).digest() for a, b in zip(pairs, pairs, strict=False)]
        level, lo, hi = level + 1, lo >> 1, hi >> 1
    return left + right[::-1]


_SEQ, _TARGET = b',"seq":', b',"target":'
_SEQ_TARGET = b',"seq":%d,"target":'
# A whole plain v3 entry line (not escaped), newline included: its two hashes as written (64 bytes, hex or not)
# and its payload, up to the "}" that ends the line. The fast path's layout, byte for byte.
_V3_LINE = re.compile(
    re.escape(_V3_HEAD) + b"(.{64})" + re.escape(_V3_MID) + b"(.{64})" + re.escape(_V3_RAW) + rb"([^\n]*)\}\n"
)


def _scan_run(entry_hashes: list[bytes], chain_hashes: list[bytes], payloads: list[bytes]) -> _RunTuple | None:
    """Consecutive plain v3 entry lines, cut apart by _V3_LINE, checked as one; None if any fails the fast path.

    The checks are the fast path's in verify_export, each over the whole run in turn
    instead of line by line (the first line's chain link and seq are left to _Run.fits).
    """
    n = len(payloads)
    first = payloads[0]
    i = first.rfind(_SEQ) + 7
    j = first.find(_TARGET, i)
    try:
        seq0 = int(first[i:j]) if i > 6 and j > 0 else -1
    except ValueError:
        return None
    # The fast path's seq: the digits between the last ',"seq":' and the ',"target":' after it, which must be
    # b"%d" % expected, that is, ',"seq":<expected>,"target":' stands where the last ',"seq":' is (digits hold no
    # comma: no ',"target":' can start earlier). Not found (-1), the test looks at the payload's last byte: False.
    wanted = map(_SEQ_TARGET.__mod__, range(seq0, seq0 + n))
    if seq0 < 0 or not all(map(bytes.startswith, payloads, wanted, [p.rfind(_SEQ) for p in payloads])):
        return None
    sha256, hexlify = hashlib.sha256, binascii.hexlify
    leaves = [sha256(b"\x00" + p).digest() for p in payloads]
    if hexlify(b"".join(leaves)) != b"".join(entry_hashes):
        return None
    try:
        head = chain0 = binascii.unhexlify(chain_hashes[0])
    except ValueError:
        return None
    heads = [chain0]
    append = heads.append
    for leaf in leaves[1:]:
        head = sha256(b"\x01" + head + leaf).digest()
        append(head)
    if hexlify(b"".join(heads)) != b"".join(chain_hashes):  # the first as written (lower-case hex), then computed
        return None
    return 0, seq0, n, leaves[0], chain0, head, _tiling(seq0 - 1, leaves)


def _lines(data: bytes) -> list[bytes]:
    """The lines of `data` as iterating over a file yields them (each with its newline, the file's last maybe not)."""
    lines = data.split(b"\n")
    last = lines.pop()  # b"" after a newline, else the file's last line, which has none
    return [line + b"\n" for line in lines] + ([last] if last else [])


def _chunk_lines(f: BinaryIO, start: int, end: int) -> list[bytes]:
    """The lines in [start, end) of the file."""
    f.seek(start)
    return _lines(f.read(max(0, end - start)))


def _scan_chunk(path: str | Path, start: int, end: int, size: int) -> tuple[int, int, list[bytes | _RunTuple]]:
    """The lines that start in [start, end) of a v3 export: runs of entries checked (_Run), other lines as read.

    Returns the chunk's bounds (the first line start at or after `start`, and after `end`)
    and its items in file order: a run (its first line's index in the chunk first), or a
    line (with its newline) for every line that is not a plain v3 entry or is in a run
    that does not check out, for the one-pass verifier to check as it would any line.
    """
    with open(path, "rb") as f:
        lo = _line_start(f, start)
        hi = _line_start(f, end) if end < size else size
        f.seek(lo)
        data = f.read(max(0, hi - lo))
    # [text before the 1st entry line, its entry hash, chain hash, payload, text before the 2nd, ...]: each text
    # between is whole lines (or nothing) unless a match began mid-line (then every line goes to the one-pass check).
    parts = _V3_LINE.split(data)
    between = parts[0::4]
    matches = len(between) - 1
    others = list(compress(range(len(between)), between))  # where there are lines between (or after) entry lines
    if any(not between[m].endswith(b"\n") for m in others if m < matches):
        return lo, hi, list[bytes | _RunTuple](_lines(data))
    entry_hashes, chain_hashes, payloads = parts[1::4], parts[2::4], parts[3::4]
    items: list[bytes | _RunTuple] = []
    line = run_start = 0  # the chunk's line the next item starts at; the entry line (match) a run starts at
    stops = others if others and others[-1] == matches else [*others, matches]
    for m in stops:  # entry lines [run_start, m) are a run; the lines between entry lines m - 1 and m follow
        if m > run_start:
            run = _scan_run(entry_hashes[run_start:m], chain_hashes[run_start:m], payloads[run_start:m])
            if run is None:  # each line as it was read, for the one-pass check to say what is wrong
                pieces = zip(entry_hashes[run_start:m], chain_hashes[run_start:m], payloads[run_start:m], strict=True)
                items.extend(b"".join((_V3_HEAD, e, _V3_MID, c, _V3_RAW, p, b"}\n")) for e, c, p in pieces)
            else:
                items.append((line, *run[1:]))
            line += m - run_start
        if between[m]:
            lines = _lines(between[m])
            items.extend(lines)
            line += len(lines)
        run_start = m
    return lo, hi, items


def _scans(
    path: str | Path, jobs: int, chunk_bytes: int, size: int
) -> Generator[tuple[int, int, list[bytes | _RunTuple]], None, None]:
    """_scan_chunk of each chunk in file order, `jobs` worker processes at a time, a few results ahead at most."""
    bounds = ((start, start + chunk_bytes, size) for start in range(0, size, chunk_bytes))
    if jobs > 1:
        import multiprocessing  # only here: the CLI's start-up does not pay for it

        # Forked workers (they need nothing but this module); not on macOS, where forking is unsafe.
        if "fork" not in multiprocessing.get_all_start_methods() or sys.platform == "darwin":
            jobs = 1
    if jobs < 2:
        for bound in bounds:
            yield _scan_chunk(path, *bound)
        return
    with multiprocessing.get_context("fork").Pool(jobs) as pool:  # leaving (also early: a problem found) ends them
        waiting = deque(pool.apply_async(_scan_chunk, (path, *b)) for b in islice(bounds, 2 * jobs))
        while waiting:
            done = waiting.popleft()
            waiting.extend(pool.apply_async(_scan_chunk, (path, *b)) for b in islice(bounds, 1))
            yield done.get()


def _chunked(path: str | Path, jobs: int, chunk_bytes: int) -> Generator[bytes | _Run, None, None]:
    """A v3 export as lines and runs (_Run), in file order; a run that does not fit is followed by its lines."""
    replay: deque[bytes] = deque()
    with open(path, "rb") as f:
        scans = _scans(path, jobs, chunk_bytes, f.seek(0, 2))
        with contextlib.closing(scans):
            for lo, hi, items in scans:
                for item in items:
                    if isinstance(item, bytes):
                        yield item
                        continue
                    yield _Run(item, (f, lo, hi), replay)
                    while replay:
                        yield replay.popleft()


def _compare(seq: int, head: bytes, chain: bytes, tree_root: bytes | None, stack: list[bytes] | None) -> str | None:
    """Why a signed checkpoint at the current entry does not match the log recomputed so far (None: it does)."""
    if chain != head:
        return f"checkpoint seq {seq}: the log up to seq {seq} differs from what the service signed"
    if tree_root is None:
        return None
    if stack is None:
        return f"checkpoint seq {seq}: carries a tree root but the export gives no tree prefix to check it"
    if fold(stack) != tree_root:
        return (
            f"checkpoint seq {seq}: the Merkle tree up to seq {seq} differs from what the service signed "
            "(tree root; in a range export: the header's tree prefix)"
        )
    return None


def _check_pending(
    report: VerifyReport,
    header: dict[str, Any],
    key: nacl.signing.VerifyKey,
    checkpoints: list[dict[str, Any]],
    computed: dict[int, bytes],
    last_chain: bytes,
    stack: list[bytes] | None,
) -> VerifyReport:
    for cp in sorted(checkpoints, key=lambda c: c.get("seq", 0) if isinstance(c.get("seq"), int) else 0):
        try:
            seq, head, tree_root = _checkpoint_signed(cp, key)
        except ValueError as exc:
            return report.fail(str(exc))
        if seq not in computed and seq != report.last_seq:
            if header.get("complete") and report.last_seq is not None and seq > report.last_seq:
                return report.fail(f"checkpoint seq {seq} signs entries the export does not contain: entries removed")
            if header.get("complete") and report.last_seq is None and seq >= int(header.get("first_seq", 1)):
                return report.fail(f"checkpoint seq {seq} signs entries the export does not contain: entries removed")
            continue  # outside this export's range
        if tree_root is not None and seq != report.last_seq:
            return report.fail(f"checkpoint seq {seq}: a tree head must follow the entry it covers")
        problem = _compare(seq, head, computed.get(seq, last_chain), tree_root, stack)
        if problem:
            return report.fail(problem)
        report.checkpoints += 1
        report.tree_heads += tree_root is not None
        report.last_checkpoint = seq
    if report.last_seq is not None and report.last_checkpoint != report.last_seq:
        first_uncovered = (report.last_checkpoint or (report.first_seq or 1) - 1) + 1
        return report.fail(
            f"entries from seq {first_uncovered} to {report.last_seq} are not covered by a signed checkpoint: "
            "appended after the service last signed the log"
        )
    return report
