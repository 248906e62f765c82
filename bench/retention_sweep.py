"""Retention sweep: finding what is due among many recordings, and how fast it is purged.

A fresh data directory (SQLite, WAL, synchronous=FULL, filesystem store) is
filled with recording rows by bulk Core inserts, in three steps (10k, 100k,
--rows). At each size, with nothing due, it times:

* discovery: the sweep's own query (``retention.job.due_page``, an index range
  scan) finding nothing; it must not grow with the table;
* a whole dry run of the job (discovery, and the next due date it reports: one
  index seek), next to its baseline: the same dry run plus the count of every
  not-yet-due row that the summary used to report (a range scan over most of
  the table);

Then 1% of the rows are made due; the first 2 x --purge of them are real
recordings (sealed data key, --segments segment rows and objects each). It times
discovery of every due recording (all pages), a dry run deciding all of them,
and real runs purging them (shred, delete objects, tombstone signed by the
service key, two audit entries each): --purge recordings through the batched
path, and --purge through its baseline in the same run (one audit append per
entry, objects deleted one at a time, batches of 50: the path before batching),
alternating in two rounds so that both see the same load. Each is reported in
recordings/s, CPU ms (all threads) and SQL statements per recording.

    .venv/bin/python -m bench.retention_sweep                 # 1,000,000 rows, purge 1,000 each way (~3 min)
    .venv/bin/python -m bench.retention_sweep --rows 200000 --purge 300
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from sqlalchemy import event, func, insert, select, update  # noqa: E402

import retention.purge  # noqa: E402
from api.bootstrap import init_data_dir  # noqa: E402
from api.core.audit import record_event  # noqa: E402
from api.core.models import Device, Recording, SealedKey, Segment, Site, utcnow  # noqa: E402
from api.core.services import Services, build_services  # noqa: E402
from api.core.settings import Settings  # noqa: E402
from api.core.storage.interface import segment_key  # noqa: E402
from bench._meta import load_average, revision  # noqa: E402
from retention import job  # noqa: E402

CHUNK = 20_000


def timed(fn: Callable[[], Any], repeat: int = 5) -> tuple[float, Any]:
    """Median wall time of `repeat` calls, in seconds, and the last result."""
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def fill(services: Services, device: str, start: int, stop: int) -> float:
    """Insert rows start..stop-1, none due (retain_until 1-30 days ahead); return seconds taken."""
    now = utcnow()
    began = time.perf_counter()
    for lo in range(start, stop, CHUNK):
        rows = []
        for i in range(lo, min(stop, lo + CHUNK)):
            started = now - timedelta(days=29, seconds=i % 86400)
            rows.append(
                {
                    "id": str(uuid.UUID(int=i + 1)),
                    "device_id": device,
                    "site_id": "bench",
                    "started_at": started,
                    "status": "complete",
                    "header": {},
                    "header_signature": b"",
                    "consent_outcome": "given",
                    "segment_count": 0,
                    "head_hash": bytes(32),
                    "last_activity_at": started,
                    "created_at": started,
                    "ended_at": started,
                    "retain_until": now + timedelta(days=1 + i % 30, seconds=i % 3600),
                    "retain_reason": "delete: default/routine: delete after 30 d",
                }
            )
        with services.engine.begin() as connection:
            connection.execute(insert(Recording), rows)
    return time.perf_counter() - began


def make_due(services: Services, total: int, real: int, segments: int, size: int) -> None:
    """1% of the rows become due; the first `real` get a sealed key, segment rows and objects."""
    now = utcnow()
    due = [str(uuid.UUID(int=i + 1)) for i in range(0, total, 100)]
    with services.engine.begin() as connection:
        for rank, rid in enumerate(due):
            past = now - timedelta(days=2, seconds=len(due) - rank)  # real ones first in sweep order
            connection.execute(
                update(Recording)
                .where(Recording.id == rid)
                .values(retain_until=past, started_at=past - timedelta(days=30), segment_count=segments)
            )
        keys, segs = [], []
        for rid in due[:real]:
            keys.append({"recording_id": rid, "key_id": "bench", "sealed": os.urandom(80)})
            for index in range(segments):
                body = os.urandom(size)
                services.store.put(segment_key(rid, index), body)
                segs.append(
                    {
                        "recording_id": rid,
                        "index": index,
                        "final": index == segments - 1,
                        "ciphertext_sha256": hashlib.sha256(body).digest(),
                        "plaintext_sha256": bytes(32),
                        "prev_hash": bytes(32),
                        "signature": bytes(64),
                        "size": size,
                        "object_key": segment_key(rid, index),
                        "received_at": now,
                    }
                )
        connection.execute(insert(SealedKey), keys)
        connection.execute(insert(Segment), segs)


def discover_all(services: Services) -> int:
    now, after, found = utcnow(), None, 0
    with services.sessions() as session:
        while page := job.due_page(session, now, after, job.PAGE):
            found += len(page)
            after = page[-1]
    return found


def first_page(services: Services) -> int:
    with services.sessions() as session:
        return len(job.due_page(session, utcnow(), None, job.PAGE))


def dry_run_with_full_count(services: Services) -> job.RunSummary:
    """The baseline dry run: what the summary cost while it counted every not-yet-due row."""
    summary = job.run(services, dry_run=True)
    with services.sessions() as session:
        job.count_not_due(session, summary.now)
    return summary


@contextlib.contextmanager
def baseline_path() -> Iterator[None]:
    """The purge as it was before batching: an audit append per entry, one object delete at a time."""
    purge: Any = retention.purge  # its record_events is an import, swapped here for the old appends
    saved = purge.record_events, purge.DELETE_WORKERS, job.BATCH

    def one_by_one(session: Any, events: list[dict[str, Any]]) -> list[int]:
        return [record_event(session, **e).seq for e in events]

    purge.record_events, purge.DELETE_WORKERS, job.BATCH = one_by_one, 1, 50
    try:
        yield
    finally:
        purge.record_events, purge.DELETE_WORKERS, job.BATCH = saved


class Cost:
    """Wall time, CPU time (every thread of the process) and SQL statements, summed over runs."""

    def __init__(self) -> None:
        self.recordings, self.wall, self.cpu, self.statements = 0, 0.0, 0.0, 0

    def run(self, services: Services, limit: int) -> None:
        def count(*_args: object) -> None:
            self.statements += 1

        event.listen(services.engine, "before_cursor_execute", count)
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            summary = job.run(services, limit=limit)
        finally:
            self.wall += time.perf_counter() - wall
            self.cpu += time.process_time() - cpu
            event.remove(services.engine, "before_cursor_execute", count)
        assert len(summary.purged) == limit and summary.ok, summary.errors
        self.recordings += limit

    def line(self) -> str:
        n = self.recordings
        return (
            f"{n / self.wall:6,.0f} recordings/s, {self.cpu * 1e3 / n:5.2f} ms CPU and "
            f"{self.statements / n:4.1f} SQL statements per recording ({n:,} in {self.wall:.2f} s)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="recordings in the database at the end")
    parser.add_argument("--purge", type=int, default=1_000, help="recordings to purge for the purge rate")
    parser.add_argument("--segments", type=int, default=2, help="segments (rows + objects) per purged recording")
    parser.add_argument("--segment-bytes", type=int, default=4096, help="size of each purged segment object")
    parser.add_argument("--keep", action="store_true", help="keep the data directory afterwards")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="countersign-retention-bench-"))
    try:
        settings = Settings(data_dir=tmp / "data", env="development", database_url=None)
        init_data_dir(settings)
        services = build_services(settings)
        with services.sessions() as session, session.begin():
            session.add(Site(id="bench", name="bench"))
            session.flush()
            device = Device(id=str(uuid.uuid4()), name="bench", site_id="bench")
            session.add(device)
        print(f"retention sweep benchmark — {revision()}, load {load_average()}, SQLite WAL synchronous=FULL")
        print(f"data directory {tmp}")
        print()
        print(
            f"{'rows':>10}  {'insert':>8}  {'find nothing (1st page)':>24}  {'dry run, 0 due':>15}"
            f"  {'baseline: + full count':>23}"
        )
        sizes = sorted({n for n in (10_000, 100_000, args.rows) if n <= args.rows})
        filled = 0
        for size in sizes:
            took = fill(services, device.id, filled, size)
            filled = size
            nothing, found = timed(lambda: first_page(services), repeat=21)
            assert found == 0
            dry, summary = timed(lambda: job.run(services, dry_run=True), repeat=7)
            assert summary.would_purge == [] and summary.next_due is not None
            before, _ = timed(lambda: dry_run_with_full_count(services), repeat=3)
            print(
                f"{size:>10,}  {took:>7.1f}s  {nothing * 1e3:>21.3f} ms  {dry * 1e3:>12.2f} ms"
                f"  {before * 1e3:>20.1f} ms"
            )
        with services.sessions() as session:
            print(f"plan: {job.sweep_plan(session, utcnow())}")

        due_count = len(range(0, filled, 100))
        real = min(args.purge, due_count // 2)
        make_due(services, filled, 2 * real, args.segments, args.segment_bytes)
        print()
        print(f"{due_count:,} of {filled:,} rows due (1%); {2 * real:,} with a sealed key and {args.segments} segments")
        find, found = timed(lambda: discover_all(services), repeat=5)
        assert found == due_count, (found, due_count)
        print(f"find all {found:,} due:            {find * 1e3:9.1f} ms  ({found / find:,.0f} candidates/s)")
        dry, summary = timed(lambda: job.run(services, dry_run=True), repeat=1)
        print(f"dry run deciding all of them:   {dry * 1e3:9.1f} ms  ({len(summary.would_purge):,} would go)")
        batched, baseline = Cost(), Cost()
        for half in (real // 2, real - real // 2):  # alternate, so both see the same load
            with baseline_path():
                baseline.run(services, half)
            batched.run(services, half)
        print(f"purge (keys, {args.segments} objects each, tombstones, audit), load {load_average()}:")
        print(f"  batched (job.BATCH {job.BATCH}):  {batched.line()}")
        print(f"  baseline (before):     {baseline.line()}")
        with services.sessions() as session:
            left = session.scalar(select(func.count()).select_from(job.due_query(utcnow()).subquery()))
        print(f"still due afterwards: {left:,} (the rows without segments; not purged by this benchmark)")
        services.engine.dispose()
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
