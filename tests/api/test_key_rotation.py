"""Evidence key custody: rotation while devices record, retirement, rewrap (interrupted and resumed),
destruction, passphrase change, and the `countersign keys` command line (api.key_custody)."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nacl.exceptions
import nacl.public
import numpy as np
import pytest
import soundfile as sf
from alembic import command
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from api import key_custody, migrate
from api.app import create_app
from api.bootstrap import InitResult, init_data_dir
from api.core.db import make_engine
from api.core.keys import (
    CURRENT,
    DESTROYED,
    PASSPHRASE_JOURNAL,
    PREVIOUS,
    RETIRED,
    KeyFileError,
    SealedOnlyToRetired,
    check_sealed_to,
)
from api.core.models import AccessLog, EvidenceKey, Recording, SealedKey
from api.core.settings import Settings
from evidence.audit_actions import Action
from evidence.key_files import read_key_file
from tests.conftest import REPO, World, bearer, cli_env, countersign
from tests.support.factories import SimDevice, SimRecording

GOOD = "correct horse battery staple"
NEW = "a brand new and longer passphrase 42"


class Interrupted(Exception):
    """Stands for the rewrap process being killed."""


def upload_create(client: TestClient, dev: SimDevice, rec: SimRecording) -> None:
    created = client.post("/v1/recordings", json=rec.create_body(), headers=dev.auth)
    assert created.status_code == 201, created.text


def upload_segments(
    client: TestClient, dev: SimDevice, rec: SimRecording, start: int = 0, stop: int | None = None
) -> None:
    for seg in rec.segments[start:stop]:
        reply = client.put(
            f"/v1/recordings/{rec.id}/segments/{seg.index}", content=seg.envelope, headers=dev.segment_headers(seg)
        )
        assert reply.status_code == 201, reply.text


def recorded(client: TestClient, dev: SimDevice, segments: int = 2) -> SimRecording:
    rec = dev.new_recording()
    dev.add_segments(rec, segments)
    upload_create(client, dev, rec)
    upload_segments(client, dev, rec)
    return rec


def reads_back(client: TestClient, world: World, rec: SimRecording) -> None:
    reply = client.post(
        f"/v1/evidence/{rec.id}/audio", json={"purpose": "key rotation test"}, headers=bearer(world.officer)
    )
    assert reply.status_code == 200, reply.text
    samples, _ = sf.read(io.BytesIO(reply.content), dtype="int16", always_2d=True)
    np.testing.assert_array_equal(samples, np.concatenate([s.pcm for s in rec.segments]))


def refresh(client: TestClient, dev: SimDevice) -> list[dict[str, object]]:
    """What the recorder does before each recording: seal to the keys GET /v1/keys marks seal_to."""
    listed: list[dict[str, object]] = client.get("/v1/keys", headers=dev.auth).json()
    dev.evidence_keys = {str(k["key_id"]): bytes.fromhex(str(k["public_key"])) for k in listed if k["seal_to"]}
    return listed


def sealed_to(settings: Settings, rid: object) -> set[str]:
    with key_custody.open_custody(settings) as custody, custody.sessions() as session:
        return set(session.scalars(select(SealedKey.key_id).where(SealedKey.recording_id == str(rid))))


@pytest.fixture
def custody(settings: Settings, initialised: InitResult) -> Iterator[key_custody.Custody]:
    """The data directory's keys and audited sessions, as `countersign keys ...` opens them."""
    with key_custody.open_custody(settings) as opened:
        yield opened


def test_rotation_while_devices_record(client: TestClient, world: World, settings: Settings) -> None:
    dev = world.device
    (k1,) = dev.evidence_keys
    before = recorded(client, dev)
    during = dev.new_recording()  # opened before the rotation, its segments arrive after it
    dev.add_segments(during, 3)
    upload_create(client, dev, during)
    upload_segments(client, dev, during, stop=1)

    with key_custody.open_custody(settings) as custody:
        k2, old = key_custody.rotate(custody)
    assert old == k1 and k2 != k1
    upload_segments(client, dev, during, start=1)
    stale = recorded(client, dev)  # a device that has not refreshed yet: sealed to k1 (previous), accepted
    listed = refresh(client, dev)
    assert [(k["key_id"], k["state"], k["seal_to"]) for k in listed] == [(k1, PREVIOUS, False), (k2, CURRENT, True)]
    assert listed[0]["valid_until"] is not None and listed[1]["valid_until"] is None
    after = recorded(client, dev)
    assert sealed_to(settings, after.id) == {k2} and sealed_to(settings, stale.id) == {k1}

    # The running service started with k1 only: the read of `after` makes it load k2 from the key directory.
    assert k2 not in client.app.state.services.keys.evidence_keys  # type: ignore[attr-defined]
    for rec in (before, during, stale, after):
        reads_back(client, world, rec)
    assert k2 in client.app.state.services.keys.evidence_keys  # type: ignore[attr-defined]


def test_retired_key_reads_until_destroyed_and_destroy_needs_rewrap(
    client: TestClient, world: World, settings: Settings, custody: key_custody.Custody
) -> None:
    dev = world.device
    (k1,) = dev.evidence_keys
    olds = [recorded(client, dev) for _ in range(3)]
    k2, _ = key_custody.rotate(custody)
    with pytest.raises(key_custody.KeyRefused, match="current evidence key"):
        key_custody.retire(custody, k2)
    with pytest.raises(key_custody.KeyRefused, match="retire it first"):
        key_custody.destroy(custody, k1)
    assert key_custody.retire(custody, k1) == 3  # three recordings still need a rewrap
    for rec in olds:
        reads_back(client, world, rec)  # retired: no longer sealed to, still read
    with pytest.raises(key_custody.KeyRefused, match="3 live recordings are sealed only to"):
        key_custody.destroy(custody, k1)

    result = key_custody.rewrap(custody, batch=2)
    assert (result.rewrapped, result.batches, result.failed) == (3, 2, {})
    assert all(sealed_to(settings, rec.id) == {k1, k2} for rec in olds)
    assert key_custody.rewrap(custody).rewrapped == 0  # nothing left to do
    assert key_custody.destroy(custody, k1) == 3
    assert not (settings.data_dir / "keys" / f"evidence-{k1}.key").exists()
    for rec in olds:
        assert sealed_to(settings, rec.id) == {k2}
        reads_back(client, world, rec)  # only the rewrap keeps them readable now
    rows = {r.key_id: r for r in key_custody.list_keys(custody)}
    assert (rows[k1].state, rows[k1].recordings, rows[k1].file) == (DESTROYED, 0, False)
    assert (rows[k2].state, rows[k2].recordings, rows[k2].file) == (CURRENT, 3, True)
    listed = client.get("/v1/keys", headers=dev.auth).json()
    assert [k["key_id"] for k in listed] == [k2]  # destroyed keys are not listed


def test_rewrap_interrupted_then_resumed_loses_nothing(
    client: TestClient, world: World, settings: Settings, custody: key_custody.Custody
) -> None:
    dev = world.device
    (k1,) = dev.evidence_keys
    olds = [recorded(client, dev, segments=1) for _ in range(7)]
    k2, _ = key_custody.rotate(custody)
    key_custody.retire(custody, k1)

    def killed_after_first(batches: int) -> None:
        if batches == 1:
            raise Interrupted

    with pytest.raises(Interrupted):
        key_custody.rewrap(custody, batch=3, after_batch=killed_after_first)
    done = [rec for rec in olds if k2 in sealed_to(settings, rec.id)]
    assert len(done) == 3  # the first batch was committed, nothing of the second
    resumed = key_custody.rewrap(custody, batch=3, drop_old=True)
    assert resumed.rewrapped == 4 and resumed.dropped == 7
    for rec in olds:
        assert sealed_to(settings, rec.id) == {k2}
        reads_back(client, world, rec)
    with custody.sessions() as session:
        batches = session.scalars(select(AccessLog.detail).where(AccessLog.action == Action.KEY_REWRAP)).all()
    counts = [d["recordings"] for d in batches if not d.get("complete")]
    assert counts == [3, 3, 1] and sum(counts) == len(olds)


def test_rewrap_killed_with_sigkill_then_rerun_loses_nothing(
    client: TestClient, world: World, settings: Settings, custody: key_custody.Custody
) -> None:
    """The real command, killed (SIGKILL: no cleanup of any kind) between batches, then run again."""
    dev = world.device
    (k1,) = dev.evidence_keys
    olds = [recorded(client, dev, segments=1) for _ in range(120)]
    k2, _ = key_custody.rotate(custody)
    key_custody.retire(custody, k1)

    def batches_done() -> int:
        with custody.sessions() as session:
            details = session.scalars(select(AccessLog.detail).where(AccessLog.action == Action.KEY_REWRAP)).all()
        return sum(1 for d in details if not d.get("complete"))

    argv = [sys.executable, "-m", "countersign", "keys", "rewrap", "--data", str(settings.data_dir), "--batch", "1"]
    proc = subprocess.Popen(argv, env=cli_env(), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while batches_done() < 5 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL, "rewrap finished before it could be killed: give it more recordings"
    done = [rec for rec in olds if k2 in sealed_to(settings, rec.id)]
    assert 5 <= len(done) < len(olds)
    for rec in olds:  # every recording still opens: with k2 where the batch committed, else with k1 (retired, kept)
        assert k1 in sealed_to(settings, rec.id)

    rerun = countersign("keys", "rewrap", "--data", str(settings.data_dir), "--batch", "50", "--drop-old")
    assert f"rewrapped {len(olds) - len(done)} recordings to {k2}" in rerun.stdout, rerun.stdout
    for rec in olds:
        assert sealed_to(settings, rec.id) == {k2}
    for rec in olds[:: len(olds) // 6]:
        reads_back(client, world, rec)


def test_a_copy_of_the_destroyed_key_file_opens_nothing(
    client: TestClient, world: World, settings: Settings, tmp_path: Path, custody: key_custody.Custody
) -> None:
    dev = world.device
    (k1,) = dev.evidence_keys
    for _ in range(2):
        recorded(client, dev)
    stolen = tmp_path / "stolen.key"
    shutil.copy(settings.data_dir / "keys" / f"evidence-{k1}.key", stolen)
    k2, _ = key_custody.rotate(custody)
    recorded(client, dev)  # not refreshed: sealed to k1 (previous) only
    refresh(client, dev)
    for _ in range(2):
        recorded(client, dev)  # sealed to k2 only
    key_custody.retire(custody, k1)
    key_custody.rewrap(custody)
    key_custody.destroy(custody, k1)

    old_private = nacl.public.SealedBox(nacl.public.PrivateKey(bytes.fromhex(read_key_file(stolen)["secret"])))
    with custody.sessions() as session:
        blobs = session.execute(select(SealedKey.key_id, SealedKey.sealed)).all()
        live = session.scalar(select(Recording.id).where(Recording.purge_state.is_(None)).limit(1))
    assert live is not None and len(blobs) == 5 and {kid for kid, _ in blobs} == {k2}
    for _, blob in blobs:
        with pytest.raises(nacl.exceptions.CryptoError):
            old_private.decrypt(blob)


def test_new_audio_sealed_only_to_a_retired_key_is_refused(
    client: TestClient, world: World, settings: Settings, custody: key_custody.Custody
) -> None:
    """Through the API: fails until api/ingest.py calls api.core.keys.check_sealed_to (see the report)."""
    dev = world.device
    (k1,) = dev.evidence_keys
    k2, _ = key_custody.rotate(custody)
    key_custody.retire(custody, k1)
    rec = dev.new_recording()  # a device that still holds only k1
    reply = client.post("/v1/recordings", json=rec.create_body(), headers=dev.auth)
    assert reply.status_code == 422, reply.text
    assert k1 in reply.json()["detail"] and "retired" in reply.json()["detail"]
    refresh(client, dev)
    assert set(dev.evidence_keys) == {k2}
    recorded(client, dev)  # sealed to the current key: accepted


def test_check_sealed_to(client: TestClient, world: World, settings: Settings, custody: key_custody.Custody) -> None:
    (k1,) = world.device.evidence_keys
    k2, _ = key_custody.rotate(custody)
    with custody.sessions() as session:
        check_sealed_to(session, [k1])  # previous: a device that has not refreshed yet
        check_sealed_to(session, [k2])
    key_custody.retire(custody, k1)
    with custody.sessions() as session:
        check_sealed_to(session, [k1, k2])
        with pytest.raises(SealedOnlyToRetired, match=rf"{k1} \(retired\)"):
            check_sealed_to(session, [k1])
        with pytest.raises(SealedOnlyToRetired, match=r"nope \(unknown\)"):
            check_sealed_to(session, ["nope"])
        assert session.get(EvidenceKey, k1).state == RETIRED  # type: ignore[union-attr]


def production(data: Path, passphrase: str) -> Settings:
    return Settings(data_dir=data, env="production", key_passphrase=SecretStr(passphrase))


def test_passphrase_change_then_only_the_new_one_starts_the_service(tmp_path: Path) -> None:
    data = tmp_path / "data"
    init_data_dir(production(data, GOOD))
    new_file = tmp_path / "new-passphrase"
    new_file.write_text(NEW + "\n")
    env = cli_env(COUNTERSIGN_ENV="production", COUNTERSIGN_KEY_PASSPHRASE=GOOD)
    done = countersign("keys", "passphrase", "--data", str(data), "--new-passphrase-file", str(new_file), env=env)
    assert "2 key files re-encrypted" in done.stdout
    assert not list((data / "keys").glob(".*")) and not (data / "keys" / PASSPHRASE_JOURNAL).exists()
    with TestClient(create_app(production(data, NEW))) as started:
        assert started.get("/healthz").status_code == 200
    with pytest.raises(KeyFileError, match="wrong COUNTERSIGN_KEY_PASSPHRASE"):
        create_app(production(data, GOOD))
    again = countersign(
        "keys", "passphrase", "--data", str(data), env={**env, "COUNTERSIGN_NEW_KEY_PASSPHRASE": NEW}, check=False
    )
    # A rerun (as after a crash) finds every file already under the new passphrase and changes nothing.
    assert again.returncode == 0 and "already under the new passphrase" in again.stdout, again.stderr


def test_interrupted_passphrase_change_says_which_file_and_a_rerun_finishes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    init_data_dir(production(data, GOOD))
    real_replace = os.replace
    renamed: list[str] = []

    def crash_after_one(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        if renamed:
            raise Interrupted
        real_replace(src, dst)
        renamed.append(Path(dst).name)

    monkeypatch.setattr(os, "replace", crash_after_one)
    with pytest.raises(Interrupted):
        key_custody.change_passphrase(production(data, GOOD), NEW.encode())
    monkeypatch.setattr(os, "replace", real_replace)
    assert (data / "keys" / PASSPHRASE_JOURNAL).exists()
    with pytest.raises(KeyFileError, match=rf"interrupted.*does not open {renamed[0]}"):
        create_app(production(data, GOOD))
    key_custody.change_passphrase(production(data, GOOD), NEW.encode())  # the rerun finishes the change
    assert not (data / "keys" / PASSPHRASE_JOURNAL).exists()
    for path in (data / "keys").iterdir():
        assert json.loads(path.read_text())["protection"] == "argon2id+secretbox"
    create_app(production(data, NEW))


def test_keys_commands_and_their_one_line_errors(tmp_path: Path) -> None:
    data = str(tmp_path / "d")
    countersign("server", "init", "--data", data)
    listed = countersign("keys", "list", "--data", data).stdout.splitlines()
    assert listed[0].split()[:3] == ["key", "id", "created"] and len(listed) == 2 and " current " in listed[1]
    k1 = listed[1].split()[0]
    rotated = countersign("keys", "rotate", "--data", data).stdout
    assert f"{k1} is now previous" in rotated
    for args, code, needle in [
        (("keys", "retire", "nope"), 2, "no evidence key 'nope'"),
        (("keys", "destroy", k1), 1, "retire it first"),
        (("keys", "passphrase"), 2, "COUNTERSIGN_NEW_KEY_PASSPHRASE"),
        (("keys", "list"), 2, "run 'countersign server init' first"),
    ]:
        where = data if args != ("keys", "list") else str(tmp_path / "nothing-here")
        result = countersign(*args, "--data", where, check=False)
        assert result.returncode == code, (args, result.stderr)
        assert needle in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "Traceback" not in result.stderr
    assert "retired" in countersign("keys", "retire", k1, "--data", data).stdout
    assert "rewrapped 0 recordings" in countersign("keys", "rewrap", "--data", data).stdout
    assert "destroyed" in countersign("keys", "destroy", k1, "--data", data).stdout
    final = countersign("keys", "list", "--data", data).stdout
    assert " destroyed " in final and " current " in final


@pytest.fixture(params=["sqlite", "postgresql"])
def url_at_0007(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database at revision 0007 (before key states), of each kind."""
    from tests.api.test_migrations import _postgres_reachable
    from tests.support.backends import BACKENDS, pg_url_for

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'old.db'}"
        migrate.upgrade(url, "0007")
        yield url
        return
    if not _postgres_reachable():
        pytest.skip("PostgreSQL is not answering (scripts/ensure-postgres.sh starts the local cluster)")
    allocation = BACKENDS.allocate_schema()
    try:
        url = pg_url_for(allocation.schema or "")
        migrate.upgrade(url, "0007")
        yield url
    finally:
        BACKENDS.release(allocation)


def test_migration_0008_maps_active_to_states_and_back(url_at_0007: str) -> None:
    engine = make_engine(url_at_0007)
    day = datetime(2026, 1, 1, tzinfo=UTC)
    rows = [("old", day, False), ("mid", day + timedelta(days=1), True), ("new", day + timedelta(days=2), True)]
    try:
        with engine.begin() as connection:
            for kid, created, active in rows:
                connection.execute(
                    text("INSERT INTO evidence_keys (key_id, public_key, created_at, active) VALUES (:k, :p, :c, :a)"),
                    {"k": kid, "p": bytes(32), "c": created, "a": active},
                )
        migrate.upgrade(url_at_0007)
        with engine.connect() as connection:
            states: dict[str, str] = {
                k: v for k, v in connection.execute(text("SELECT key_id, state FROM evidence_keys"))
            }
            custody = set(connection.execute(text("SELECT custody FROM evidence_keys")).scalars())
        assert states == {"old": RETIRED, "mid": PREVIOUS, "new": CURRENT} and custody == {"service"}
        with engine.begin() as connection, pytest.raises(DBAPIError):  # at most one current service key
            connection.execute(text("UPDATE evidence_keys SET state = 'current' WHERE key_id = 'mid'"))
        with engine.begin() as connection:
            command.downgrade(migrate.config(connection), "0007")
        with engine.connect() as connection:
            flags = {k: bool(v) for k, v in connection.execute(text("SELECT key_id, active FROM evidence_keys"))}
        assert flags == {"old": False, "mid": True, "new": True}
    finally:
        engine.dispose()
