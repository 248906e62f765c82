"""The purge job: what it removes, what it leaves, and how it survives crashes, a second copy of itself and full disks.

Time passes by moving a recording's start into the past (tests never sleep to
wait for a date). Crashes are real: `countersign retention run` in a
subprocess is killed with SIGKILL at an injected point, or at arbitrary moments,
and then run again.
"""

from __future__ import annotations

import errno
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError
from typer.testing import CliRunner

import retention.purge
from api.core.models import AccessLog, Base, Recording, SealedKey, utcnow
from api.core.services import Services
from api.core.settings import Settings
from api.core.storage.interface import segment_key
from countersign.cli import app as cli_app
from evidence.envelope import open_segment
from evidence.errors import IntegrityError, KeyUnavailableError
from retention import job
from retention import models as _retention_tables  # noqa: F401  (registers them on Base.metadata)
from retention.decide import Keep, decide
from retention.policy import SHIPPED_DEFAULTS
from retention.purge import CRASH_ENV, PAUSE_ENV, verify_deletion_record
from retention.store import facts_of
from tests.conftest import REPO, World, bearer, cli_env, countersign
from tests.support.backends import POSTGRES_S3
from tests.support.retention_support import (
    PURPOSE,
    age,
    assert_intact,
    assert_purged_once,
    remains,
    services_of,
    upload,
)
from tests.support.world import request_deletion


def hold(client: TestClient, world: World, case: str, recordings: list[str]) -> str:
    body = {"case_ref": case, "reason": "litigation hold for this case", "recordings": recordings}
    reply = client.post("/v1/holds", json=body, headers=bearer(world.officer))
    assert reply.status_code == 201, reply.text
    hold_id: str = reply.json()["id"]
    return hold_id


# --------------------------------------------------------------------------- what a purge does


def test_expired_recording_is_purged_with_a_signed_tombstone(client: TestClient, world: World) -> None:
    svc = services_of(client)
    old, young = upload(client, world.device, 3), upload(client, world.device, 2)
    age(svc, old, 31)
    age(svc, young, 29)
    head_before = remains(svc, old)

    summary = job.run(svc)
    assert (summary.purged, summary.errors, summary.kept_by_hold) == ([old], {}, {})
    assert_purged_once(svc, old)
    assert_intact(svc, young, 2)
    assert head_before.sealed_keys == 1

    tomb = remains(svc, old).tombstone
    assert tomb is not None and tomb.record is not None and tomb.signature is not None
    assert tomb.rule == "default/routine" and "delete after 30 d" in tomb.reason
    record = tomb.record
    assert (record["recording_id"], record["segment_count"], record["rule"]) == (old, 3, "default/routine")
    assert record["actor"] == job.ACTOR and record["sealed_key_ids"] == tomb.sealed_key_ids
    public = bytes(svc.keys.signing_key.verify_key)  # type: ignore[union-attr]
    verify_deletion_record(record, tomb.signature, public)
    with pytest.raises(IntegrityError):
        verify_deletion_record({**record, "reason": "something kinder"}, tomb.signature, public)

    # Reads of what is gone: 410 with a clear message; it leaves the listing; the tombstone is there.
    officer = bearer(world.officer)
    for method, url in (("GET", f"/v1/evidence/{old}"), ("POST", f"/v1/evidence/{old}/audio")):
        reply = client.request(method, url, json={"purpose": PURPOSE} if method == "POST" else None, headers=officer)
        assert reply.status_code == 410 and "deleted" in reply.json()["detail"], reply.text
    assert old not in {r["id"] for r in client.get("/v1/evidence", headers=officer).json()}
    shown = client.get(f"/v1/evidence/{old}/tombstone", headers=officer).json()
    verify_deletion_record(
        shown["record"], bytes.fromhex(shown["signature"]), bytes.fromhex(shown["service_public_key"])
    )
    assert client.post(f"/v1/evidence/{young}/audio", json={"purpose": PURPOSE}, headers=officer).status_code == 200

    # Nothing is purged twice; the run itself is in the audit log.
    again = job.run(svc)
    assert again.purged == [] and again.ok
    assert_purged_once(svc, old)
    with svc.sessions() as session:
        runs = session.scalars(select(AccessLog).where(AccessLog.action == "retention:run:complete")).all()
    assert [r.detail["purged"] for r in runs] == [1, 0]


def test_after_a_purge_the_audio_is_unrecoverable_even_from_a_copy(client: TestClient, world: World) -> None:
    svc = services_of(client)
    rid = upload(client, world.device, 2)
    age(svc, rid, 40)
    copies = {i: svc.store.get(segment_key(rid, i)) for i in range(2)}
    with svc.sessions() as session:
        sealed = {k.key_id: k.sealed for k in session.scalars(select(SealedKey).where(SealedKey.recording_id == rid))}
    # Control: before the purge, the copy plus the sealed key decrypts.
    assert open_segment(svc.keys.unseal(sealed), uuid.UUID(rid), 0, False, copies[0])

    assert job.run(svc).purged == [rid]

    assert remains(svc, rid).objects == []
    with svc.sessions() as session:
        assert session.scalars(select(SealedKey).where(SealedKey.recording_id == rid)).all() == []
    with pytest.raises(KeyUnavailableError):
        svc.keys.unseal({})  # all that is left to unseal
    # Not even in the database files: rows were deleted with secure_delete and the WAL truncated.
    # SQLite only: that is where the service owns the files. PostgreSQL keeps dead tuples until
    # VACUUM and WAL per its archiving, so there the database's own backup/retention settings decide.
    if svc.engine.dialect.name != "sqlite":
        return
    data_dir = svc.settings.data_dir
    files = [p for p in data_dir.glob("countersign.db*") if p.is_file()]
    assert files
    for path in files:
        blob = path.read_bytes()
        assert not any(s in blob for s in sealed.values()), f"a sealed key survives in {path.name}"


def test_dry_run_changes_nothing_and_says_why(client: TestClient, world: World, settings: Settings) -> None:
    svc = services_of(client)
    old, young = upload(client, world.device, 1), upload(client, world.device, 1)
    age(svc, old, 45)

    def snapshot() -> tuple[dict[str, list[tuple[object, ...]]], dict[str, bytes]]:
        # Every row of every table (any backend), and every object.
        with svc.engine.connect() as connection:
            dump = {
                table.name: sorted(map(tuple, connection.execute(select(table)).all()), key=repr)
                for table in Base.metadata.sorted_tables
            }
        return dump, {k: svc.store.get(k) for k in svc.store.list("")}

    before = snapshot()
    summary = job.run(svc, dry_run=True)
    assert summary.purged == [] and [rid for rid, _ in summary.would_purge] == [old]
    assert "default/routine: delete after 30 d" in summary.would_purge[0][1]
    result = countersign("retention", "run", "--data", str(settings.data_dir), "--dry-run")
    assert f"would purge {old}" in result.stdout and "dry run: would purge 1" in result.stdout
    assert young not in result.stdout
    assert snapshot() == before


def test_officer_deletes_early_through_the_same_path(client: TestClient, world: World) -> None:
    """One officer asks, a second approves: the purge is the job's own path, with the officer's reason."""
    svc = services_of(client)
    rid = upload(client, world.device, 2)
    reason = "recorded by mistake: the customer had left"
    assert request_deletion(client, world.admin, rid, reason).status_code == 403
    other = request_deletion(client, world.other_officer, rid, reason)
    assert other.status_code == 404  # another site's recording is answered like a missing one
    assert_intact(svc, rid, 2)

    asked = request_deletion(client, world.officer, rid, reason)
    assert asked.status_code == 202, asked.text
    assert asked.json()["state"] == "pending"
    own = client.post(f"/v1/deletions/{asked.json()['id']}/approve", headers=bearer(world.officer))
    assert own.status_code == 403 and "second officer" in own.json()["detail"]  # one person alone: never
    assert_intact(svc, rid, 2)

    reply = client.post(f"/v1/deletions/{asked.json()['id']}/approve", headers=bearer(world.second_officer))
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["state"] == "purged" and body["tombstone"]["reason"] == reason and body["tombstone"]["rule"] is None
    assert body["request"]["state"] == "executed"
    assert_purged_once(svc, rid)
    again = request_deletion(client, world.officer, rid, reason)
    assert again.status_code == 410
    with svc.sessions() as session:
        shred = session.scalar(select(AccessLog).where(AccessLog.action == "retention:recording:shred"))
    assert shred is not None and shred.purpose == reason and shred.actor.startswith("user:")


# --------------------------------------------------------------------------- the CLI, crashes and concurrency


def _run(data: Path, *extra: str, crash: str | None = None) -> subprocess.CompletedProcess[str]:
    env = cli_env(**({CRASH_ENV: crash} if crash else {}))
    return countersign("retention", "run", "--data", str(data), *extra, env=env, check=False)


def _populate(client: TestClient, world: World, expired: int, segments: int = 2) -> tuple[list[str], list[str], str]:
    """`expired` recordings past their date, two young ones, and one past its date under a hold."""
    svc = services_of(client)
    old = [upload(client, world.device, segments) for _ in range(expired)]
    young = [upload(client, world.device, segments) for _ in range(2)]
    held = upload(client, world.device, segments)
    for rid in [*old, held]:
        age(svc, rid, 31)
    hold(client, world, "CASE-77", [held])
    return old, young, held


def _nothing_half_readable(svc: Services, old: list[str], keep: list[str], segments: int) -> None:
    for rid in old:
        r = remains(svc, rid)
        if r.purge_state is None:
            assert_intact(svc, rid, segments)
        else:  # once shredding started, the keys are gone: unreadable, whatever else is left
            assert r.sealed_keys == 0 and r.tombstone is not None, r
    for rid in keep:
        assert_intact(svc, rid, segments)


@pytest.mark.parametrize("point", ["shred", "object:2", "objects", "purge"])
def test_kill_9_at_each_step_then_rerun_finishes(
    client: TestClient, world: World, settings: Settings, point: str
) -> None:
    svc = services_of(client)
    old, young, held = _populate(client, world, expired=6)
    crashed = _run(settings.data_dir, crash=point)
    assert crashed.returncode == -signal.SIGKILL, (crashed.stdout, crashed.stderr)
    _nothing_half_readable(svc, old, [*young, held], 2)
    assert any(remains(svc, rid).purge_state is not None for rid in old)

    finished = _run(settings.data_dir)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert "kept by hold 1" in finished.stdout and "errors 0" in finished.stdout
    for rid in old:
        assert_purged_once(svc, rid)
    for rid in [*young, held]:
        assert_intact(svc, rid, 2)


def test_kill_9_at_arbitrary_moments(client: TestClient, world: World, settings: Settings) -> None:
    """SIGKILL a few moments after a run starts changing things, several times; every state in between is sound."""
    svc = services_of(client)
    old, young, held = _populate(client, world, expired=120, segments=1)

    def touched() -> tuple[int, int]:  # (shredding, purged): finalising a resumed batch changes it too
        with svc.sessions() as session:
            states = session.scalars(select(Recording.purge_state).where(Recording.purge_state.is_not(None))).all()
        return states.count("shredding"), states.count("purged")

    kills = 0
    # A batched purge of 120 recordings takes a fraction of a second: a short pause at each object
    # delete keeps the run alive long enough to be killed at several different moments.
    for delay in (0.0, 0.01, 0.02, 0.05, 0.1, 0.2):
        before = touched()
        proc = subprocess.Popen(
            [sys.executable, "-m", "countersign", "retention", "run", "--data", str(settings.data_dir)],
            env=cli_env(**{PAUSE_ENV: "object:0.005"}),
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 120
        while touched() == before and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(delay)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait()
        _nothing_half_readable(svc, old, [*young, held], 1)
    assert kills >= 3
    finished = _run(settings.data_dir)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    for rid in old:
        assert_purged_once(svc, rid)
    for rid in [*young, held]:
        assert_intact(svc, rid, 1)


def test_two_runs_at_once_purge_each_recording_once(client: TestClient, world: World, settings: Settings) -> None:
    """The second run starts while the first is between shredding and finalising (paused there), so both
    work on the same recordings; the compare-and-set lets exactly one finish each."""
    svc = services_of(client)
    old, young, held = _populate(client, world, expired=80, segments=1)
    argv = [sys.executable, "-m", "countersign", "retention", "run", "--data", str(settings.data_dir)]

    def start(**env: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            argv, env=cli_env(**env), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    # The second run must start and finish everything inside the first's pause. On PostgreSQL+S3
    # (moto over HTTP) that takes several times longer than on SQLite + files, so wait longer there.
    first = start(**{PAUSE_ENV: "shred:15" if POSTGRES_S3 else "shred:4"})
    deadline = time.monotonic() + 60
    while not any(remains(svc, rid).purge_state for rid in old):
        assert time.monotonic() < deadline and first.poll() is None
        time.sleep(0.02)
    second = start()
    outputs = [p.communicate(timeout=300) for p in (first, second)]
    assert [first.returncode, second.returncode] == [0, 0], outputs
    purged = [m[1] for out, _ in outputs for m in re.finditer(r"^purged +([0-9a-f-]{36})", out, re.MULTILINE)]
    assert sorted(purged) == sorted(old)  # each reported by exactly one of the two runs
    assert f"resumed {min(job.BATCH, len(old))}" in outputs[1][0]  # the second finished the first's batch...
    assert "purged 0," in outputs[0][0]  # ...so the first, waking up, found nothing left to finalise
    for rid in old:
        assert_purged_once(svc, rid)
    for rid in [*young, held]:
        assert_intact(svc, rid, 1)


# --------------------------------------------------------------------------- errors never cause deletion


def test_store_failure_leaves_it_shredded_and_the_next_run_finishes(
    client: TestClient, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc = services_of(client)
    rid, young = upload(client, world.device, 2), upload(client, world.device, 2)
    age(svc, rid, 31)

    def disk_trouble(key: str) -> None:
        raise OSError(errno.EIO, "Input/output error", key)

    monkeypatch.setattr(svc.store, "delete", disk_trouble)
    summary = job.run(svc)
    assert summary.purged == [] and "Input/output error" in summary.errors[rid]
    r = remains(svc, rid)
    assert (r.purge_state, r.sealed_keys, len(r.objects)) == ("shredding", 0, 2)  # unreadable, not yet gone
    assert_intact(svc, young, 2)

    monkeypatch.undo()
    summary = job.run(svc)
    assert summary.purged == [rid] and summary.resumed == 1 and summary.ok
    assert_purged_once(svc, rid)


def test_a_full_disk_purges_nothing_and_exits_non_zero(
    client: TestClient, world: World, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc = services_of(client)
    rid, young = upload(client, world.device, 2), upload(client, world.device, 2)
    age(svc, rid, 31)

    def full(*_args: object, **_kwargs: object) -> None:
        raise OperationalError("INSERT INTO access_log ...", {}, sqlite3.OperationalError("database or disk is full"))

    monkeypatch.setattr(retention.purge, "record_events", full)
    result = CliRunner().invoke(
        cli_app, ["retention", "run", "--data", str(settings.data_dir)], env={"COUNTERSIGN_ENV": "development"}
    )
    assert result.exit_code == 1, result.output
    assert "database or disk is full" in result.output and "purged 0" in result.output and "errors 1" in result.output
    assert_intact(svc, rid, 2)  # the shredding transaction rolled back whole
    assert_intact(svc, young, 2)

    monkeypatch.undo()
    assert job.run(svc).purged == [rid]


# --------------------------------------------------------------------------- abandoned uploads and orphaned objects


def test_abandoned_uploads_become_interrupted_and_follow_that_policy(client: TestClient, world: World) -> None:
    svc = services_of(client)
    old, recent = upload(client, world.device, 2, final=False), upload(client, world.device, 2, final=False)
    stale = utcnow() - timedelta(seconds=svc.settings.interrupted_after_seconds + 60)
    with svc.sessions() as session, session.begin():
        session.execute(update(Recording).where(Recording.id.in_([old, recent])).values(last_activity_at=stale))
    age(svc, old, 31)
    age(svc, recent, 1)
    # Open, however old: kept while it may still be receiving; the run first marks it interrupted.
    assert decide(facts_of(_row(svc, old)), SHIPPED_DEFAULTS, [], utcnow()) == Keep("still recording")

    summary = job.run(svc)
    assert summary.interrupted == 2 and summary.purged == [old]
    assert_purged_once(svc, old)
    recording = _row(svc, recent)
    assert recording.status == "interrupted" and recording.retain_reason is not None
    assert "default/interrupted" in recording.retain_reason


def _row(svc: Services, rid: str) -> Recording:
    with svc.sessions() as session:
        recording = session.get(Recording, rid)
        assert recording is not None
        session.expunge(recording)
        return recording


def test_orphaned_objects_are_reported_and_removed_on_request(
    client: TestClient, world: World, settings: Settings
) -> None:
    svc = services_of(client)
    complete, still_open = upload(client, world.device, 2), upload(client, world.device, 1, final=False)
    purged = upload(client, world.device, 1)
    age(svc, purged, 31)
    job.run(svc)
    unknown = str(uuid.uuid4())
    planted = {
        "unknown-recording": segment_key(unknown, 0),
        "purged-recording": segment_key(purged, 0),
        "past-the-end": segment_key(complete, 5),
        "in-flight": segment_key(still_open, 1),
        "foreign": "backups/readme.txt",
    }
    for key in planted.values():
        svc.store.put(key, b"x")

    report = job.scan_orphans(svc)
    expected = sorted(planted[k] for k in ("unknown-recording", "purged-recording", "past-the-end"))
    assert (sorted(report.orphans), report.pending, report.foreign) == (
        expected,
        [planted["in-flight"]],
        ["backups/readme.txt"],
    )
    assert report.removed == [] and all(svc.store.exists(k) for k in planted.values())

    result = countersign("retention", "run", "--data", str(settings.data_dir), "--remove-orphans")
    assert "orphaned objects: 3 (3 removed), in flight: 1" in result.stdout
    assert not any(svc.store.exists(k) for k in expected)
    assert svc.store.exists(planted["in-flight"]) and svc.store.exists(planted["foreign"])
    assert_intact(svc, complete, 2)


def test_status_reports_what_expires_soon(client: TestClient, world: World, settings: Settings) -> None:
    svc = services_of(client)
    soon, later, held = (
        upload(client, world.device, 1),
        upload(client, world.device, 1),
        upload(client, world.device, 1),
    )
    age(svc, soon, 25)
    age(svc, later, 1)
    age(svc, held, 26)
    hold(client, world, "CASE-5", [held])
    result = countersign("retention", "status", "--data", str(settings.data_dir), "--days", "7")
    lines = [line for line in result.stdout.splitlines() if "default/routine" in line]
    assert len(lines) == 1 and lines[0].split()[4:6] == ["2", "1"], result.stdout  # count 2, held 1
    assert lines[0].split()[2] == "JST"  # local time (Asia/Tokyo by default), the zone named
    assert "0 due now" in result.stdout
