"""Audit log benchmark: appends per second under concurrent writers, and `countersign audit verify`
of a large export (time and peak memory) next to a bare pass over the same file.

    .venv/bin/python -m bench.audit_log                      # 1, 4, 8 threads; 2 processes; 1,000,000 entries
    .venv/bin/python -m bench.audit_log --entries 100000 --seconds 3
    .venv/bin/python -m bench.audit_log --no-appends --formats v3,v2   # verification only, both formats

Appends go through api.core.audit.record_committed on the embedded default (SQLite
WAL, synchronous=FULL), each its own committed transaction, as evidence reads
and denials are written. Then appends in batches, as the uploads' group commit makes
them (api.core.group_commit): N record_event calls in one transaction, with the
head settled once per batch and the entries inserted in one statement (flagged by
api.core.group_commit.flag_batch, as the group commit's writer flags its batches) against
the head bumped and moved by every append (the baseline), alternated in one
process: CPU and SQL statements per append. The export to verify is written to a file with the
service's own line writers (evidence.audit_log.export_*_line: the route uses
them too) and the same hashing and signing code: entry hash, chain, Merkle tree,
a signed tree head right after every 1,000th entry, as GET /v1/audit/export
streams it, because appending a million entries through the database would take
far longer than the verification being measured. One entry in 1,000 has a
non-ASCII purpose (the export's escaped form).

Each verification runs the real `countersign audit verify FILE --public-key ...`
as a child process; its wall time includes the CLI's start-up, and its CPU time and
peak RSS come from wait4 (the child and anything it waited for: the worker processes
that scan a v3 export's chunks, one per core, count in; peak RSS is the largest one's).
A v3 export is also verified with `--jobs 1` (the same chunked scan, in one process). The baselines run the
same way over the same file: `sha256sum`, and a bare Python pass that reads the
lines and hashes each one (the least any line-by-line verifier in Python does).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import cast

import nacl.signing
from sqlalchemy import event, func, select

from api.bootstrap import init_data_dir
from api.core.audit import record_committed, record_event
from api.core.group_commit import flag_batch
from api.core.models import AccessLog, utcnow
from api.core.services import Services, build_services
from api.core.settings import Settings
from bench._meta import load_average, revision
from evidence.audit_actions import Action
from evidence.audit_log import (
    EXPORT_FORMATS,
    GENESIS,
    chain_hash,
    entry_hash,
    export_checkpoint_line,
    export_entry_line,
    export_header_line,
    sign_tree_head,
    timestamp,
)
from evidence.merkle import CompactRange

LAUNCHER = """
import json, resource, subprocess, sys, time
start = time.perf_counter()
run = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
seconds = time.perf_counter() - start
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
cpu = usage.ru_utime + usage.ru_stime
print(json.dumps({"seconds": seconds, "cpu": cpu, "rss_kb": usage.ru_maxrss, "rc": run.returncode, "out": run.stdout}))
"""
BARE_PASS = """
import hashlib, sys
with open(sys.argv[1], "rb") as f:
    for line in f:
        hashlib.sha256(line).digest()
"""


def _writer(data_dir: str, seconds: float, counter: list[int], index: int) -> None:
    services = build_services(Settings(data_dir=Path(data_dir), env="development"))
    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline:
        record_committed(services.sessions, actor=f"bench:{index}", action="bench:audit:append", detail={"n": n})
        n += 1
    counter[index] = n


def _process_writer(data_dir: str, seconds: float, queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    counts = [0]
    _writer(data_dir, seconds, counts, 0)
    queue.put(counts[0])


def appends(data_dir: Path, threads: int, seconds: float) -> float:
    counts = [0] * threads
    workers = [threading.Thread(target=_writer, args=(str(data_dir), seconds, counts, i)) for i in range(threads)]
    start = time.monotonic()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(counts) / (time.monotonic() - start)


def process_appends(data_dir: Path, processes: int, seconds: float) -> float:
    queue: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
    procs = [
        multiprocessing.Process(target=_process_writer, args=(str(data_dir), seconds, queue)) for _ in range(processes)
    ]
    start = time.monotonic()
    for p in procs:
        p.start()
    total = sum(queue.get() for _ in procs)
    for p in procs:
        p.join()
    return total / (time.monotonic() - start)


BENCH_ACTION = cast(Action, "bench:audit:append")  # as the threads' appends above: not a service action


def _batch_cost(services: Services, size: int, settled: bool, batches: int) -> tuple[float, float]:
    """CPU seconds and SQL statements per append for `batches` transactions of `size` appends each."""
    statements = [0]

    def count(*_args: object) -> None:
        statements[0] += 1

    event.listen(services.engine, "before_cursor_execute", count)
    try:
        cpu = time.process_time()
        for _ in range(batches):
            with services.sessions() as session:
                flag_batch(session, settled)  # as the group commit's writer flags a batch
                for n in range(size):
                    record_event(session, actor="bench:batch", action=BENCH_ACTION, detail={"n": n})
                session.commit()
        cpu = time.process_time() - cpu
    finally:
        event.remove(services.engine, "before_cursor_execute", count)
    appended = size * batches
    return cpu / appended, statements[0] / appended


def batch_appends(data_dir: Path, sizes: list[int], rounds: int = 3) -> None:
    services = build_services(Settings(data_dir=data_dir, env="development"))
    print("\nappends in batches (one transaction of N, as the group commit makes them; best of 3 alternated rounds)")
    print(f"{'batch':>6}  {'each moves the head':>28}  {'as the group commit':>28}  {'CPU ratio':>9}")
    for size in sizes:
        batches = max(1, 2000 // size)
        best: dict[bool, tuple[float, float]] = {}
        for _ in range(rounds):
            for settled in (False, True):
                cpu, stmts = _batch_cost(services, size, settled, batches)
                if settled not in best or cpu < best[settled][0]:
                    best[settled] = (cpu, stmts)
        (base_cpu, base_stmts), (cpu, stmts) = best[False], best[True]
        print(
            f"{size:>6}  {base_cpu * 1e6:>9.0f} µs {base_stmts:>5.2f} statements  "
            f"{cpu * 1e6:>9.0f} µs {stmts:>5.2f} statements  {cpu / base_cpu:>8.2f}x"
        )


def _v2_entry_line(fields: dict[str, object], leaf: bytes, head: bytes) -> str:
    """An entry as the v2 export wrote it (fields re-serialised: the verifier must rebuild the canonical form)."""
    return json.dumps({"type": "entry", **fields, "entry_hash": leaf.hex(), "chain_hash": head.hex()}) + "\n"


def build_export(path: Path, entries: int, version: str = "v3", every: int = 1000) -> bytes:
    """Write an export of `entries` entries to `path`; return the public key that verifies it."""
    key = nacl.signing.SigningKey.generate()
    fmt = f"countersign-audit-export/{version}"
    assert fmt in EXPORT_FORMATS and version != "v1"
    entry_line = export_entry_line if version == "v3" else _v2_entry_line
    prev, tree = GENESIS, CompactRange()
    at = timestamp(utcnow())
    with path.open("w", encoding="ascii") as out:
        out.write(export_header_line(bytes(key.verify_key), 1, GENESIS, complete=True, tree_prefix=[], fmt=fmt))
        for seq in range(1, entries + 1):
            purpose = "complaint review" if seq % 1000 != 500 else "苦情の確認"  # one in 1,000: non-ASCII
            fields = {"seq": seq, "at": at, "actor": f"user:{seq % 97:08d}", "action": "api:evidence:read",
                      "target": f"recording:{seq:036d}", "outcome": "allowed", "purpose": purpose,
                      "detail": {"format": "flac"}}  # fmt: skip
            leaf = entry_hash(fields)
            prev = chain_hash(prev, leaf)
            tree.append(leaf)
            out.write(entry_line(fields, leaf, prev))
            if seq % every == 0 or seq == entries:
                root = tree.root()
                signature = sign_tree_head(key, seq, root, prev, at)
                out.write(export_checkpoint_line(seq, prev, at, signature, root))
    return bytes(key.verify_key)


def measure(command: list[str]) -> tuple[float, float, float, str]:
    """Wall seconds, CPU seconds (user + system), peak RSS (MB) and output of one child process.

    Started from a small launcher: a child's peak RSS starts at its parent's size when
    it forks, and this process holds far more than the verifier's few megabytes.
    """
    reply = subprocess.run([sys.executable, "-c", LAUNCHER, *command], capture_output=True, text=True, check=False)
    try:
        result = json.loads(reply.stdout)
    except ValueError:
        raise SystemExit(f"launcher failed: {reply.stdout}{reply.stderr}") from None
    if result["rc"]:
        raise SystemExit(f"{command[0]} failed ({result['rc']}): {result['out']}")
    return result["seconds"], result["cpu"], result["rss_kb"] / 1024, result["out"].strip()


def countersign() -> str:
    beside = Path(sys.executable).with_name("countersign")
    return str(beside) if beside.exists() else shutil.which("countersign") or "countersign"


def verification(entries: int, versions: list[str], runs: int) -> None:
    print(f"\nverification of an exported log of {entries:,} entries (best of {runs}; load {load_average()})")
    with tempfile.TemporaryDirectory(prefix="countersign-bench-verify-") as tmp:
        for version in versions:
            path = Path(tmp) / f"audit-{version}.jsonl"
            start = time.perf_counter()
            key = build_export(path, entries, version)
            size = path.stat().st_size
            print(f"\n  {version}: built in {time.perf_counter() - start:.1f} s ({size / 1e6:.0f} MB, "
                  f"{-(-entries // 1000)} tree heads)")  # fmt: skip
            verify = [countersign(), "audit", "verify", str(path), "--public-key", key.hex()]
            rows = [
                ("countersign audit verify", verify),  # a v3 export: chunks scanned in one process per core
                *([("  --jobs 1 (one process)", [*verify, "--jobs", "1"])] if version == "v3" else []),
                ("bare pass: read + SHA-256", [sys.executable, "-c", BARE_PASS, str(path)]),
                ("sha256sum of the file", ["sha256sum", str(path)]),
            ]
            results = {name: min(measure(cmd) for _ in range(runs)) for name, cmd in rows}
            verify_s, verify_cpu, _, said = results[rows[0][0]]
            assert said.startswith("OK:"), said
            print(f"  {said}")
            print(f"  {'':28}{'seconds':>9}{'CPU s':>7}{'entries/s':>12}{'MB/s':>8}{'peak RSS':>11}{'verify is':>11}"
                  f"{'(CPU)':>7}")  # fmt: skip
            for name, (seconds, cpu, rss, _) in results.items():
                print(f"  {name:28}{seconds:>9.2f}{cpu:>7.2f}{entries / seconds:>12,.0f}{size / 1e6 / seconds:>8.0f}"
                      f"{rss:>8.0f} MB{verify_s / seconds:>10.1f}x{verify_cpu / max(cpu, 1e-3):>6.1f}x")  # fmt: skip
            print(f"  (peak RSS floor of the launcher: `true` {measure(['true'])[2]:.0f} MB)")
            path.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", default="1,4,8", help="concurrent writer threads to try (default 1,4,8)")
    parser.add_argument("--processes", type=int, default=2, help="writer processes sharing the database (default 2)")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per append measurement (default 5)")
    parser.add_argument("--no-appends", action="store_true", help="skip the append measurements")
    parser.add_argument("--batches", default="1,4,16,64", help="batch sizes to append in (default 1,4,16,64)")
    parser.add_argument("--entries", type=int, default=1_000_000, help="entries in the export to verify (default 1e6)")
    parser.add_argument("--formats", default="v3", help="export formats to verify, e.g. v3,v2 (default v3)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each verification; the best is shown")
    args = parser.parse_args()
    print(f"audit log benchmark — {revision()}; load average {load_average()}")

    if not args.no_appends:
        with tempfile.TemporaryDirectory(prefix="countersign-bench-audit-") as tmp:
            data = Path(tmp) / "data"
            init_data_dir(Settings(data_dir=data, env="development"))
            print("\nappends (each its own committed transaction, SQLite WAL, synchronous=FULL)")
            print(f"{'writers':>14}  {'appends/s':>10}")
            for threads in (int(t) for t in args.threads.split(",")):
                print(f"{threads:>6} threads  {appends(data, threads, args.seconds):>10.0f}")
            if args.processes > 1:
                print(f"{args.processes:>4} processes  {process_appends(data, args.processes, args.seconds):>10.0f}")
            batch_appends(data, [int(n) for n in args.batches.split(",")])
            services = build_services(Settings(data_dir=data, env="development"))
            with services.sessions() as session:
                total = session.scalar(select(func.count()).select_from(AccessLog)) or 0
            print(f"  ({total} entries written; one linear chain, gap-free sequence numbers)")

    verification(args.entries, args.formats.split(","), args.runs)


if __name__ == "__main__":
    main()
