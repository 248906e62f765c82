"""The audit log: append-only guard, hash chain, signed checkpoints, offline verification.

Tamper tests go straight to the database as an attacker with DDL rights would
(dropping the append-only triggers first), then export through the API and
check that `verify_export` - the code behind `countersign audit verify` -
detects the change and names where it is.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, func, select, text, update
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.exc import DatabaseError

from api.bootstrap import InitResult
from api.core.audit import checkpoint_now, record_committed
from api.core.guards import APPEND_ONLY_TABLES
from api.core.models import AccessLog, AuditCheckpoint, AuditHead, AuditNode
from api.core.settings import Settings
from evidence.audit_log import GENESIS, VerifyReport, chain_hash, entry_hash, verify_export
from tests.conftest import World, bearer, countersign


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # Frequent checkpoints, so tampering lands between signed points.
    return Settings(data_dir=tmp_path / "server", env="development", audit_checkpoint_entries=5)


def services(client: TestClient):  # type: ignore[no-untyped-def]
    return client.app.state.services  # type: ignore[attr-defined]


def public_key(initialised: InitResult) -> bytes:
    return bytes.fromhex(initialised.service_public_key)


def activity(client: TestClient, world: World, recordings: int = 2) -> None:
    for _ in range(recordings):
        rec = world.device.new_recording()
        world.device.add_segments(rec, 2)
        client.post("/v1/recordings", json=rec.create_body(), headers=world.device.auth)
        for seg in rec.segments:
            client.put(
                f"/v1/recordings/{rec.id}/segments/{seg.index}",
                content=seg.envelope,
                headers=world.device.segment_headers(seg),
            )
        client.post(f"/v1/evidence/{rec.id}/audio", json={"purpose": "audit test read"}, headers=bearer(world.officer))
    client.get("/v1/evidence", headers=bearer(world.admin))  # a denied attempt


def export(client: TestClient, world: World, **params: int) -> list[str]:
    reply = client.get("/v1/audit/export", params=params, headers=bearer(world.auditor))
    assert reply.status_code == 200, reply.text
    return reply.text.splitlines()


def verify(client: TestClient, world: World, initialised: InitResult) -> VerifyReport:
    return verify_export(export(client, world), public_key(initialised))


def attacker_sql(client: TestClient, *statements: str) -> None:
    """Drop the guards and run raw SQL, as someone with a database shell would.

    Statements are written in SQLite's dialect; on PostgreSQL the blob literals
    x'..' become decode('..', 'hex') (x'..' is a bit string there) and the session
    runs in UTC so zone-less timestamp literals mean what they mean on SQLite.
    """
    with services(client).engine.begin() as conn:
        postgres = conn.dialect.name == "postgresql"
        if postgres:
            conn.execute(text("SET LOCAL TIME ZONE 'UTC'"))
        for table in APPEND_ONLY_TABLES:
            if postgres:
                conn.execute(text(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}"))
                continue
            for op in ("update", "delete"):
                conn.execute(text(f"DROP TRIGGER IF EXISTS {table}_no_{op}"))
        for statement in statements:
            if postgres:
                statement = re.sub(r"x'([0-9a-f]*)'", r"decode('\1', 'hex')", statement)
            conn.execute(text(statement))


def test_untouched_log_verifies(client: TestClient, world: World, initialised: InitResult) -> None:
    activity(client, world)
    report = verify(client, world, initialised)
    assert report.ok, report.problems
    assert report.entries >= 20 and report.checkpoints >= 4
    assert report.first_seq == 1 and report.last_checkpoint == report.last_seq


def test_wrong_public_key_fails(client: TestClient, world: World) -> None:
    activity(client, world, 1)
    report = verify_export(export(client, world), bytes(32))
    assert not report.ok and "signature" in report.problems[0]


def test_range_export_verifies(client: TestClient, world: World, initialised: InitResult) -> None:
    activity(client, world)
    report = verify_export(export(client, world, after=7, until=12), public_key(initialised))
    assert report.ok, report.problems
    assert report.first_seq == 8 and report.last_seq is not None and report.last_seq >= 12


@pytest.mark.parametrize("table", APPEND_ONLY_TABLES)
def test_database_guard_rejects_update_and_delete(client: TestClient, world: World, table: str) -> None:
    activity(client, world, 1)
    model = {"access_log": AccessLog, "audit_checkpoints": AuditCheckpoint, "audit_nodes": AuditNode}[table]
    with services(client).sessions() as session:
        checkpoint_now(session)  # a signed tree head: nodes exist
        session.commit()
        key = sa_inspect(model).primary_key[0]
        with pytest.raises(DatabaseError, match="append-only"):
            session.execute(update(model).values({key.name: key}))
        session.rollback()
        with pytest.raises(DatabaseError, match="append-only"):
            session.execute(delete(model))
        session.rollback()
        assert session.scalar(select(func.count()).select_from(model))


def test_edited_field_is_located(client: TestClient, world: World, initialised: InitResult) -> None:
    activity(client, world)
    attacker_sql(client, "UPDATE access_log SET purpose = 'routine check' WHERE action = 'api:evidence:read'")
    with services(client).sessions() as session:
        first = session.scalar(
            select(AccessLog.seq).where(AccessLog.action == "api:evidence:read").order_by(AccessLog.seq)
        )
    report = verify(client, world, initialised)
    assert not report.ok
    assert f"entry seq {first} " in report.problems[0] and "altered" in report.problems[0]


def test_deleted_entry_is_located(client: TestClient, world: World, initialised: InitResult) -> None:
    activity(client, world)
    attacker_sql(client, "DELETE FROM access_log WHERE seq = 9")
    report = verify(client, world, initialised)
    assert not report.ok and "expected seq 9" in report.problems[0]


def test_swapped_entries_are_located(client: TestClient, world: World, initialised: InitResult) -> None:
    activity(client, world)
    attacker_sql(
        client,
        "UPDATE access_log SET seq = -1 WHERE seq = 6",
        "UPDATE access_log SET seq = 6 WHERE seq = 7",
        "UPDATE access_log SET seq = 7 WHERE seq = -1",
    )
    report = verify(client, world, initialised)
    assert not report.ok and "entry seq 6 " in report.problems[0]


def test_truncated_tail_is_detected(client: TestClient, world: World, initialised: InitResult) -> None:
    activity(client, world)
    with services(client).sessions() as session:
        last = session.scalar(select(AuditHead.checkpoint_seq))
        keep = last - 3
        head = session.scalar(select(AccessLog.chain_hash).where(AccessLog.seq == keep))
    attacker_sql(
        client,
        f"DELETE FROM access_log WHERE seq > {keep}",
        f"UPDATE audit_head SET seq = {keep}, chain_hash = x'{head.hex()}', checkpoint_seq = {keep}",
    )
    report = verify(client, world, initialised)
    assert not report.ok
    assert f"checkpoint seq {last}" in report.problems[0]


def test_rewritten_history_fails_at_the_checkpoint(client: TestClient, world: World, initialised: InitResult) -> None:
    """Edit an entry and recompute every hash after it: only the signed checkpoints can tell."""
    activity(client, world)
    with services(client).sessions() as session:
        rows = list(session.scalars(select(AccessLog).order_by(AccessLog.seq)))
    target = next(r for r in rows if r.action == "api:evidence:read")
    statements, prev = [], GENESIS
    for row in rows:
        fields = {
            "seq": row.seq, "at": row.at.isoformat(timespec="microseconds"), "actor": row.actor,
            "action": row.action, "target": row.target, "outcome": row.outcome,
            "purpose": "nothing to see" if row.seq == target.seq else row.purpose, "detail": row.detail,
        }  # fmt: skip
        leaf = entry_hash(fields)
        prev = chain_hash(prev, leaf)
        if row.seq >= target.seq:
            purpose = " , purpose = 'nothing to see'" if row.seq == target.seq else ""
            statements.append(
                f"UPDATE access_log SET entry_hash = x'{leaf.hex()}', chain_hash = x'{prev.hex()}'{purpose} "
                f"WHERE seq = {row.seq}"
            )
    attacker_sql(client, *statements, f"UPDATE audit_head SET chain_hash = x'{prev.hex()}'")
    report = verify(client, world, initialised)
    assert not report.ok
    assert "differs from what the service signed" in report.problems[0]


def test_forged_entry_appended_is_never_signed(client: TestClient, world: World, initialised: InitResult) -> None:
    """A row inserted behind the service's back, chained correctly: the service refuses to sign past it."""
    activity(client, world)
    with services(client).sessions() as session:
        head = session.scalar(select(AuditHead))
        assert head is not None
        seq, prev = head.seq + 1, head.chain_hash
    forged = {
        "seq": seq, "at": "2026-01-01T00:00:00.000000+00:00", "actor": "user:nobody", "action": "api:evidence:read",
        "target": "recording:x", "outcome": "allowed", "purpose": "cover story", "detail": {},
    }  # fmt: skip
    leaf = entry_hash(forged)
    link = chain_hash(prev, leaf)
    attacker_sql(
        client,
        "INSERT INTO access_log "
        "(seq, at, actor, action, target, outcome, purpose, detail, entry_hash, chain_hash, seal) "
        f"VALUES ({seq}, '2026-01-01 00:00:00.000000', 'user:nobody', 'api:evidence:read', 'recording:x', 'allowed', "
        f"'cover story', '{{}}', x'{leaf.hex()}', x'{link.hex()}', x'{bytes(32).hex()}')",
        f"UPDATE audit_head SET seq = {seq}, chain_hash = x'{link.hex()}'",
    )
    activity(client, world, 1)  # the service goes on appending after the forgery
    report = verify(client, world, initialised)
    assert not report.ok
    assert f"from seq {seq} " in report.problems[0] and "not covered" in report.problems[0]


def test_appended_line_in_export_file_is_detected(client: TestClient, world: World, initialised: InitResult) -> None:
    activity(client, world, 1)
    lines = export(client, world)
    entries = [line for line in lines if '"type": "entry"' in line]
    forged = entries[-1].replace('"seq": ', '"seq": 1000').replace("api:", "xxx:")
    report = verify_export([*lines, forged], public_key(initialised))
    assert not report.ok


def test_concurrent_appends_keep_one_linear_chain(client: TestClient, world: World, initialised: InitResult) -> None:
    factory = services(client).sessions
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(25):
                record_committed(factory, actor=f"test:{n}", action="test:concurrency:append", detail={"i": i})
        except BaseException as exc:  # report any failure from the thread
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    report = verify(client, world, initialised)
    assert report.ok, report.problems
    with factory() as session:
        seqs = list(session.scalars(select(AccessLog.seq).order_by(AccessLog.seq)))
    assert seqs == list(range(1, len(seqs) + 1))


def test_custody_lists_one_recordings_events(client: TestClient, world: World) -> None:
    activity(client, world, 1)
    with services(client).sessions() as session:
        target = session.scalar(select(AccessLog.target).where(AccessLog.action == "api:evidence:read"))
    rid = target.split(":", 1)[1]
    reply = client.get(f"/v1/audit/custody/{rid}", headers=bearer(world.officer))
    assert reply.status_code == 200
    actions = [e["action"] for e in reply.json()]
    assert actions[0] == "api:recording:create" and "api:evidence:read" in actions
    assert all(e["target"] == target for e in reply.json())
    assert client.get(f"/v1/audit/custody/{rid}", headers=bearer(world.other_officer)).status_code == 404
    assert client.get(f"/v1/audit/custody/{rid}", headers=bearer(world.admin)).status_code == 403


def test_checkpoints_and_key_are_public(client: TestClient, world: World, initialised: InitResult) -> None:
    activity(client, world, 1)
    cps = client.get("/v1/audit/checkpoints").json()
    assert cps and all(len(c["signature"]) == 128 for c in cps)
    assert client.get("/v1/audit/public-key").json()["public_key"] == initialised.service_public_key


def test_cli_verify_offline(
    client: TestClient, world: World, initialised: InitResult, settings: Settings, tmp_path: Path
) -> None:
    activity(client, world, 1)
    path = tmp_path / "audit.jsonl"
    path.write_text("\n".join(export(client, world)) + "\n")
    ok = countersign("audit", "verify", str(path), "--data", str(settings.data_dir))
    assert ok.stdout.startswith("OK:")
    lines = path.read_text().splitlines()
    lines[3] = lines[3].replace('"allowed"', '"denied"')
    path.write_text("\n".join(lines) + "\n")
    bad = countersign("audit", "verify", str(path), "--public-key", initialised.service_public_key, check=False)
    assert bad.returncode == 1 and "FAILED" in bad.stdout and "entry seq 3 " in bad.stdout
    missing = countersign("audit", "verify", str(path), check=False)
    assert missing.returncode == 2 and "--public-key" in missing.stderr
