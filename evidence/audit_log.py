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

This module has no database or service dependency so auditors can verify an
export on their own machine with nothing but the service's public key.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import nacl.exceptions
import nacl.signing

from evidence.chain import canonical_json

EXPORT_FORMAT = "countersign-audit-export/v1"
GENESIS = bytes(32)
_CHECKPOINT_DOMAIN = b"countersign/audit-checkpoint/v1\n"
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


@dataclass
class VerifyReport:
    entries: int = 0
    checkpoints: int = 0
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


def verify_export(lines: Iterable[str], public_key: bytes | None = None) -> VerifyReport:
    """Verify an exported log; stop at (and name) the first entry where the chain breaks.

    `public_key` overrides the key named in the file (auditors should pass the
    key they obtained independently; the file's own claim proves nothing).
    """
    report = VerifyReport()
    header: dict[str, Any] | None = None
    computed: dict[int, bytes] = {}
    checkpoints: list[dict[str, Any]] = []
    prev = GENESIS
    expected_seq: int | None = None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            return report.fail(f"line {number}: not JSON")
        kind = record.get("type") if isinstance(record, dict) else None
        if kind == "header":
            if record.get("format") != EXPORT_FORMAT:
                return report.fail(f"line {number}: unknown export format {record.get('format')!r}")
            header = record
            try:
                prev = _hex(record["prev_chain_hash"], "prev_chain_hash")
                expected_seq = int(record["first_seq"])
            except (KeyError, ValueError, TypeError):
                return report.fail(f"line {number}: malformed header")
            continue
        if header is None:
            return report.fail(f"line {number}: export has no header")
        if kind == "checkpoint":
            checkpoints.append(record)
            continue
        if kind != "entry":
            return report.fail(f"line {number}: unknown record type {kind!r}")
        seq = record.get("seq")
        if seq != expected_seq:
            what = (
                "removed or reordered"
                if isinstance(seq, int) and seq > (expected_seq or 0)
                else "reordered or duplicated"
            )
            return report.fail(f"entry seq {seq} (line {number}): expected seq {expected_seq}; entries {what}")
        try:
            computed_entry = entry_hash(record)
            stored_entry = _hex(record.get("entry_hash"), "entry_hash")
            stored_chain = _hex(record.get("chain_hash"), "chain_hash")
        except (KeyError, ValueError) as exc:
            return report.fail(f"entry seq {seq} (line {number}): malformed ({exc})")
        if computed_entry != stored_entry:
            return report.fail(f"entry seq {seq} (line {number}): content altered (entry hash does not match)")
        head = chain_hash(prev, computed_entry)
        if head != stored_chain:
            return report.fail(f"entry seq {seq} (line {number}): chain broken (does not follow seq {seq - 1})")
        computed[seq] = head
        prev = head
        report.entries += 1
        report.first_seq = report.first_seq if report.first_seq is not None else seq
        report.last_seq = seq
        expected_seq = seq + 1
    if header is None:
        return report.fail("empty export")
    return _check_checkpoints(report, header, checkpoints, computed, public_key)


def _check_checkpoints(
    report: VerifyReport,
    header: dict[str, Any],
    checkpoints: list[dict[str, Any]],
    computed: dict[int, bytes],
    public_key: bytes | None,
) -> VerifyReport:
    try:
        key = nacl.signing.VerifyKey(public_key or bytes.fromhex(header["service_public_key"]))
    except (KeyError, ValueError, TypeError):
        return report.fail("no usable service public key")
    for cp in sorted(checkpoints, key=lambda c: c.get("seq", 0)):
        try:
            seq, head, at = int(cp["seq"]), _hex(cp["chain_hash"], "chain_hash"), str(cp["at"])
            key.verify(checkpoint_message(seq, head, at), bytes.fromhex(cp["signature"]))
        except (KeyError, ValueError, TypeError, nacl.exceptions.BadSignatureError):
            return report.fail(f"checkpoint seq {cp.get('seq')}: signature invalid or malformed")
        if seq not in computed:
            if header.get("complete") and report.last_seq is not None and seq > report.last_seq:
                return report.fail(f"checkpoint seq {seq} signs entries the export does not contain: entries removed")
            continue  # outside this export's range
        if computed[seq] != head:
            return report.fail(f"checkpoint seq {seq}: the log up to seq {seq} differs from what the service signed")
        report.checkpoints += 1
        report.last_checkpoint = seq
    if report.last_seq is not None and report.last_checkpoint != report.last_seq:
        first_uncovered = (report.last_checkpoint or (report.first_seq or 1) - 1) + 1
        return report.fail(
            f"entries from seq {first_uncovered} to {report.last_seq} are not covered by a signed checkpoint: "
            "appended after the service last signed the log"
        )
    return report
