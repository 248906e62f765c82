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

This module has no database or service dependency so auditors can verify an
export on their own machine with nothing but the service's public key.
"""

from __future__ import annotations

import binascii
import hashlib
import json
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

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
        for number, item in enumerate(lines, 1):
            line = item.encode() if isinstance(item, str) else item
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


def verify_file(path: str | Path, public_key: bytes | None = None) -> VerifyReport:
    """verify_export over a file, streamed: memory stays flat whatever its size.

    A v1 export lists its checkpoints at the end, so its file is read twice: first for
    the checkpoints' seqs, then to verify keeping only the chain hashes at those seqs.
    """
    with open(path, "rb", buffering=1 << 20) as f:
        first = f.readline()
        try:
            header = json.loads(first)
        except ValueError:
            header = None
        at_end = isinstance(header, dict) and not _inline(header)
        seqs = _checkpoints_in(path) if at_end else None
        f.seek(0)
        return verify_export(f, public_key, checkpoint_seqs=seqs)


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
