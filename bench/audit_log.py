"""Audit log benchmark: appends per second under concurrent writers, and the
offline verification rate of a large export next to raw SHA-256 on the same bytes.

    .venv/bin/python -m bench.audit_log                      # 1, 4, 8 threads; 2 processes; 1,000,000 entries
    .venv/bin/python -m bench.audit_log --entries 100000 --seconds 3

Appends go through api.core.audit.record_committed on the embedded default (SQLite
WAL, synchronous=FULL), each its own committed transaction, as evidence reads
and denials are written. The export to verify is built with the same hashing
and signing code the service uses (entry hash, chain, a signed checkpoint every
1,000 entries), because appending a million entries through the database would
take far longer than the verification being measured.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import tempfile
import threading
import time
from pathlib import Path

import nacl.signing
from sqlalchemy import func, select

from api.bootstrap import init_data_dir
from api.core.audit import record_committed
from api.core.models import AccessLog, utcnow
from api.core.services import build_services
from api.core.settings import Settings
from bench._meta import load_average, revision
from evidence.audit_log import EXPORT_FORMAT, GENESIS, chain_hash, entry_hash, sign_checkpoint, timestamp, verify_export


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


def build_export(entries: int, every: int = 1000) -> tuple[list[str], bytes]:
    key = nacl.signing.SigningKey.generate()
    lines = [
        json.dumps(
            {
                "type": "header",
                "format": EXPORT_FORMAT,
                "service_public_key": bytes(key.verify_key).hex(),
                "first_seq": 1,
                "prev_chain_hash": GENESIS.hex(),
                "complete": True,
            }
        )
    ]
    checkpoints = []
    prev = GENESIS
    at = timestamp(utcnow())
    for seq in range(1, entries + 1):
        fields = {"seq": seq, "at": at, "actor": f"user:{seq % 97:08d}", "action": "api:evidence:read",
                  "target": f"recording:{seq:036d}", "outcome": "allowed", "purpose": "complaint review",
                  "detail": {"format": "flac"}}  # fmt: skip
        leaf = entry_hash(fields)
        prev = chain_hash(prev, leaf)
        lines.append(json.dumps({"type": "entry", **fields, "entry_hash": leaf.hex(), "chain_hash": prev.hex()}))
        if seq % every == 0 or seq == entries:
            signature = sign_checkpoint(key, seq, prev, at)
            checkpoints.append(
                json.dumps(
                    {"type": "checkpoint", "seq": seq, "chain_hash": prev.hex(), "at": at, "signature": signature.hex()}
                )
            )
    return lines + checkpoints, bytes(key.verify_key)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", default="1,4,8", help="concurrent writer threads to try (default 1,4,8)")
    parser.add_argument("--processes", type=int, default=2, help="writer processes sharing the database (default 2)")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per append measurement (default 5)")
    parser.add_argument("--entries", type=int, default=1_000_000, help="entries in the export to verify (default 1e6)")
    args = parser.parse_args()
    print(f"audit log benchmark — {revision()}; load average {load_average()}")

    with tempfile.TemporaryDirectory(prefix="countersign-bench-audit-") as tmp:
        data = Path(tmp) / "data"
        init_data_dir(Settings(data_dir=data, env="development"))
        print("\nappends (each its own committed transaction, SQLite WAL, synchronous=FULL)")
        print(f"{'writers':>14}  {'appends/s':>10}")
        for threads in (int(t) for t in args.threads.split(",")):
            print(f"{threads:>6} threads  {appends(data, threads, args.seconds):>10.0f}")
        if args.processes > 1:
            print(f"{args.processes:>4} processes  {process_appends(data, args.processes, args.seconds):>10.0f}")
        services = build_services(Settings(data_dir=data, env="development"))
        with services.sessions() as session:
            total = session.scalar(select(func.count()).select_from(AccessLog)) or 0
        print(f"  ({total} entries written; one linear chain, gap-free sequence numbers)")

    print(f"\nverification of an exported log of {args.entries:,} entries")
    start = time.perf_counter()
    lines, public_key = build_export(args.entries)
    built = time.perf_counter() - start
    size = sum(len(line) + 1 for line in lines)
    print(f"  built in {built:.1f} s ({size / 1e6:.0f} MB, {args.entries // 1000} checkpoints)")

    start = time.perf_counter()
    report = verify_export(lines, public_key)
    verify_s = time.perf_counter() - start
    assert report.ok, report.problems
    start = time.perf_counter()
    for line in lines:
        hashlib.sha256(line.encode()).digest()
    sha_lines_s = time.perf_counter() - start
    blob = "\n".join(lines).encode()
    start = time.perf_counter()
    hashlib.sha256(blob).digest()
    sha_bulk_s = time.perf_counter() - start
    print(f"{'':28}{'entries/s':>12}{'MB/s':>10}{'vs verify':>11}")
    print(f"{'countersign audit verify':28}{args.entries / verify_s:>12,.0f}{size / 1e6 / verify_s:>10.1f}{1:>10.1f}x")
    print(f"{'raw SHA-256, line by line':28}{args.entries / sha_lines_s:>12,.0f}{size / 1e6 / sha_lines_s:>10.1f}"
          f"{verify_s / sha_lines_s:>10.1f}x")  # fmt: skip
    print(f"{'raw SHA-256, one pass':28}{args.entries / sha_bulk_s:>12,.0f}{size / 1e6 / sha_bulk_s:>10.1f}"
          f"{verify_s / sha_bulk_s:>10.1f}x")  # fmt: skip
    print("  verify parses JSON, re-serialises canonically and hashes twice per entry, and checks every signature;")
    print("  the ratio says how much of that is hashing.")


if __name__ == "__main__":
    main()
