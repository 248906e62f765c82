"""Officer search latency at scale: GET /v1/evidence's query over a million recordings in PostgreSQL.

A fresh database (bench_search_<pid>, dropped at the end) gets its schema from `countersign server init`
(whatever the CLI does: migrations or create_all), then a year of recordings is bulk-loaded with COPY:
200 sites of uneven size, 5 devices each, business hours (09:00-18:00 JST), ~5% flagged as incidents,
a few interrupted or objected. Retention is modelled as the shipped defaults would have left it: routine
and interrupted recordings older than 30 days and objections older than 90 days are purged (the row
stays, purge_state = 'purged', sealed keys gone); live recordings have one sealed key each.

The query is the route's own (api.search.evidence_search: the officer's sites, not purged,
since/until, incident flag, newest first, limit), run through the ORM in a fresh Session per
query, so the row hydration is measured too. Not measured: the
route's per-request expire_stale() (timed separately below), active_holds() and the audit append.

Query shapes, each run --queries times with the same random arguments in both phases:

- site+7d            one site, a 7-day window anywhere in the year
- site+7d+incident   the same, incident=true
- site+incident      one site, incident=true, no window (`countersign evidence list --incident --site S`)
- 3 sites+7d         an officer of three sites, no site given, a 7-day window

Phase 1 uses the schema's indexes without the search ones; phase 2 builds those (they ship in the schema now).

    .venv/bin/python bench/search.py                    # 1,000,000 rows, 200 queries per shape (~3 min)
    .venv/bin/python bench/search.py --rows 100000      # quicker
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import psycopg  # noqa: E402
from sqlalchemy import Index, Select, and_, select  # noqa: E402
from sqlalchemy.orm import Session, sessionmaker  # noqa: E402

from api.core.db import make_engine, make_sessionmaker  # noqa: E402
from api.core.models import Recording  # noqa: E402
from api.search import evidence_search  # noqa: E402
from bench._meta import load_average, revision  # noqa: E402

PG_ADMIN_URL = "postgresql://root@127.0.0.1:5432/test"
CATEGORIES = ("verbal-abuse", "threat", "excessive-demand", "physical", "other")
SHAPES = ("site+7d", "site+7d+incident", "site+incident", "3 sites+7d")

# The indexes this benchmark proposes for api/core/models.py, built in phase 2. The composite serves
# every site + time-range query newest first (the route; holds.py's scoped hold matching) and
# makes the single-column ix_recordings_site_id redundant; the partial one holds only live
# incidents, so "newest incidents of a site" reads exactly `limit` index entries.
PROPOSED = (
    Index("ix_recordings_site_started", Recording.site_id, Recording.started_at.desc()),
    Index(
        "ix_recordings_site_incidents",
        Recording.site_id,
        Recording.started_at.desc(),
        postgresql_where=and_(Recording.incident_category.is_not(None), Recording.purge_state.is_(None)),
        sqlite_where=and_(Recording.incident_category.is_not(None), Recording.purge_state.is_(None)),
    ),
)
PROPOSED_SOURCE = """\
Index("ix_recordings_site_started", Recording.site_id, Recording.started_at.desc())
Index(
    "ix_recordings_site_incidents",
    Recording.site_id,
    Recording.started_at.desc(),
    postgresql_where=and_(Recording.incident_category.is_not(None), Recording.purge_state.is_(None)),
    sqlite_where=and_(Recording.incident_category.is_not(None), Recording.purge_state.is_(None)),
)"""


# --------------------------------------------------------------------------- the route's query


def query(
    officer_sites: frozenset[str],
    site: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    incident: bool | None = None,
    limit: int = 100,
) -> Select[Recording, str]:
    """The route's own query (api.search.evidence_search), with the route's site narrowing."""
    sites = officer_sites if site is None else officer_sites & {site}
    return evidence_search(sites, since, until, incident, limit)


@dataclass(frozen=True)
class Search:
    shape: str
    officer_sites: frozenset[str]
    site: str | None
    since: datetime | None
    until: datetime | None
    incident: bool | None

    def statement(self, limit: int) -> Select[Recording, str]:
        return query(self.officer_sites, self.site, self.since, self.until, self.incident, limit)


def searches(rng: np.random.Generator, sites: Sequence[str], now: datetime, days: int, count: int) -> list[Search]:
    out = []
    for shape in SHAPES:
        for _ in range(count):
            picked = [str(s) for s in rng.choice(sites, size=3, replace=False)]
            since = now - timedelta(days=days) + timedelta(seconds=float(rng.uniform(0, (days - 7) * 86400)))
            until = since + timedelta(days=7)
            if shape == "site+7d":
                out.append(Search(shape, frozenset(picked), picked[0], since, until, None))
            elif shape == "site+7d+incident":
                out.append(Search(shape, frozenset(picked), picked[0], since, until, True))
            elif shape == "site+incident":
                out.append(Search(shape, frozenset(picked), picked[0], None, None, True))
            else:
                out.append(Search(shape, frozenset(picked), None, since, until, None))
    return out


# --------------------------------------------------------------------------- database


def clean_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COUNTERSIGN_")}
    env.update({"COUNTERSIGN_ENV": "development", "PYTHONUNBUFFERED": "1", **extra})
    return env


def server_init(data: Path, url: str) -> str:
    """`countersign server init` against the database; returns the evidence key id it made."""
    done = subprocess.run(
        [sys.executable, "-m", "countersign", "server", "init", "--data", str(data)],
        env=clean_env({"COUNTERSIGN_DATABASE_URL": url}),
        capture_output=True,
        text=True,
        timeout=180,
        cwd=REPO,
    )
    if done.returncode != 0:
        raise RuntimeError(f"countersign server init failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return next(line.split()[-1] for line in done.stdout.splitlines() if line.startswith("evidence key id"))


def recording_indexes(conn: psycopg.Connection[Any]) -> list[tuple[str, str]]:
    rows = conn.execute(
        "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'recordings' ORDER BY indexname"
    ).fetchall()
    return [(str(a), str(b)) for a, b in rows]


def _hex(b: bytes) -> str:
    return "\\\\x" + b.hex()  # bytea in COPY text format: the backslash itself is escaped


@dataclass
class Dataset:
    sites: list[str]
    devices: list[tuple[str, str]]  # (device id, site id)
    live: int = 0
    incidents_live: int = 0


def load(
    conn: psycopg.Connection[Any], rng: np.random.Generator, args: argparse.Namespace, now: datetime, key_id: str
) -> Dataset:
    """Sites, devices, recordings (COPY, secondary indexes dropped and rebuilt), sealed keys of live ones."""
    sites = [f"site-{i:03d}" for i in range(args.sites)]
    devices = [(str(uuid.UUID(bytes=rng.bytes(16), version=4)), s) for s in sites for _ in range(5)]
    with conn.cursor() as cur:
        with cur.copy("COPY sites (id, name, created_at) FROM STDIN") as copy:
            for s in sites:
                copy.write_row((s, f"Site {s}", now - timedelta(days=args.days + 1)))
        with cur.copy("COPY devices (id, name, site_id, created_at, disabled) FROM STDIN") as copy:
            for i, (d, s) in enumerate(devices):
                copy.write_row((d, f"counter-{i}", s, now - timedelta(days=args.days + 1), False))
    data = Dataset(sites, devices)

    # Uneven sites: device weights drawn log-normally (a busy station vs. a branch office).
    weights = rng.lognormal(0.0, 0.6, size=len(devices))
    weights /= weights.sum()
    n = args.rows
    device_ix = rng.choice(len(devices), size=n, p=weights)
    day = rng.integers(0, args.days, size=n)
    second = rng.integers(0, 9 * 3600, size=n)  # 09:00-18:00 JST is 00:00-09:00 UTC
    start_day = (now - timedelta(days=args.days)).replace(hour=0, minute=0, second=0, microsecond=0)
    offsets = day * 86400 + second
    duration = rng.integers(30, 900, size=n)
    u = rng.random(n)
    incident = u < args.incident_rate
    objected = (u >= args.incident_rate) & (u < args.incident_rate + 0.03)
    interrupted = (u >= args.incident_rate + 0.03) & (u < args.incident_rate + 0.05)
    category = rng.integers(0, len(CATEGORIES), size=n)
    signatures = [_hex(rng.bytes(64)) for _ in range(1024)]
    hashes = [_hex(rng.bytes(32)) for _ in range(1024)]

    # Everything per row that numpy can do, done by numpy; the loop below only formats strings.
    base = np.datetime64(start_day.replace(tzinfo=None), "s")
    started_s = base + offsets.astype("timedelta64[s]")
    is_incident, is_objected = incident.tolist(), objected.tolist()
    keep = np.where(objected, 90, np.where(incident, 1095, 30))
    ended_s = started_s + np.where(objected, 0, duration).astype("timedelta64[s]")
    age_days = (np.datetime64(now.replace(tzinfo=None), "s") - started_s).astype("timedelta64[D]").astype(int)
    purged = (age_days >= keep).tolist()
    iso = np.datetime_as_string(started_s, unit="s").tolist()
    started_txt = [t + "+00" for t in iso]
    ended_txt = [t + "+00" for t in np.datetime_as_string(ended_s, unit="s").tolist()]
    retain_txt = [
        t + "+00" for t in np.datetime_as_string(started_s + keep.astype("timedelta64[D]"), unit="s").tolist()
    ]
    status_of = np.where(objected, "objected", np.where(interrupted, "interrupted", "complete")).tolist()
    segments = np.where(objected, 0, duration // 5 + 1).tolist()
    device_list, category_list = device_ix.tolist(), category.tolist()
    header_template = (
        '{{"version":1,"recording_id":"{rid}","device_id":"{dev}","started_at":"{t}+00:00",'
        '"consent":{{"notice_id":"counter-recording","notice_version":1,"notice_sha256":"' + "5d41402a" * 8 + '",'
        '"language":"ja","method":"displayed","presented_at":"{t}+00:00","decided_at":"{t}+00:00",'
        '"outcome":"{outcome}","staff_code":"staff-{staff}"}},"sample_rate":16000,"channels":1,'
        '"segment_seconds":5.0,"codec":"flac"}}'
    )

    live_ids: list[str] = []
    started_all = time.perf_counter()
    with conn.cursor() as cur:
        superuser = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
        if superuser and superuser[0]:
            cur.execute("SET LOCAL session_replication_role = replica")  # generated rows: skip the FK checks
        kept = recording_indexes(conn)
        secondary = [(name, ddl) for name, ddl in kept if not name.endswith("_pkey")]
        for name, _ in secondary:
            cur.execute(f'DROP INDEX "{name}"')
        columns = (
            "id, device_id, site_id, started_at, status, header, header_signature, consent_outcome, "
            "incident_category, segment_count, head_hash, last_activity_at, created_at, ended_at, "
            "retain_until, retain_reason, retain_extended_until, purge_state"
        )
        with cur.copy(f"COPY recordings ({columns}) FROM STDIN") as copy:
            chunk: list[str] = []
            for i in range(n):
                rid = str(uuid.UUID(bytes=rng.bytes(16), version=4))
                dev, site = devices[device_list[i]]
                status = status_of[i]
                outcome = "objected" if is_objected[i] else "given"
                if is_objected[i]:
                    reason = "objection: delete after 90 days"
                elif is_incident[i]:
                    reason = "incident: delete after 1095 days"
                else:
                    reason = f"{status}: delete after 30 days"
                if not purged[i]:
                    live_ids.append(rid)
                    data.live += 1
                    data.incidents_live += int(is_incident[i])
                header = header_template.format(rid=rid, dev=dev, t=iso[i], outcome=outcome, staff=device_list[i] % 97)
                chunk.append(
                    "\t".join(
                        (
                            rid,
                            dev,
                            site,
                            started_txt[i],
                            status,
                            header,
                            signatures[i % 1024],
                            outcome,
                            CATEGORIES[category_list[i]] if is_incident[i] else "\\N",
                            str(segments[i]),
                            hashes[i % 1024],
                            ended_txt[i],
                            started_txt[i],
                            ended_txt[i],
                            retain_txt[i],
                            reason,
                            "\\N",
                            "purged" if purged[i] else "\\N",
                        )
                    )
                )
                if len(chunk) >= 20_000:
                    copy.write("\n".join(chunk) + "\n")
                    chunk.clear()
            if chunk:
                copy.write("\n".join(chunk) + "\n")
        copied = time.perf_counter() - started_all
        t = time.perf_counter()
        proposed = {index.name for index in PROPOSED}
        for name, ddl in secondary:
            if name not in proposed:  # phase 1 measures without them (the schema now ships them)
                cur.execute(ddl)
        indexed = time.perf_counter() - t
        with cur.copy("COPY sealed_keys (recording_id, key_id, sealed) FROM STDIN") as copy:
            sealed = rng.bytes(80)
            for rid in live_ids:
                copy.write_row((rid, key_id, sealed))
    conn.commit()
    print(
        f"  loaded {n:,} recordings in {copied:.1f} s (COPY), rebuilt {len(secondary)} secondary indexes in "
        f"{indexed:.1f} s; {data.live:,} live ({data.incidents_live:,} live incidents), "
        f"{len(live_ids):,} sealed keys"
    )
    return data


def analyze(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE recordings")
        conn.execute("VACUUM ANALYZE sealed_keys")


# --------------------------------------------------------------------------- measuring


@dataclass
class Phase:
    name: str
    latencies: dict[str, list[float]]
    rows: dict[str, list[int]]
    plans: dict[str, str]
    stale_ms: float
    server_ms: dict[str, list[float]]  # PostgreSQL's own execution time (EXPLAIN ANALYZE, timing off)
    buffers: dict[str, list[int]]  # shared buffers touched per query: load-independent


def sql_of(session: Session, search: Search, limit: int) -> str:
    compiled = search.statement(limit).compile(
        dialect=session.get_bind().dialect, compile_kwargs={"literal_binds": True}
    )
    return str(compiled)


def server_side(sessions: sessionmaker[Session], search: Search, limit: int) -> tuple[float, int]:
    """(execution ms, shared buffers hit + read) of the main query, from EXPLAIN (ANALYZE, BUFFERS)."""
    with sessions() as session:
        sql = f"EXPLAIN (ANALYZE, BUFFERS, TIMING OFF, FORMAT JSON) {sql_of(session, search, limit)}"
        doc = session.connection().exec_driver_sql(sql).scalar_one()
    top = (json.loads(doc) if isinstance(doc, str) else doc)[0]
    plan = top["Plan"]
    return float(top["Execution Time"]), int(plan["Shared Hit Blocks"]) + int(plan["Shared Read Blocks"])


def explain(sessions: sessionmaker[Session], search: Search, limit: int) -> str:
    """The plan's node lines (EXPLAIN ANALYZE), compact."""
    with sessions() as session:
        sql = f"EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) {sql_of(session, search, limit)}"
        lines = session.connection().exec_driver_sql(sql).all()
    keep = [str(r[0]) for r in lines if not str(r[0]).lstrip().startswith(("Planning", "Execution"))]
    return "\n".join("      " + line for line in keep[:8])


def run_phase(name: str, sessions: sessionmaker[Session], todo: list[Search], limit: int) -> Phase:
    with sessions() as session:  # warm the pool and the catalogue caches
        list(session.scalars(todo[0].statement(limit)))
    latencies: dict[str, list[float]] = {s: [] for s in SHAPES}
    counts: dict[str, list[int]] = {s: [] for s in SHAPES}
    for search in todo:
        start = time.perf_counter()
        with sessions() as session:
            found = list(session.scalars(search.statement(limit)))  # the listing never loads sealed keys
        latencies[search.shape].append(time.perf_counter() - start)
        counts[search.shape].append(len(found))
    server_ms: dict[str, list[float]] = {s: [] for s in SHAPES}
    buffers: dict[str, list[int]] = {s: [] for s in SHAPES}
    for search in todo:
        ms, blocks = server_side(sessions, search, limit)
        server_ms[search.shape].append(ms / 1000)
        buffers[search.shape].append(blocks)
    plans = {shape: explain(sessions, next(s for s in todo if s.shape == shape), limit) for shape in SHAPES}
    # The route also runs expire_stale() before every search: its query, timed alone.
    cutoff = datetime.now(UTC) - timedelta(seconds=600)
    stale = select(Recording).where(Recording.status == "open", Recording.last_activity_at < cutoff)
    times = []
    for _ in range(50):
        start = time.perf_counter()
        with sessions() as session:
            list(session.scalars(stale))
        times.append(time.perf_counter() - start)
    return Phase(name, latencies, counts, plans, float(np.median(times) * 1000), server_ms, buffers)


def pct(values: list[float]) -> tuple[float, float]:
    p50, p95 = np.percentile(values, [50, 95]) * 1000
    return float(p50), float(p95)


def print_phase(phase: Phase) -> None:
    print(f"\n  {phase.name}:")
    every: list[float] = []
    for shape in SHAPES:
        values = phase.latencies[shape]
        every += values
        p50, p95 = pct(values)
        s50, s95 = pct(phase.server_ms[shape])
        rows, blocks = np.mean(phase.rows[shape]), np.mean(phase.buffers[shape])
        print(
            f"    {shape:<18} ORM p50 {p50:7.2f} ms  p95 {p95:7.2f} ms | in PostgreSQL p50 {s50:7.2f} ms"
            f"  p95 {s95:7.2f} ms, {blocks:7.0f} buffers | {rows:.0f} rows ({len(values)} queries)"
        )
    p50, p95 = pct(every)
    s50, s95 = pct([x for v in phase.server_ms.values() for x in v])
    print(
        f"    {'all':<18} ORM p50 {p50:7.2f} ms  p95 {p95:7.2f} ms | in PostgreSQL p50 {s50:7.2f} ms  p95 {s95:7.2f} ms"
    )
    print(f"    expire_stale()'s query alone (runs before every search): median {phase.stale_ms:.2f} ms")
    for shape in SHAPES:
        print(f"    plan, {shape}:\n{phase.plans[shape]}")


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="recordings to load (default 1000000)")
    parser.add_argument("--sites", type=int, default=200, help="sites, 5 devices each (default 200)")
    parser.add_argument("--days", type=int, default=365, help="the recordings span this many days (default 365)")
    parser.add_argument("--incident-rate", type=float, default=0.05, help="share flagged as incidents (default 0.05)")
    parser.add_argument("--queries", type=int, default=200, help="queries per shape and phase (default 200)")
    parser.add_argument("--limit", type=int, default=100, help="the route's limit (default 100, its default)")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--keep-db", action="store_true", help="do not drop the database at the end")
    args = parser.parse_args()
    if args.sites < 3 or args.days < 8 or args.rows < 1:
        parser.error("need at least 3 sites, 8 days and 1 row")
    started, load_at_start = time.perf_counter(), load_average()
    print("Countersign officer search benchmark: GET /v1/evidence's query on PostgreSQL")
    print(
        f"  {args.rows:,} recordings, {args.sites} sites x 5 devices, {args.days} days, "
        f"{args.incident_rate:.0%} incidents; {args.queries} queries per shape, limit {args.limit}; "
        f"{os.cpu_count()} CPUs"
    )
    print(f"  code: {revision()}; load average now {load_at_start}")

    database = f"bench_search_{os.getpid()}"
    url = f"postgresql+psycopg://root@127.0.0.1:5432/{database}"
    raw_url = f"postgresql://root@127.0.0.1:5432/{database}"
    rng = np.random.default_rng(args.seed)
    now = datetime.now(UTC).replace(microsecond=0)
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{database}"')
        version = admin.execute("SHOW server_version").fetchone()
        settings = admin.execute(
            "SELECT string_agg(name || '=' || current_setting(name), ', ' ORDER BY name) FROM pg_settings"
            " WHERE name IN ('shared_buffers', 'work_mem', 'random_page_cost', 'effective_cache_size')"
        ).fetchone()
    print(f"  PostgreSQL {version[0] if version else '?'}: {settings[0] if settings else '?'}")
    engine = None
    try:
        with tempfile.TemporaryDirectory(prefix="countersign-bench-search-") as tmp:
            t = time.perf_counter()
            key_id = server_init(Path(tmp) / "data", url)
            print(f"  database {database}: schema by `countersign server init` in {time.perf_counter() - t:.1f} s")
        with psycopg.connect(raw_url) as conn:
            current = recording_indexes(conn)
            print("  indexes on recordings as created:")
            for _, ddl in current:
                print(f"    {ddl}")
            t = time.perf_counter()
            data = load(conn, rng, args, now, key_id)
        t = time.perf_counter()
        analyze(raw_url)
        print(f"  VACUUM ANALYZE in {time.perf_counter() - t:.1f} s")

        todo = searches(rng, data.sites, now, args.days, args.queries)
        order = rng.permutation(len(todo))
        todo = [todo[i] for i in order]  # shapes interleaved, same order in both phases
        engine = make_engine(url)
        sessions = make_sessionmaker(engine)
        before = run_phase("phase 1, the schema's current indexes", sessions, todo, args.limit)
        print_phase(before)

        t = time.perf_counter()
        for index in PROPOSED:
            index.create(engine)
        analyze(raw_url)
        print(f"\n  built the proposed indexes + ANALYZE in {time.perf_counter() - t:.1f} s:")
        with psycopg.connect(raw_url) as conn:
            for name, ddl in recording_indexes(conn):
                if name in {i.name for i in PROPOSED}:
                    size = conn.execute("SELECT pg_size_pretty(pg_relation_size(%s::regclass))", (name,)).fetchone()
                    print(f"    {ddl}  ({size[0] if size else '?'})")
        after = run_phase("phase 2, with the proposed indexes", sessions, todo, args.limit)
        print_phase(after)

        for label, attr in (("ORM, as the route runs it", "latencies"), ("inside PostgreSQL", "server_ms")):
            print(f"\n{label}:")
            print("shape               current p50    p95 | proposed p50    p95 | p95 gain | buffers before/after")
            for shape in (*SHAPES, "all"):
                bd, ad = getattr(before, attr), getattr(after, attr)
                b = bd[shape] if shape != "all" else [x for v in bd.values() for x in v]
                a = ad[shape] if shape != "all" else [x for v in ad.values() for x in v]
                bb = before.buffers[shape] if shape != "all" else [x for v in before.buffers.values() for x in v]
                ab = after.buffers[shape] if shape != "all" else [x for v in after.buffers.values() for x in v]
                (b50, b95), (a50, a95) = pct(b), pct(a)
                print(
                    f"{shape:<18} {b50:11.2f} {b95:6.2f} | {a50:12.2f} {a95:6.2f} | {b95 / a95:7.1f}x"
                    f" | {np.mean(bb):7.0f} / {np.mean(ab):.0f}"
                )
        print("\nproposed for api/core/models.py (after the Recording class):")
        print("\n".join("    " + line for line in PROPOSED_SOURCE.splitlines()))
    finally:
        if engine is not None:
            engine.dispose()
        if not args.keep_db:
            with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        else:
            print(f"  kept database {database}")
    print(f"\nrun time {time.perf_counter() - started:.1f} s; load average {load_average()} (at start {load_at_start})")


if __name__ == "__main__":
    main()
