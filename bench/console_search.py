"""The console's search page at scale: GET /console/search over a million recordings in PostgreSQL.

A fresh database (bench_console_search_<pid>, dropped at the end) gets its schema from the service's
own init (api.bootstrap.init_data_dir), then a year of recordings is bulk-loaded with COPY by
bench/search.py's loader (sites of uneven size, 5 devices each, ~5% incidents, a few interrupted or
objected; routine recordings older than 30 days purged as the shipped defaults would have), plus
case work: notes on some live recordings (COPY) and two holds, one listing recordings, one scoped to
a device and a fortnight. A signed-in console officer of three sites then loads the search page through
TestClient, in process, for queries mixing every filter (site, dates, device, staff code, incident,
status, held, note text).

The baseline is the page's own SQL statement (api.search.evidence_search with the same Narrowing),
run directly through the ORM in a fresh Session, so page / baseline is what the page adds around the
query: the console session check, the audit entry and its commit, hold lookup, rendering, HTTP.
Each shape's plan is EXPLAINed and a sequential scan on recordings is reported.

    .venv/bin/python -m bench.console_search                  # 1,000,000 rows, 8 shapes x 6 queries
    .venv/bin/python -m bench.console_search --rows 100000    # quicker
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import psycopg  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from sqlalchemy import Select  # noqa: E402
from sqlalchemy.engine import Dialect  # noqa: E402

from api.app import create_app  # noqa: E402
from api.bootstrap import approve_user, init_data_dir  # noqa: E402
from api.core.db import make_engine  # noqa: E402
from api.core.models import Recording, utcnow  # noqa: E402
from api.core.settings import Settings  # noqa: E402
from api.search import Narrowing, evidence_search  # noqa: E402
from bench._meta import load_average, revision  # noqa: E402
from bench.search import PG_ADMIN_URL, PROPOSED, analyze, load  # noqa: E402
from retention.decide import HoldFacts  # noqa: E402
from retention.store import active_holds  # noqa: E402
from tests.console.support import provision_login, signed_in  # noqa: E402

LIMIT = 100  # the page's SEARCH_LIMIT; the page asks for one more row to say "more match"
WORDS = ("customer", "counter", "queue", "receipt", "manager", "called", "left", "calm", "phone", "waited")


@dataclass(frozen=True)
class Query:
    shape: str
    params: dict[str, str]  # the page's query string
    site: str | None
    since: datetime | None
    until: datetime | None
    incident: bool | None
    narrowing: Narrowing

    def statement(self, officer_sites: frozenset[str], holds: Sequence[HoldFacts]) -> Select[Recording, str]:
        """The page's statement (api.routes.evidence.search_evidence builds the same, holds loaded first)."""
        sites = officer_sites if self.site is None else officer_sites & {self.site}
        return evidence_search(sites, self.since, self.until, self.incident, LIMIT + 1, None, self.narrowing, holds)


@dataclass
class World:
    sites: list[str]
    devices: list[tuple[str, str, str]]  # (id, name, site)
    officer_sites: frozenset[str]
    staff: dict[str, list[str]] = field(default_factory=dict)  # site -> staff codes seen there


def day_of(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d")


def queries(rng: np.random.Generator, world: World, now: datetime, days: int, per_shape: int) -> list[Query]:
    """Shapes mixing the filters; the narrowing mirrors what the page builds from the same parameters."""
    stale = now - timedelta(seconds=600)
    mine = sorted(world.officer_sites)
    my_devices = [d for d in world.devices if d[2] in world.officer_sites]
    out: list[Query] = []

    def add(shape: str, params: dict[str, str], site: str | None = None, days_back: int | None = None,
            incident: bool | None = None, **narrow: Any) -> None:  # fmt: skip
        since = until = None
        if days_back is not None:
            start = now - timedelta(days=int(rng.integers(days_back, days)))
            since = datetime.combine(start.date(), datetime.min.time(), tzinfo=UTC)
            until = since + timedelta(days=days_back + 1)
            params = {**params, "from": day_of(since), "to": day_of(until - timedelta(days=1))}
        if site:
            params = {**params, "site": site}
        if incident is not None:
            params = {**params, "incident": "yes" if incident else "no"}
        out.append(Query(shape, params, site, since, until, incident, Narrowing(stale_before=stale, **narrow)))

    for _ in range(per_shape):
        site = str(rng.choice(mine))
        dev_id, dev_name, dev_site = my_devices[int(rng.integers(len(my_devices)))]
        staff = str(rng.choice(world.staff[site]))
        word = str(rng.choice(WORDS))
        add("site+7d", {}, site, 7)
        add("device name", {"device": dev_name}, device=dev_name)
        add("staff code", {"staff": staff}, site, staff=staff)
        add("status interrupted", {"status": "interrupted"}, site, status="interrupted")
        add("held", {"held": "yes"}, held=True)
        add("not held+30d", {"held": "no"}, site, 30, held=False)
        add("note text", {"note": word}, note=word)
        add(
            "all filters",
            {"device": dev_id, "staff": staff, "status": "complete", "held": "no", "note": word},
            dev_site,
            90,
            False,
            device=dev_id,
            staff=staff,
            status="complete",
            held=False,
            note=word,
        )
    order = rng.permutation(len(out))
    return [out[i] for i in order]


def casework(
    conn: psycopg.Connection[Any],
    rng: np.random.Generator,
    officer_id: str,
    notes: int,
    now: datetime,
    sites: frozenset[str],
) -> str:
    """Notes on random live recordings, an explicit hold on 100 of them, a scoped hold on one device's
    fortnight; both holds in the officer's sites (a hold elsewhere is never shown, so never searched)."""
    live = [str(r[0]) for r in conn.execute("SELECT id FROM recordings WHERE purge_state IS NULL").fetchall()]
    mine = [
        str(r[0])
        for r in conn.execute(
            "SELECT id FROM recordings WHERE purge_state IS NULL AND site_id = ANY(%s) ORDER BY started_at DESC"
            " LIMIT 5000",
            (sorted(sites),),
        ).fetchall()
    ]
    picked = rng.choice(len(live), size=min(notes, len(live)), replace=False).tolist()
    with conn.cursor() as cur:
        with cur.copy("COPY recording_notes (id, recording_id, author_id, created_at, text) FROM STDIN") as copy:
            for i in picked:
                text = " ".join(str(w) for w in rng.choice(WORDS, size=6)) + f" (case {i})"
                copy.write_row((str(uuid.uuid4()), live[i], officer_id, now, text))
        explicit = str(uuid.uuid4())
        cur.execute(
            "INSERT INTO holds (id, case_ref, reason, site_id, scoped, created_at, created_by)"
            " SELECT %s, 'CASE-LIST', 'bench: explicit', site_id, false, %s, 'bench' FROM recordings WHERE id = %s",
            (explicit, now, mine[int(rng.integers(len(mine)))]),
        )
        site = conn.execute("SELECT site_id FROM holds WHERE id = %s", (explicit,)).fetchone()
        assert site is not None
        ids = conn.execute(
            "SELECT id FROM recordings WHERE site_id = %s AND purge_state IS NULL LIMIT 100", (site[0],)
        ).fetchall()
        with cur.copy("COPY hold_recordings (hold_id, recording_id) FROM STDIN") as copy:
            for (rid,) in ids:
                copy.write_row((explicit, rid))
        device = conn.execute(
            "SELECT device_id, site_id FROM recordings WHERE id = %s", (mine[int(rng.integers(len(mine)))],)
        ).fetchone()
        assert device is not None
        cur.execute(
            "INSERT INTO holds (id, case_ref, reason, site_id, scoped, device_id, started_from, started_to,"
            " created_at, created_by) VALUES (%s, 'CASE-SCOPE', 'bench: scoped', %s, true, %s, %s, %s, %s, 'bench')",
            (str(uuid.uuid4()), device[1], device[0], now - timedelta(days=20), now - timedelta(days=6), now),
        )
    conn.commit()
    return str(site[0])


def pct(values: list[float]) -> tuple[float, float]:
    p50, p95 = np.percentile(values, [50, 95]) * 1000
    return float(p50), float(p95)


def plan_of(conn: psycopg.Connection[Any], sql: str) -> tuple[str, float]:
    rows = conn.execute(f"EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) {sql}").fetchall()
    lines = [str(r[0]) for r in rows]
    ms = next((float(x.split()[2]) for x in lines if x.startswith("Execution Time")), float("nan"))
    return "\n".join("      " + x for x in lines if not x.startswith(("Planning", "Execution"))), ms


LIVE_INDEX = "ix_recordings_live_site_started"  # migration 0014
LIVE_INDEX_DDL = (
    f"CREATE INDEX IF NOT EXISTS {LIVE_INDEX} ON recordings (site_id, started_at DESC) WHERE purge_state IS NULL"
)


@dataclass
class Phase:
    page: dict[str, list[float]]
    sql: dict[str, list[float]]

    def every(self) -> list[float]:
        return [x for v in self.page.values() for x in v]


def measure(
    label: str,
    app: Any,
    officer: TestClient,
    world: World,
    todo: list[Query],
    raw_url: str,
    dialect: Dialect,
    plans: bool,
) -> Phase:
    """Each query as the page (signed-in GET) and as its SQL alone; then each shape's plan."""
    services = app.state.services
    phase = Phase({}, {})
    found: dict[str, list[int]] = {}
    with services.sessions() as session:
        holds = active_holds(session)
    for q in todo:
        t = time.perf_counter()
        with services.sessions() as session:
            rows = len(session.execute(q.statement(world.officer_sites, holds)).all())
        phase.sql.setdefault(q.shape, []).append(time.perf_counter() - t)
        found.setdefault(q.shape, []).append(rows)
        t = time.perf_counter()
        reply = officer.get("/console/search", params=q.params)
        phase.page.setdefault(q.shape, []).append(time.perf_counter() - t)
        assert reply.status_code == 200, (q, reply.text[:500])
    print(f"\n  {label}:")
    print(
        "  shape               page p50    p95 | SQL alone p50    p95 | p95 ratio | rows | in PG | recordings read by"
    )
    with psycopg.connect(raw_url) as conn:
        for shape in dict.fromkeys(q.shape for q in todo):
            example = next(q for q in todo if q.shape == shape)
            statement = example.statement(world.officer_sites, holds)
            compiled = statement.compile(dialect=dialect, compile_kwargs={"literal_binds": True})
            plan, ms = plan_of(conn, str(compiled))
            (p50, p95), (b50, b95) = pct(phase.page[shape]), pct(phase.sql[shape])
            access = next((x.strip() for x in plan.splitlines() if " on recordings" in x), "?")
            print(
                f"  {shape:<18} {p50:9.1f} {p95:6.1f} | {b50:12.1f} {b95:6.1f} | {p95 / b95:8.1f}x"
                f" | {np.mean(found[shape]):4.0f} | {ms:5.1f} ms | {access.removeprefix('->').strip()}"
            )
            if plans or "Seq Scan on recordings" in plan:
                print(f"    plan{' (SEQ SCAN)' if 'Seq Scan on recordings' in plan else ''}:\n{plan}")
    (p50, p95), (b50, b95) = pct(phase.every()), pct([x for v in phase.sql.values() for x in v])
    print(f"  {'all':<18} {p50:9.1f} {p95:6.1f} | {b50:12.1f} {b95:6.1f} | {p95 / b95:8.1f}x | ({len(todo)} queries)")
    return phase


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="recordings to load (default 1000000)")
    parser.add_argument("--sites", type=int, default=10, help="sites, 5 devices each (default 10)")
    parser.add_argument("--days", type=int, default=365, help="the recordings span this many days (default 365)")
    parser.add_argument("--incident-rate", type=float, default=0.05)
    parser.add_argument("--notes", type=int, default=5000, help="notes on random live recordings (default 5000)")
    parser.add_argument("--per-shape", type=int, default=6, help="queries per shape (8 shapes; default 6)")
    parser.add_argument("--plans", action="store_true", help="print every shape's plan, not only seq scans")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--keep-db", action="store_true", help="do not drop the database at the end")
    args = parser.parse_args()
    if args.sites < 3 or args.days < 100 or args.rows < 1000:
        parser.error("need at least 3 sites, 100 days and 1000 rows")
    started, load_at_start = time.perf_counter(), load_average()
    print("Countersign console search benchmark: GET /console/search on PostgreSQL, signed-in officer")
    print(f"  {args.rows:,} recordings, {args.sites} sites x 5 devices, {args.days} days; {os.cpu_count()} CPUs")
    print(f"  code: {revision()}; load average now {load_at_start}")

    database = f"bench_console_search_{os.getpid()}"
    url = f"postgresql+psycopg://root@127.0.0.1:5432/{database}"
    raw_url = f"postgresql://root@127.0.0.1:5432/{database}"
    rng = np.random.default_rng(args.seed)
    now = utcnow().replace(microsecond=0)
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{database}"')
    try:
        with tempfile.TemporaryDirectory(prefix="countersign-bench-console-") as tmp:
            settings = Settings(data_dir=Path(tmp) / "data", env="development", database_url=url)
            t = time.perf_counter()
            init = init_data_dir(settings)
            print(f"  database {database}: schema by init_data_dir in {time.perf_counter() - t:.1f} s")
            t = time.perf_counter()
            with psycopg.connect(raw_url) as conn:
                data = load(conn, rng, argparse.Namespace(**vars(args)), now, init.evidence_key_id)
            engine = make_engine(url)
            for index in PROPOSED:  # the loader leaves out bench/search.py's proposals; the schema ships them
                index.create(engine)
            engine.dispose()
            seeded = time.perf_counter() - t
            world = World(data.sites, [], frozenset(str(s) for s in rng.choice(data.sites, size=3, replace=False)))

            app = create_app(settings)
            with TestClient(app) as client:
                admin_auth = {"Authorization": f"Bearer {init.admin_token}"}
                made = client.post(
                    "/v1/users",
                    json={"name": "olivia", "role": "officer", "sites": sorted(world.officer_sites)},
                    headers=admin_auth,
                )
                assert made.status_code == 201, made.text
                approve_user(settings, "olivia")
                t = time.perf_counter()
                with psycopg.connect(raw_url) as conn:
                    held_site = casework(conn, rng, made.json()["id"], args.notes, now, world.officer_sites)
                    for dev_id, name, site in conn.execute("SELECT id, name, site_id FROM devices").fetchall():
                        world.devices.append((str(dev_id), str(name), str(site)))
                    for site in world.officer_sites:
                        codes = conn.execute(
                            "SELECT DISTINCT header -> 'consent' ->> 'staff_code' FROM recordings"
                            " WHERE site_id = %s AND purge_state IS NULL",
                            (site,),
                        ).fetchall()
                        # A code from another site too: a search that matches nothing walks the whole site.
                        world.staff[site] = [str(c[0]) for c in codes] + ["staff-none"]
                analyze(raw_url)
                seeded += time.perf_counter() - t
                print(
                    f"  seeding took {seeded:.1f} s in all (COPY, index rebuild, {args.notes:,} notes, 2 holds on"
                    f" {held_site}, VACUUM ANALYZE); officer of {', '.join(sorted(world.officer_sites))}"
                )
                login = provision_login(app, "olivia")
                officer = signed_in(app, login)
                todo = queries(rng, world, now, args.days, args.per_shape)
                officer.get("/console/search")  # warm: templates, pools, catalogue caches
                phases = []
                for label, with_index in (("without", False), ("with", True)):
                    with psycopg.connect(raw_url, autocommit=True) as conn:
                        if with_index:
                            t = time.perf_counter()
                            conn.execute(LIVE_INDEX_DDL)
                            conn.execute("ANALYZE recordings")
                            print(f"\n  built {LIVE_INDEX} + ANALYZE in {time.perf_counter() - t:.1f} s")
                        else:
                            conn.execute(f"DROP INDEX IF EXISTS {LIVE_INDEX}")
                    phases.append(
                        measure(f"{label} {LIVE_INDEX}", app, officer, world, todo, raw_url, engine.dialect, args.plans)
                    )
                print("\np95 of the page, without -> with the live index:")
                for shape in (*dict.fromkeys(q.shape for q in todo), "all"):
                    (_, b95), (_, a95) = (pct(ph.page[shape] if shape != "all" else ph.every()) for ph in phases)
                    print(f"  {shape:<18} {b95:7.1f} -> {a95:6.1f} ms ({b95 / a95:.1f}x)")
    finally:
        if not args.keep_db:
            with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        else:
            print(f"  kept database {database}")
    print(f"\nrun time {time.perf_counter() - started:.1f} s; load average {load_average()} (at start {load_at_start})")


if __name__ == "__main__":
    main()
