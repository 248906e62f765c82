"""Export formats, offline: v1 and v2 files still verify, and a v3 file edited by hand is refused or detected.

A v3 entry line carries the canonical bytes its entry hash covers, and the
verifier hashes them as read. What an attacker could hope for is bytes the
verifier accepts that are not the ones the service hashed (non-canonical JSON,
a seq that is not the one hashed, a line twice, a cut file); each case below
names where it fails. The v1 and v2 fixtures in tests/api/data were written by
the old exporters' code (key: SigningKey(bytes(range(32)))); entry 7 has a
non-ASCII purpose with a U+2028 in it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import nacl.signing
import pytest

from evidence.audit_log import (
    _V3_HEAD,
    _V3_MID,
    _V3_RAW,
    EXPORT_FORMAT,
    GENESIS,
    chain_hash,
    entry_hash,
    export_checkpoint_line,
    export_entry_line,
    export_header_line,
    sign_tree_head,
    verify_export,
    verify_file,
)
from evidence.chain import canonical_json
from evidence.merkle import CompactRange

DATA = Path(__file__).parent / "data"
KEY = nacl.signing.SigningKey(bytes(range(32)))
PUBLIC = bytes(KEY.verify_key)
AT = "2026-03-01T09:00:00.000000+00:00"


def fields(seq: int) -> dict[str, object]:
    return {"seq": seq, "at": AT, "actor": f"user:{seq:04d}", "action": "api:evidence:read",
            "target": f"recording:{seq}", "outcome": "allowed",
            "purpose": "苦情の確認 \u2028" if seq == 7 else "complaint review", "detail": {"n": seq}}  # fmt: skip


def v3_export(entries: int = 12, every: int = 5) -> list[str]:
    lines = [export_header_line(PUBLIC, 1, GENESIS, complete=True, tree_prefix=[])]
    prev, tree = GENESIS, CompactRange()
    for seq in range(1, entries + 1):
        leaf = entry_hash(fields(seq))
        prev = chain_hash(prev, leaf)
        tree.append(leaf)
        lines.append(export_entry_line(fields(seq), leaf, prev))
        if seq % every == 0 or seq == entries:
            root = tree.root()
            lines.append(export_checkpoint_line(seq, prev, AT, sign_tree_head(KEY, seq, root, prev, AT), root))
    return [line.rstrip("\n") for line in lines]


def relinked(lines: list[str], index: int, payload: bytes) -> list[str]:
    """Line `index` now carries `payload`; its hashes and every later entry's chain hash are recomputed to match.

    The insider without the signing key: every hash on the page agrees, only the signed heads do not.
    """
    out = list(lines)
    prev = GENESIS
    for i, line in enumerate(out):
        record = json.loads(line)
        if record["type"] != "entry":
            continue
        if i < index:
            prev = bytes.fromhex(record["chain_hash"])
            continue
        if i != index:
            entry = record.get("entry") or record["entry_escaped"]
            leaf = entry_hash(entry)
            prev = chain_hash(prev, leaf)
            out[i] = export_entry_line(entry, leaf, prev).rstrip("\n")
            continue
        leaf = hashlib.sha256(b"\x00" + payload).digest()
        prev = chain_hash(prev, leaf)
        out[i] = f"{_V3_HEAD.decode()}{leaf.hex()}{_V3_MID.decode()}{prev.hex()}{_V3_RAW.decode()}{payload.decode()}}}"
    return out


def problem(lines: list[str]) -> str:
    report = verify_export(lines, PUBLIC)
    assert not report.ok
    return report.problems[0]


def entry_index(lines: list[str], seq: int) -> int:
    return next(i for i, line in enumerate(lines) if f',"seq":{seq},' in line)


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_older_exports_still_verify(version: str, tmp_path: Path) -> None:
    path = DATA / f"audit-export-{version}.jsonl"
    for report in (verify_file(path, PUBLIC), verify_export(path.read_text().splitlines(), PUBLIC)):
        assert report.ok, report.problems
        assert (report.entries, report.first_seq, report.last_seq, report.checkpoints) == (12, 1, 12, 3)
        assert report.tree_heads == (3 if version == "v2" else 0)
    lines = path.read_text().splitlines()
    lines[3] = lines[3].replace("complaint review", "routine check")
    tampered = tmp_path / "tampered.jsonl"
    tampered.write_text("\n".join(lines) + "\n")
    report = verify_file(tampered, PUBLIC)
    assert not report.ok and report.problems[0].startswith("entry seq 3 (line 4): content altered")
    assert report.entries == 2


def test_v1_file_keeps_only_the_checkpoints_chain_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[set[int] | None] = []
    real = verify_export

    def spy(lines, public_key=None, *, checkpoint_seqs=None):  # type: ignore[no-untyped-def]
        seen.append(checkpoint_seqs)
        return real(lines, public_key, checkpoint_seqs=checkpoint_seqs)

    monkeypatch.setattr("evidence.audit_log.verify_export", spy)
    assert verify_file(DATA / "audit-export-v1.jsonl", PUBLIC).ok
    assert verify_file(DATA / "audit-export-v2.jsonl", PUBLIC).ok
    assert seen == [{5, 10, 12}, None]  # v2 checks each checkpoint where it stands: nothing kept


def test_v3_export_verifies_from_str_bytes_and_file(tmp_path: Path) -> None:
    lines = v3_export()
    assert json.loads(lines[0])["format"] == EXPORT_FORMAT
    text = "\n".join(lines) + "\n"
    assert text.isascii() and text.splitlines() == lines  # entry 7 is escaped: no reader splits it
    assert '"entry_escaped": ' in lines[8] and "\\u2028" in lines[8]  # entry 7: escaped, still one line
    path = tmp_path / "a.jsonl"
    path.write_text(text)
    crlf = tmp_path / "crlf.jsonl"
    crlf.write_bytes(text.replace("\n", "\r\n").encode())
    for report in (
        verify_export(lines, PUBLIC),
        verify_export([line.encode() for line in lines], PUBLIC),
        verify_file(path, PUBLIC),
        verify_file(crlf, PUBLIC),
    ):
        assert report.ok, report.problems
        assert (report.entries, report.checkpoints, report.tree_heads) == (12, 3, 3)
    payload = json.loads(lines[1])["entry"]
    assert lines[1].endswith(canonical_json(payload).decode() + "}")  # the hashed bytes, verbatim


def test_non_canonical_bytes_with_stale_hashes_are_altered_content() -> None:
    lines = v3_export()
    i = entry_index(lines, 3)
    lines[i] = lines[i].replace('"actor":"user:0003"', '"actor": "user:0003"')
    assert problem(lines) == "entry seq 3 (line 4): content altered (entry hash does not match)"


@pytest.mark.parametrize(
    "edit",
    [
        lambda c: c.replace(b'","', b'", "'),  # extra spaces
        lambda c: json.dumps({**{k: v for k, v in json.loads(c).items() if k != "seq"}, "seq": 3}).encode(),
        lambda c: c.replace(b'"detail":{"n":3}', b'"detail":{"n":3.0}'),  # another spelling of 3
    ],
    ids=["spaces", "reordered", "number"],
)
def test_non_canonical_bytes_with_recomputed_hashes_are_refused_or_detected(edit) -> None:  # type: ignore[no-untyped-def]
    """Every hash on the page agrees with the bytes; the service hashed other (canonical) bytes and signed those."""
    lines = v3_export()
    i = entry_index(lines, 3)
    canonical = canonical_json(json.loads(lines[i])["entry"])
    edited = edit(canonical)
    assert edited != canonical and json.loads(edited)["seq"] == 3
    said = problem(relinked(lines, i, edited))
    assert said in (
        "entry seq 3 (line 4): not in canonical form (the service hashes only that)",
        "checkpoint seq 5: the log up to seq 5 differs from what the service signed",
    )


def test_swapped_keys_keeping_seq_and_target_fail_at_the_signed_checkpoint() -> None:
    lines = v3_export()
    i = entry_index(lines, 3)
    canonical = canonical_json(json.loads(lines[i])["entry"])
    action, actor = b'"action":"api:evidence:read"', b'"actor":"user:0003"'
    edited = canonical.replace(action + b"," + actor, actor + b"," + action)
    assert edited != canonical
    assert problem(relinked(lines, i, edited)) == (
        "checkpoint seq 5: the log up to seq 5 differs from what the service signed"
    )


def test_right_hash_wrong_seq() -> None:
    lines = v3_export()
    i = entry_index(lines, 3)
    canonical = canonical_json(json.loads(lines[i])["entry"])
    moved = relinked(lines, i, canonical.replace(b',"seq":3,', b',"seq":4,'))
    assert problem(moved) == "entry seq 4 (line 4): expected seq 3; entries removed or reordered"
    # The seq is read from the hashed bytes only: one in `detail` does not count.
    nested = relinked(lines, i, canonical.replace(b'"detail":{"n":3}', b'"detail":{"n":3,"seq":3}'))
    assert problem(nested) == "checkpoint seq 5: the log up to seq 5 differs from what the service signed"


def test_duplicated_line() -> None:
    lines = v3_export()
    i = entry_index(lines, 3)
    assert problem([*lines[: i + 1], lines[i], *lines[i + 1 :]]) == (
        "entry seq 3 (line 5): expected seq 4; entries reordered or duplicated"
    )
    assert problem([*lines, lines[-2]]).startswith("entry seq 12 (line 17): expected seq 13")


@pytest.mark.parametrize("cut", [2, 40, 200])
def test_truncated_file(cut: int, tmp_path: Path) -> None:
    text = ("\n".join(v3_export()) + "\n").encode()
    path = tmp_path / "cut.jsonl"
    path.write_bytes(text[: len(text) - cut])  # the last checkpoint cut short
    report = verify_file(path, PUBLIC)
    assert not report.ok and report.problems[0] == "line 16: not JSON"
    lines = v3_export()
    assert problem(lines[:-1]) == (
        "entries from seq 11 to 12 are not covered by a signed checkpoint: "
        "appended after the service last signed the log"
    )
    cut_entry = [*lines[:14], lines[14][:-30]]
    assert problem(cut_entry) == "line 15: not JSON"


def test_layout_and_payload_tricks() -> None:
    lines = v3_export()
    i = entry_index(lines, 3)
    record = json.loads(lines[i])
    pretty = json.dumps(record)  # the same record re-serialised: the payload is no longer the bytes hashed
    assert (
        problem([*lines[:i], pretty, *lines[i + 1 :]])
        == "entry seq 3 (line 4): content altered (entry hash does not match)"
    )
    compact = json.dumps(record, separators=(",", ":"))  # the envelope is not at its fixed offsets
    assert (
        problem([*lines[:i], compact, *lines[i + 1 :]]) == "line 4: malformed entry (not the v3 layout, byte for byte)"
    )
    twice = lines[i][:-1] + ', "entry": ' + lines[i][lines[i].index('"entry": ') + 9 :]
    assert problem([*lines[:i], twice, *lines[i + 1 :]]).startswith("line 4: malformed entry")
    upper = lines[i].replace(record["entry_hash"], record["entry_hash"].upper())
    assert verify_export([*lines[:i], upper, *lines[i + 1 :]], PUBLIC).ok  # hex is hex, as in v2
    v2_line = json.dumps({"type": "entry", **record["entry"], "entry_hash": record["entry_hash"]})
    assert problem([*lines[:i], v2_line, *lines[i + 1 :]]).startswith("line 4: malformed entry")
