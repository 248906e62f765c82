"""The offline recovery key (evidence.recovery, api.recovery, client.recovery): devices seal to it once it
is registered; with only it, a database backup and the object store a recording is read back without
the service; the signed recovery record is imported into the audit log and verifies there."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient
from nacl.public import PrivateKey
from sqlalchemy import select

from api import key_custody, recovery
from api.bootstrap import InitResult
from api.core.keys import CURRENT, OFFLINE, SealedOnlyToRetired, check_sealed_to
from api.core.models import AccessLog, SealedKey, Segment
from api.core.settings import Settings
from api.core.storage import BlobStore
from api.core.storage.filesystem import FilesystemStore
from evidence import recovery as offline
from evidence.audit_actions import Action
from evidence.audit_log import verify_export
from evidence.errors import IntegrityError, NoAudio
from tests.api.test_key_rotation import recorded, refresh
from tests.conftest import REPO, World, bearer, countersign
from tests.support.bundles import Exported, post_export
from tests.support.factories import SimRecording

PASSPHRASE = b"a long offline recovery passphrase"


@dataclass
class Registered:
    key: offline.OfflineKey
    key_id: str
    private_file: Path


@pytest.fixture
def registered(tmp_path: Path, settings: Settings, initialised: InitResult) -> Registered:
    """An offline key generated 'elsewhere' and registered with `keys add-offline` (in process)."""
    key = offline.OfflineKey.generate()
    folder = tmp_path / "offline-machine"
    private = folder / f"recovery-{key.key_id}.key"
    offline.write_private_file(private, key, PASSPHRASE)
    public = folder / f"recovery-{key.key_id}.public.json"
    public.write_text(json.dumps(key.public_document()))
    with key_custody.open_custody(settings) as custody:
        kid, old = recovery.add_offline(custody, public)
    assert (kid, old) == (key.key_id, None)
    return Registered(key, kid, private)


def backup(settings: Settings, into: Path) -> tuple[str, BlobStore]:
    """A database backup and the object store, as an organisation would keep them."""
    if settings.database_url:  # PostgreSQL + S3 test backend: the live database and bucket stand for them
        spec = f"s3://{settings.s3_bucket}/{settings.s3_prefix}"  # what `keys recover --store` takes
        return settings.database_url, recovery.open_store(spec, settings.s3_endpoint_url, settings.s3_region)
    into.mkdir()
    source = sqlite3.connect(settings.data_dir / "countersign.db")
    target = sqlite3.connect(into / "countersign.db")
    with target:
        source.backup(target)
    source.close()
    target.close()
    shutil.copytree(settings.data_dir / "objects", into / "objects")
    return f"sqlite:///{into / 'countersign.db'}", FilesystemStore(into / "objects")


def samples(path_or_bytes: Path | bytes) -> np.ndarray:
    data = path_or_bytes.read_bytes() if isinstance(path_or_bytes, Path) else path_or_bytes
    pcm, _ = sf.read(io.BytesIO(data), dtype="int16", always_2d=True)
    return pcm


def original(rec: SimRecording) -> np.ndarray:
    return np.concatenate([s.pcm for s in rec.segments])


def test_registered_offline_key_is_sealed_to(client: TestClient, world: World, registered: Registered) -> None:
    dev = world.device
    listed = refresh(client, dev)
    mine = [k for k in listed if k["key_id"] == registered.key_id]
    assert [(k["state"], k["custody"], k["seal_to"]) for k in mine] == [(CURRENT, OFFLINE, True)]
    assert registered.key_id in dev.evidence_keys and len(dev.evidence_keys) == 2
    rec = recorded(client, dev)
    services = client.app.state.services  # type: ignore[attr-defined]
    with services.sessions() as session:
        sealed = set(session.scalars(select(SealedKey.key_id).where(SealedKey.recording_id == str(rec.id))))
        assert registered.key_id in sealed and len(sealed) == 2
        service_kid = next(k for k in dev.evidence_keys if k != registered.key_id)
        check_sealed_to(session, [service_kid, registered.key_id])  # service + offline: accepted
        with pytest.raises(SealedOnlyToRetired, match=rf"{registered.key_id} \(current, offline\)"):
            check_sealed_to(session, [registered.key_id])  # offline only: refused outside zero-knowledge mode


def test_recovery_without_the_service(
    client: TestClient,
    world: World,
    settings: Settings,
    initialised: InitResult,
    registered: Registered,
    tmp_path: Path,
) -> None:
    """The issue's test: service key files gone, the offline key + a database backup + the store
    recover a recording byte for byte; the recovery record later verifies in the audit log."""
    dev = world.device
    refresh(client, dev)
    rec = recorded(client, dev, segments=3)
    wav = client.post(
        f"/v1/evidence/{rec.id}/audio",
        json={"purpose": "reference read", "format": "wav"},
        headers=bearer(world.officer),
    )
    assert wav.status_code == 200, wav.text
    url, store = backup(settings, tmp_path / "backup")
    keys_dir = settings.data_dir / "keys"
    kept = tmp_path / "keys-kept-elsewhere"
    shutil.copytree(keys_dir, kept)
    shutil.rmtree(keys_dir)  # the service's key files are gone

    key = offline.read_private_file(registered.private_file, PASSPHRASE)
    out = tmp_path / "recovered" / "out.wav"
    done = recovery.recover(url, store, key, str(rec.id), out, operator="Rita Recovery", reason="service lost")
    assert out.read_bytes() == wav.content  # byte for byte what the service itself would have released
    np.testing.assert_array_equal(samples(out), original(rec))
    flac = recovery.recover(url, store, key, str(rec.id), out.with_suffix(".flac"), operator="R", reason="flac")
    np.testing.assert_array_equal(samples(flac.output), original(rec))
    document = json.loads(done.record.read_text())
    body = offline.verify_record(document, key.verify_key)
    assert body["recording_id"] == str(rec.id) and body["operator"] == "Rita Recovery"
    assert body["output"]["sha256"] == done.output_sha256 == hashlib.sha256(out.read_bytes()).hexdigest()
    assert [s["index"] for s in body["segments"]] == [0, 1, 2]

    shutil.copytree(kept, keys_dir)  # the service is back, with its keys
    with key_custody.open_custody(settings) as custody:
        imported = recovery.import_recovery(custody, done.record)
        again = recovery.import_recovery(custody, done.record)
    assert not imported.already and imported.log_check.startswith("match")
    assert again.already and again.seq == imported.seq  # idempotent: nothing appended twice
    custody_reply = client.get(f"/v1/audit/custody/{rec.id}", headers=bearer(world.auditor))
    assert custody_reply.status_code == 200, custody_reply.text
    entries = [e for e in custody_reply.json() if e["action"] == Action.KEY_RECOVERY_IMPORT]
    assert len(entries) == 1 and entries[0]["purpose"] == "service lost"
    assert entries[0]["detail"]["record_sha256"] == imported.record_sha256
    exported = client.get("/v1/audit/export", headers=bearer(world.auditor))
    assert exported.status_code == 200, exported.text
    report = verify_export(exported.text.splitlines(), bytes.fromhex(initialised.service_public_key))
    assert report.ok, report
    recipient = PrivateKey.generate()
    bundle = post_export(client, world.officer, rec.id, recipient)  # its custody excerpt carries the entry too
    assert bundle.status_code == 200, bundle.text
    members = Exported(rec, bundle.content, recipient, 0).members()
    excerpt = [data for name, data in members.items() if name.startswith("custody/entries/")]
    assert sum(Action.KEY_RECOVERY_IMPORT.encode() in data for data in excerpt) == 1


def test_wrong_offline_key_fails_clearly(
    client: TestClient, world: World, settings: Settings, registered: Registered, tmp_path: Path
) -> None:
    refresh(client, world.device)
    rec = recorded(client, world.device)
    url, store = backup(settings, tmp_path / "backup")
    other = offline.OfflineKey.generate()
    out = tmp_path / "out.flac"
    with pytest.raises(offline.RecoveryKeyError, match=rf"not sealed to offline key {other.key_id}"):
        recovery.recover(url, store, other, str(rec.id), out, operator="R", reason="test")
    assert not out.exists() and not out.with_name(out.name + recovery.RECORD_SUFFIX).exists()
    with pytest.raises(offline.RecoveryKeyError, match="wrong recovery key passphrase"):
        offline.read_private_file(registered.private_file, b"not the passphrase at all")


@pytest.mark.parametrize("outcome", ["objected", "given"])
def test_a_recording_without_audio_is_reported_as_such_offline(
    client: TestClient, world: World, settings: Settings, registered: Registered, tmp_path: Path, outcome: str
) -> None:
    """An objection record, or consent given and nothing captured: NoAudio saying so, never IntegrityError."""
    refresh(client, world.device)
    rec = world.device.new_recording(outcome=outcome)
    assert client.post("/v1/recordings", json=rec.create_body(), headers=world.device.auth).status_code == 201
    if outcome == "given":
        assert client.post(f"/v1/recordings/{rec.id}/interrupt", headers=world.device.auth).status_code == 200
    url, store = backup(settings, tmp_path / "backup")
    out = tmp_path / "out.flac"
    said = "this is an objection record" if outcome == "objected" else "no audio was captured: the recording is"
    with pytest.raises(NoAudio, match=said) as raised:
        recovery.recover(url, store, registered.key, str(rec.id), out, operator="R", reason="test")
    assert not isinstance(raised.value, IntegrityError)
    assert not out.exists() and not out.with_name(out.name + recovery.RECORD_SUFFIX).exists()


def test_tampered_segment_in_the_backup_is_named(
    client: TestClient, world: World, settings: Settings, registered: Registered, tmp_path: Path
) -> None:
    if settings.database_url:
        pytest.skip("alters the backup's object files (SQLite + filesystem backend)")
    refresh(client, world.device)
    rec = recorded(client, world.device, segments=3)
    url, store = backup(settings, tmp_path / "backup")
    with client.app.state.services.sessions() as session:  # type: ignore[attr-defined]
        key_of_1 = session.scalar(
            select(Segment.object_key).where(Segment.recording_id == str(rec.id), Segment.index == 1)
        )
    assert key_of_1 is not None
    path = tmp_path / "backup" / "objects" / key_of_1
    blob = bytearray(path.read_bytes())
    blob[-5] ^= 1
    path.write_bytes(bytes(blob))
    out = tmp_path / "out.flac"
    with pytest.raises(IntegrityError, match=r"segment 1 .* is not the one the device signed"):
        recovery.recover(url, store, registered.key, str(rec.id), out, operator="R", reason="test")
    assert not out.exists()


def test_forged_recovery_record_is_refused(
    client: TestClient, world: World, settings: Settings, registered: Registered, tmp_path: Path
) -> None:
    refresh(client, world.device)
    rec = recorded(client, world.device)
    url, store = backup(settings, tmp_path / "backup")
    done = recovery.recover(url, store, registered.key, str(rec.id), tmp_path / "o.flac", operator="R", reason="ok")
    genuine = json.loads(done.record.read_text())

    altered = tmp_path / "altered.json"
    altered.write_text(json.dumps({**genuine, "record": {**genuine["record"], "reason": "something nicer"}}))
    impostor = offline.OfflineKey.generate()  # signs a record naming the registered offline key
    body = {k: v for k, v in genuine["record"].items() if k not in ("kind", "version", "recovery_key_id")}
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(offline.sign_record(impostor, body)))
    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps(offline.sign_record(impostor, {**body, "offline_key_id": impostor.key_id})))
    with key_custody.open_custody(settings) as custody, custody.sessions() as session:
        before = session.query(AccessLog).count()
    with key_custody.open_custody(settings) as custody:
        for path, why in ((altered, "does not verify"), (forged, "does not verify"), (unknown, "not a registered")):
            with pytest.raises(offline.RecordRefused, match=why):
                recovery.import_recovery(custody, path)
        with custody.sessions() as session:
            assert session.query(AccessLog).count() == before  # nothing appended for a refused record
        # Genuinely signed, but made from a doctored backup (another device key): imported all the
        # same (the read happened and must be logged), flagged against the service's own log.
        doctored = tmp_path / "doctored.json"
        doctored.write_text(json.dumps(offline.sign_record(registered.key, {**body, "device_public_key": "00" * 32})))
        flagged = recovery.import_recovery(custody, doctored)
        assert not flagged.already and flagged.log_check.startswith("mismatch: the record's device key")


def test_paper_backup_round_trips_and_catches_a_typo() -> None:
    key = offline.OfflineKey.generate()
    paper = offline.paper_backup(key)
    assert key.key_id in paper and key.recovery_key_id in paper
    assert offline.read_paper_backup(paper).secret == key.secret
    assert offline.read_paper_backup(paper.upper().replace("CHECK", "check")).secret == key.secret  # case-blind
    lines = paper.splitlines()
    n = next(i for i, line in enumerate(lines) if line.startswith("02:"))
    first_group = lines[n][4:8]
    typo = first_group[:3] + ("0" if first_group[3] != "0" else "1")
    lines[n] = lines[n][:4] + typo + lines[n][8:]
    with pytest.raises(offline.PaperBackupError, match="line 02 does not match its checksum"):
        offline.read_paper_backup("\n".join(lines))
    with pytest.raises(offline.PaperBackupError, match="lines 04 are missing"):
        offline.read_paper_backup("\n".join(line for line in paper.splitlines() if not line.startswith("04:")))


def test_generate_needs_only_the_client_extra() -> None:
    """`countersign recovery` imports nothing of the server (tests/test_layers.py checks the sources too)."""
    code = (
        "import sys, countersign.cli as c, typer.main as t; t.get_command(c.app).get_command(None, 'recovery'); "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'sqlalchemy', 'fastapi', 'boto3', 'numpy', 'soundfile', 'api', 'alembic'}); print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_command_line(client: TestClient, world: World, settings: Settings, tmp_path: Path) -> None:
    """generate, restore from paper, add-offline, recover and import-recovery as an organisation runs them."""
    secret = tmp_path / "passphrase"
    secret.write_text(PASSPHRASE.decode() + "\n")
    machine = tmp_path / "offline-machine"
    made = countersign("recovery", "generate", "--out", str(machine), "--passphrase-file", str(secret))
    (public,) = machine.glob("*.public.json")
    (private,) = machine.glob("*.key")
    paper = tmp_path / "paper.txt"
    paper.write_text(made.stdout)
    restored = countersign(
        "recovery", "restore", str(paper), "--out", str(tmp_path / "restored"), "--passphrase-file", str(secret)
    )
    kid = json.loads(public.read_text())["key_id"]
    assert f"restored offline key {kid}" in restored.stdout
    help_ = countersign("recovery", "generate", "--help").stdout
    assert "offline machine" in help_

    data = ["--data", str(settings.data_dir)]
    countersign("keys", "add-offline", str(public), *data)
    refresh(client, world.device)
    assert kid in world.device.evidence_keys
    rec = recorded(client, world.device)
    if settings.database_url:
        return  # the rest reads a SQLite backup of the data directory
    backup_dir = tmp_path / "backup"
    backup(settings, backup_dir)
    out = tmp_path / "out.flac"
    recovered = countersign(
        "keys", "recover", str(rec.id), "--data", str(backup_dir), "--offline-key", str(private),
        "--passphrase-file", str(secret), "-o", str(out), "--operator", "Rita", "--reason", "drill",
    )  # fmt: skip
    assert "recovered 2 segments" in recovered.stdout
    np.testing.assert_array_equal(samples(out), original(rec))
    imported = countersign("keys", "import-recovery", str(out) + recovery.RECORD_SUFFIX, *data)
    assert "imported as audit entry" in imported.stdout and "match" in imported.stdout
    wrong = countersign(
        "keys", "recover", str(rec.id), "--data", str(backup_dir), "--offline-key", str(private),
        "--passphrase-file", str(paper), "-o", str(out), "--operator", "Rita", "--reason", "drill",
        check=False,
    )  # fmt: skip
    assert wrong.returncode == 2 and "wrong recovery key passphrase" in wrong.stderr
    assert "Traceback" not in wrong.stderr
