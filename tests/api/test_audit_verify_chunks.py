"""verify_file's chunked pass over a v3 export: the same report as the one-pass verifier, whatever the chunks.

`countersign audit verify` reads a v3 export in chunks of whole lines, scanned in
worker processes (evidence.audit_log._scan_chunk): each run of plain entry lines is
checked there except where it joins the lines before it, which the pass in file order
checks along with every other line. The insider who edits the file wants an edit to
fall where one scan's work meets the next, so each edit below is tried at every place,
with chunks cut before, inside and after it, in one process and in two; the report
must be the one verify_export gives over the same lines, problem text and line number
included. No timings here: bench.audit_log measures those.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from evidence.audit_log import (
    GENESIS,
    VerifyReport,
    chain_hash,
    entry_hash,
    export_entry_line,
    export_header_line,
    verify_export,
    verify_file,
)
from evidence.chain import canonical_json
from evidence.merkle import CompactRange
from tests.api.test_audit_export_formats import PUBLIC, relinked, v3_export

Lines = list[str]
# (jobs, chunk_bytes): lines cut mid-way everywhere, a few lines a chunk, one chunk; forked workers, small chunks
CHUNKINGS = [(1, 13), (1, 97), (1, 700), (1, 1 << 20), (2, 450)]
LINES = v3_export(entries=30, every=7)  # tree heads after entries 7, 14, 21, 28 and 30; entry 7 escaped


def summary(report: VerifyReport) -> tuple[object, ...]:
    return (
        report.problems,
        report.entries,
        report.first_seq,
        report.last_seq,
        report.checkpoints,
        report.tree_heads,
        report.tree_root,
        report.last_checkpoint,
    )


def write(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "export.jsonl"
    path.write_bytes(data)
    return path


def text(lines: Lines) -> bytes:
    return ("\n".join(lines) + "\n").encode()


def same_as_one_pass(tmp_path: Path, data: bytes, chunkings: list[tuple[int, int]] = CHUNKINGS) -> VerifyReport:
    """verify_file's report for each chunking must be verify_export's over the file's lines (returned)."""
    path = write(tmp_path, data)
    expected = verify_export(io.BytesIO(data), PUBLIC)  # the lines as iterating over the file yields them
    for jobs, chunk_bytes in chunkings:
        report = verify_file(path, PUBLIC, jobs=jobs, chunk_bytes=chunk_bytes)
        assert summary(report) == summary(expected), (jobs, chunk_bytes)
    return expected


def entry_lines() -> list[int]:
    return [i for i, line in enumerate(LINES) if line.startswith('{"type": "entry"')]


def seq_at(i: int) -> int:
    return int(json.loads(LINES[i]).get("entry", json.loads(LINES[i]).get("entry_escaped"))["seq"])


def test_untouched_export_verifies_in_any_chunks(tmp_path: Path) -> None:
    report = same_as_one_pass(tmp_path, text(LINES))
    assert report.ok and (report.entries, report.checkpoints, report.tree_heads) == (30, 5, 5)
    crlf = same_as_one_pass(tmp_path, text(LINES).replace(b"\n", b"\r\n"), [(1, 97), (2, 450)])
    assert crlf.ok
    assert same_as_one_pass(tmp_path, text(LINES)[:-1], [(1, 97), (2, 450)]).ok  # no newline at the end


def altered(lines: Lines, i: int) -> Lines:
    return [*lines[:i], lines[i].replace("complaint review", "complaint reviex"), *lines[i + 1 :]]


def dropped(lines: Lines, i: int) -> Lines:
    return [*lines[:i], *lines[i + 1 :]]


def swapped(lines: Lines, i: int) -> Lines:
    j = next(k for k in range(i + 1, len(lines)) if lines[k].startswith('{"type": "entry"'))
    out = list(lines)
    out[i], out[j] = out[j], out[i]
    return out


def duplicated(lines: Lines, i: int) -> Lines:
    return [*lines[: i + 1], lines[i], *lines[i + 1 :]]


def chain_edited(lines: Lines, i: int) -> Lines:
    stored = json.loads(lines[i])["chain_hash"]
    return [*lines[:i], lines[i].replace(stored, stored[:-1] + ("0" if stored[-1] != "0" else "1")), *lines[i + 1 :]]


def upper_case_hex(lines: Lines, i: int) -> Lines:  # hex is hex: still verifies, the one-pass way
    record = json.loads(lines[i])
    line = lines[i].replace(record["entry_hash"], record["entry_hash"].upper())
    return [*lines[:i], line.replace(record["chain_hash"], record["chain_hash"].upper()), *lines[i + 1 :]]


def rehashed(lines: Lines, i: int) -> Lines:  # every hash on the page agrees; the signed heads do not
    fields = json.loads(lines[i]).get("entry") or json.loads(lines[i])["entry_escaped"]
    return relinked(lines, i, canonical_json({**fields, "outcome": "denied"}))


def renumbered(lines: Lines, i: int) -> Lines:  # the seq one on, every hash recomputed to match
    fields = json.loads(lines[i]).get("entry") or json.loads(lines[i])["entry_escaped"]
    return relinked(lines, i, canonical_json({**fields, "seq": fields["seq"] + 1}))


def stale_entry_hash(lines: Lines, i: int) -> Lines:  # content edited, the chain recomputed, the entry hash left
    out = rehashed(lines, i)
    out[i] = out[i].replace(json.loads(out[i])["entry_hash"], json.loads(lines[i])["entry_hash"])
    return out


def upper_case_chain_hash(lines: Lines, i: int) -> Lines:  # the chain hash only: the run's first as written
    stored = json.loads(lines[i])["chain_hash"]
    return [*lines[:i], lines[i].replace(stored, stored.upper()), *lines[i + 1 :]]


def prefixed(lines: Lines, i: int) -> Lines:  # an entry line found mid-line is no entry line (JSON still)
    return [*lines[:i], " " + lines[i], *lines[i + 1 :]]


def blank_before(lines: Lines, i: int) -> Lines:
    return [*lines[:i], "", *lines[i:]]


EDITS: list[Callable[[Lines, int], Lines]] = [
    altered,
    dropped,
    swapped,
    duplicated,
    chain_edited,
    upper_case_hex,
    upper_case_chain_hash,
    rehashed,
    renumbered,
    stale_entry_hash,
    prefixed,
    blank_before,
]


@pytest.mark.parametrize("edit", EDITS, ids=[e.__name__ for e in EDITS])
def test_every_edit_anywhere_reports_as_the_one_pass_verifier(
    edit: Callable[[Lines, int], Lines], tmp_path: Path
) -> None:
    for i in entry_lines()[:-1]:
        same_as_one_pass(tmp_path, text(edit(LINES, i)), CHUNKINGS[:-1])  # in this process: quick
    for i in entry_lines()[::4]:
        same_as_one_pass(tmp_path, text(edit(LINES, i)), CHUNKINGS[-1:])  # and in two worker processes


def test_other_lines_edited_report_as_the_one_pass_verifier(tmp_path: Path) -> None:
    checkpoints = [i for i, line in enumerate(LINES) if line.startswith('{"type": "checkpoint"')]
    cases = [
        dropped(LINES, checkpoints[1]),  # a tree head removed: the next one covers more
        dropped(LINES, checkpoints[-1]),  # the last: entries 29 and 30 unsigned
        [*LINES[:5], LINES[0], *LINES[5:]],  # a second header
        [LINES[0], *LINES[1:5], "not json", *LINES[5:]],
        [*LINES[:-1], LINES[-1][:-40]],  # cut short
        [
            LINES[3].replace(f',"seq":{seq_at(3)},', f',"seq":0{seq_at(3)},') if k == 3 else line
            for k, line in enumerate(LINES)
        ],
    ]
    said = [same_as_one_pass(tmp_path, text(lines)).problems[:1] for lines in cases]
    assert said[0] == []  # the next tree head covers the entries too
    assert all(said[1:]), said


def offset(lines: Lines, i: int) -> int:
    """Where line `i` starts in the file."""
    return len(text(lines[:i])) if i else 0


def mid_export(seq: int) -> int:
    return next(i for i in entry_lines() if seq_at(i) == seq)


@pytest.mark.parametrize("where", ["middle of a chunk", "first line of a chunk", "last line of a chunk"])
def test_insider_edits_at_and_between_chunk_boundaries_are_refused(where: str, tmp_path: Path) -> None:
    i = mid_export(18)
    chunk_bytes = {
        "middle of a chunk": offset(LINES, i - 3),  # chunk 2 starts 3 lines before, runs on past it
        "first line of a chunk": offset(LINES, i),
        "last line of a chunk": offset(LINES, i + 1),
    }[where]
    number = i + 1
    cases = {
        "one entry altered": (
            altered(LINES, i),
            f"entry seq 18 (line {number}): content altered (entry hash does not match)",
        ),
        "one line dropped": (
            dropped(LINES, i),
            f"entry seq 19 (line {number}): expected seq 18; entries removed or reordered",
        ),
        "a pair reordered": (
            swapped(LINES, i),
            f"entry seq 19 (line {number}): expected seq 18; entries removed or reordered",
        ),
        "a chain hash edited": (
            chain_edited(LINES, i),
            f"entry seq 18 (line {number}): chain broken (does not follow seq 17)",
        ),
        "renumbered, rehashed": (
            renumbered(LINES, i),
            f"entry seq 19 (line {number}): expected seq 18; entries removed or reordered",
        ),
        "edited, chain rehashed, entry hash left": (
            stale_entry_hash(LINES, i),
            f"entry seq 18 (line {number}): content altered (entry hash does not match)",
        ),
        "rehashed from there on": (
            rehashed(LINES, i),
            "checkpoint seq 21: the log up to seq 21 differs from what the service signed",
        ),
    }
    for name, (lines, message) in cases.items():
        path = write(tmp_path, text(lines))
        for jobs in (1, 2):
            report = verify_file(path, PUBLIC, jobs=jobs, chunk_bytes=chunk_bytes)
            assert report.problems == [message], (name, jobs)
            assert summary(report) == summary(verify_export(lines, PUBLIC)), (name, jobs)


def test_a_run_that_does_not_follow_the_lines_before_is_read_again_line_by_line(tmp_path: Path) -> None:
    """An entry line the scan accepted, whose first link the pass refuses, is reported by the one-pass check."""
    i = mid_export(18)
    forged = dict(json.loads(LINES[i])["entry"], seq=18, purpose="x")
    leaf = entry_hash(forged)
    head = chain_hash(GENESIS, leaf)  # consistent on its own, linked to nothing in this log
    lines = [*LINES[:i], export_entry_line(forged, leaf, head).rstrip("\n"), *LINES[i + 1 :]]
    path = write(tmp_path, text(lines))
    report = verify_file(path, PUBLIC, jobs=1, chunk_bytes=offset(lines, i))
    assert report.problems == [f"entry seq 18 (line {i + 1}): chain broken (does not follow seq 17)"]
    assert report.entries == 17


def test_range_export_and_no_tree_prefix_report_as_the_one_pass_verifier(tmp_path: Path) -> None:
    """A range export resumes the tree from its header's compact range; without one, tree heads cannot be checked."""
    start = mid_export(11)
    before, tree = GENESIS, CompactRange()
    for i in entry_lines():
        if seq_at(i) < 11:
            leaf = bytes.fromhex(json.loads(LINES[i])["entry_hash"])
            before = chain_hash(before, leaf)
            tree.append(leaf)
    header = export_header_line(PUBLIC, 11, before, complete=False, tree_prefix=[h.hex() for h in tree.hashes])
    ranged = [header.rstrip("\n"), *LINES[start:]]
    report = same_as_one_pass(tmp_path, text(ranged))
    assert report.ok and (report.first_seq, report.entries, report.tree_heads) == (11, 20, 4)  # at 14, 21, 28, 30
    k = next(k for k, line in enumerate(ranged) if ',"seq":16,' in line)
    assert (
        same_as_one_pass(tmp_path, text(altered(ranged, k)))
        .problems[0]
        .startswith(f"entry seq 16 (line {k + 1}): content altered")
    )
    no_prefix = [json.dumps({**json.loads(LINES[0]), "tree_prefix": None}), *LINES[1:]]
    said = same_as_one_pass(tmp_path, text(no_prefix)).problems
    assert said == ["checkpoint seq 7: carries a tree root but the export gives no tree prefix to check it"]
