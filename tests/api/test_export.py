"""POST /v1/evidence/{id}/export: who may export, what leaves, what the log says, what never reaches a disk."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import zipfile
from pathlib import Path

import nacl.signing
import pytest
from fastapi.testclient import TestClient
from nacl.public import PrivateKey
from sqlalchemy import select

from api.app import create_app
from api.bootstrap import InitResult
from api.core.models import AccessLog, Segment
from api.core.settings import Settings
from evidence.audit_actions import Action
from evidence.audit_log import entry_hash
from evidence.bundle.crypto import new_kdf, open_outer, passphrase_key
from evidence.errors import IntegrityError
from evidence.merkle import verify_inclusion
from tests.support.bundles import CASE, PURPOSE, Exported, post_export, record, recorded_bundle
from tests.support.tsa import local_tsa
from tests.support.world import World, build_world


def service_key(client: TestClient) -> nacl.signing.VerifyKey:
    return nacl.signing.VerifyKey(bytes.fromhex(client.get("/v1/audit/public-key").json()["public_key"]))


def test_an_officer_exports_a_bundle_encrypted_to_the_recipient(client: TestClient, world: World) -> None:
    bundle = recorded_bundle(client, world, segments=3)
    with zipfile.ZipFile(io.BytesIO(bundle.outer)) as outer:
        names = set(outer.namelist())
        assert {"README.txt", "README.ja.txt", "verify.py", "encryption.json", "bundle.enc"} <= names
        assert b"fLaC" not in outer.read("bundle.enc")  # ciphertext only
        with pytest.raises(IntegrityError):
            open_outer(outer, PrivateKey.generate(), io.BytesIO())  # nobody else opens it
    m = bundle.members()
    assert [n for n in m if n.endswith(".flac") and n.startswith("segments/")] == [
        f"segments/{i:06d}.flac" for i in range(3)
    ]
    assert m["audio/recording.flac"][:4] == b"fLaC"
    assert m["report/custody-report.pdf"][:5] == b"%PDF-"
    service_key(client).verify(m["SHA256SUMS"], m["SHA256SUMS.sig"])
    listed = {name: digest for digest, name in (line.split("  ", 1) for line in m["SHA256SUMS"].decode().splitlines())}
    assert set(listed) == set(m) - {"SHA256SUMS", "SHA256SUMS.sig"}
    assert all(hashlib.sha256(m[name]).hexdigest() == digest for name, digest in listed.items())
    manifest = json.loads(m["manifest.json"])
    assert manifest["case_ref"] == CASE and manifest["purpose"] == PURPOSE and manifest["recipient"] == "Station 7"
    assert manifest["complete"] is True and manifest["segments"] == 3
    # The segments are the device's: their hashes are the ones it signed.
    with client.app.state.services.sessions() as session:  # type: ignore[attr-defined]
        rows = session.scalars(select(Segment).where(Segment.recording_id == str(bundle.recording.id))).all()
        for row in rows:
            assert hashlib.sha256(m[f"segments/{row.index:06d}.flac"]).digest() == row.plaintext_sha256


def test_the_custody_excerpt_proves_every_entry_including_the_export_itself(client: TestClient, world: World) -> None:
    bundle = recorded_bundle(client, world, segments=2)
    m = bundle.members()
    head = json.loads(m["custody/tree_head.json"])
    service_key(client).verify(m["custody/tree_head.bin"], m["custody/tree_head.sig"])
    proofs = json.loads(m["custody/proofs.json"])
    entries = {name: data for name, data in m.items() if name.startswith("custody/entries/")}
    actions = []
    for _name, data in sorted(entries.items()):
        fields = json.loads(data)
        proof = proofs[f"{fields['seq']:012d}"]
        leaf = entry_hash(fields)
        assert leaf == hashlib.sha256(b"\x00" + data).digest()
        assert verify_inclusion(
            leaf,
            proof["leaf_index"],
            head["size"],
            [bytes.fromhex(p) for p in proof["path"]],
            bytes.fromhex(head["root"]),
        )
        actions.append(fields["action"])
    assert actions[0] == Action.DEVICE_ENROL
    assert Action.RECORDING_CREATE in actions and actions.count(Action.SEGMENT_UPLOAD) == 2
    assert actions[-1] == Action.EVIDENCE_EXPORT  # the bundle proves its own export
    # Nothing about other recordings: every entry is about this one or its device.
    targets = {json.loads(d)["target"] for d in entries.values()}
    assert targets == {f"recording:{bundle.recording.id}", f"device:{world.device.id}"}


def test_the_export_is_logged_before_and_after(client: TestClient, world: World) -> None:
    bundle = recorded_bundle(client, world)
    with client.app.state.services.sessions() as session:  # type: ignore[attr-defined]
        rows = session.scalars(
            select(AccessLog).where(AccessLog.target == f"recording:{bundle.recording.id}").order_by(AccessLog.seq)
        ).all()
    export, exported = rows[-2], rows[-1]
    assert export.seq == bundle.access_log and export.action == Action.EVIDENCE_EXPORT
    assert export.purpose == PURPOSE and export.detail["case_ref"] == CASE and export.detail["recipient"] == "Station 7"
    assert exported.action == Action.EVIDENCE_EXPORTED
    assert exported.detail["sha256sums"] == hashlib.sha256(bundle.members()["SHA256SUMS"]).hexdigest()


def test_only_officers_of_the_site_export(client: TestClient, world: World) -> None:
    rec = record(client, world.device, 1)
    key = PrivateKey.generate()
    assert post_export(client, world.admin, rec.id, key).status_code == 403  # administrators never read evidence
    assert post_export(client, world.auditor, rec.id, key).status_code == 403
    assert post_export(client, world.other_officer, rec.id, key).status_code == 404  # looks like nothing there
    assert post_export(client, "not-a-token", rec.id, key).status_code == 401
    with client.app.state.services.sessions() as session:  # type: ignore[attr-defined]
        exports = session.scalars(select(AccessLog).where(AccessLog.action == Action.EVIDENCE_EXPORT)).all()
    assert exports == []  # no refused attempt was logged as an export


@pytest.mark.parametrize(
    "change",
    [
        {"purpose": "short"},
        {"case_ref": ""},
        {"case_ref": "K-1\x1b[2J"},
        {"recipient_public_key": "00" * 31},
        {"recipient_public_key": "zz" * 32},
        {"kdf": {"alg": "scrypt", "salt": "00" * 16, "opslimit": 3, "memlimit": 8192}},
        {"kdf": {"salt": "00", "opslimit": 3, "memlimit": 8192}},
    ],
)
def test_bad_requests_are_refused_clearly(client: TestClient, world: World, change: dict[str, object]) -> None:
    rec = record(client, world.device, 1)
    r = post_export(client, world.officer, rec.id, PrivateKey.generate(), **change)
    assert r.status_code == 422, r.text


def test_a_passphrase_bundle_opens_with_the_passphrase_only(client: TestClient, world: World) -> None:
    rec = record(client, world.device, 1)
    kdf = new_kdf()
    key = passphrase_key(b"correct horse battery staple", kdf)
    r = post_export(client, world.officer, rec.id, key, kdf=kdf)
    assert r.status_code == 200, r.text
    with zipfile.ZipFile(io.BytesIO(r.content)) as outer:
        assert json.loads(outer.read("encryption.json"))["kdf"] == kdf
        again = passphrase_key(b"correct horse battery staple", json.loads(outer.read("encryption.json"))["kdf"])
        out = io.BytesIO()
        open_outer(outer, again, out)
        assert zipfile.ZipFile(out).read("manifest.json")
        with pytest.raises(IntegrityError):
            open_outer(outer, passphrase_key(b"wrong horse battery staple", kdf), io.BytesIO())


def test_a_partial_recording_exports_as_partial(client: TestClient, world: World) -> None:
    bundle = recorded_bundle(client, world, segments=2, final=False)
    manifest = json.loads(bundle.members()["manifest.json"])
    assert manifest["complete"] is False
    assert "segments 0..1" in manifest["partial_reason"]


def test_an_objection_record_exports_without_audio(client: TestClient, world: World) -> None:
    rec = record(client, world.device, outcome="objected")
    key = PrivateKey.generate()
    r = post_export(client, world.officer, rec.id, key)
    assert r.status_code == 200, r.text
    m = Exported(rec, r.content, key, 0).members()
    assert not any(name.endswith(".flac") for name in m)
    manifest = json.loads(m["manifest.json"])
    assert manifest["complete"] is True and manifest["segments"] == 0


def test_a_consented_recording_that_captured_nothing_exports_as_such(client: TestClient, world: World) -> None:
    """Consent given, no segment, the device reported it cut short: a bundle saying "no audio was captured"."""
    rec = record(client, world.device, 0, final=False)
    assert client.post(f"/v1/recordings/{rec.id}/interrupt", headers=world.device.auth).status_code == 200
    key = PrivateKey.generate()
    r = post_export(client, world.officer, rec.id, key)
    assert r.status_code == 200, r.text
    m = Exported(rec, r.content, key, 0).members()
    manifest = json.loads(m["manifest.json"])
    assert manifest["complete"] is False and manifest["segments"] == 0
    assert manifest["partial_reason"] == (
        "no audio was captured: no segment arrived before the recording ended (status interrupted)"
    )


def test_altered_evidence_is_not_exported_and_the_failure_is_logged(client: TestClient, world: World) -> None:
    rec = record(client, world.device, 2)
    services = client.app.state.services  # type: ignore[attr-defined]
    with services.sessions() as session:
        row = session.scalars(select(Segment).where(Segment.recording_id == str(rec.id), Segment.index == 1)).one()
        envelope = bytearray(services.store.get(row.object_key))
        envelope[-1] ^= 1
        services.store.put(row.object_key, bytes(envelope))
    r = post_export(client, world.officer, rec.id, PrivateKey.generate())
    assert r.status_code == 409 and "segment 1" in r.json()["detail"]
    with services.sessions() as session:
        last = session.scalars(select(AccessLog).order_by(AccessLog.seq.desc()).limit(2)).all()
    assert last[0].action == Action.EVIDENCE_INTEGRITY and last[0].outcome == "failed"
    assert last[1].action == Action.EVIDENCE_EXPORT  # the attempt itself was logged first


def test_no_plaintext_audio_reaches_the_service_disk(client: TestClient, world: World, tmp_path: Path) -> None:
    recorded_bundle(client, world, segments=3)
    services = client.app.state.services  # type: ignore[attr-defined]
    for folder in (services.settings.data_dir, Path(os.environ.get("TMPDIR", "/tmp"))):
        for path in Path(folder).rglob("*"):
            if path.is_file() and "countersign-export" in path.name:
                raise AssertionError(f"an export left {path}")
    for path in Path(services.settings.data_dir).rglob("*"):
        if path.is_file() and path.stat().st_size < 50_000_000:
            assert b"fLaC" not in path.read_bytes(), path


def test_with_a_tsa_configured_the_bundle_carries_a_time_stamp_openssl_accepts(
    settings: Settings, initialised: InitResult, tmp_path: Path
) -> None:
    with local_tsa() as tsa, TestClient(create_app(settings.model_copy(update={"tsa_url": tsa.url}))) as client:
        world = build_world(client, initialised.admin_token)
        m = recorded_bundle(client, world, segments=1).members()
        (tmp_path / "SHA256SUMS").write_bytes(m["SHA256SUMS"])
        (tmp_path / "SHA256SUMS.tsr").write_bytes(m["SHA256SUMS.tsr"])
        checked = subprocess.run(
            ["openssl", "ts", "-verify", "-data", "SHA256SUMS", "-in", "SHA256SUMS.tsr",
             "-CAfile", str(tsa.ca_pem), "-untrusted", str(tsa.tsa_cert)],
            cwd=tmp_path, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert checked.returncode == 0 and "Verification: OK" in checked.stdout, checked.stdout + checked.stderr


def test_a_failing_tsa_refuses_the_export_and_says_why(settings: Settings, initialised: InitResult) -> None:
    unreachable = settings.model_copy(update={"tsa_url": "http://127.0.0.1:9/tsa"})  # discard port: nothing answers
    with TestClient(create_app(unreachable)) as client:
        world = build_world(client, initialised.admin_token)
        rec = record(client, world.device, 1)
        r = post_export(client, world.officer, rec.id, PrivateKey.generate())
        assert r.status_code == 503 and "time-stamping authority" in r.json()["detail"]
        with client.app.state.services.sessions() as session:  # type: ignore[attr-defined]
            last = session.scalars(select(AccessLog).order_by(AccessLog.seq.desc()).limit(1)).one()
        assert (last.action, last.outcome) == (Action.EVIDENCE_EXPORT, "failed")


def test_the_api_names_the_same_key_derivation_as_the_bundle_format() -> None:
    from api.routes.export import PassphraseKdf
    from evidence.bundle.crypto import KDF_ALG

    assert PassphraseKdf.model_fields["alg"].default == KDF_ALG
