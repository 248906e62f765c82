"""Zero-knowledge mode (README "Zero-knowledge mode"): the service holds no evidence private key.

`server init --zero-knowledge --offline-public-key FILE` makes a data directory whose only evidence
key is the organisation's offline key; devices seal to it alone; a read leaves as ciphertext
(POST /v1/evidence/{id}/sealed, purpose-bound and audited first) and is opened with the offline
key on the officer's side (evidence.sealed). The CLI read and the scans of a live server's data
directory and log are in tests/client/test_zero_knowledge_cli.py.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient
from nacl.public import PrivateKey
from sqlalchemy import select

from api.app import create_app
from api.bootstrap import InitResult, init_data_dir
from api.core.keys import KEYS_DIR, OFFLINE, SERVICE, SIGNING_KEY_FILE, ZERO_KNOWLEDGE_FILE, KeyCustodian
from api.core.models import AccessLog, EvidenceKey, SealedKey
from api.core.settings import Settings
from api.core.storage.interface import segment_key
from evidence import recovery, sealed
from evidence.audit_actions import Action
from evidence.bundle import completion, verify
from evidence.bundle.archive import inner_zip
from evidence.bundle.crypto import open_outer, write_outer
from evidence.envelope import open_segment
from evidence.errors import FormatError, IntegrityError
from evidence.key_files import KeyFileError
from retention import job
from tests.api.test_key_rotation import recorded
from tests.conftest import countersign
from tests.support.retention_support import age, assert_intact, assert_purged_once, services_of
from tests.support.world import World, bearer, build_world

PASSPHRASE = b"the organisation's offline passphrase"
PURPOSE = "zero-knowledge read: complaint review"


@dataclass
class Offline:
    key: recovery.OfflineKey
    private_file: Path
    public_file: Path


def make_offline(folder: Path) -> Offline:
    """An offline key as `countersign recovery generate` makes it on the organisation's offline machine."""
    key = recovery.OfflineKey.generate()
    private = folder / f"recovery-{key.key_id}.key"
    recovery.write_private_file(private, key, PASSPHRASE)
    public = folder / f"recovery-{key.key_id}.public.json"
    public.write_text(json.dumps(key.public_document()))
    return Offline(key, private, public)


def secrets_of(key: recovery.OfflineKey) -> list[bytes]:
    """The offline key's private halves as they could sit in a file: raw, hex (either case)."""
    out = []
    for raw in (bytes(key.sealing), bytes(key.signing), key.secret):
        out += [raw, raw.hex().encode(), raw.hex().upper().encode()]
    return out


def files_containing(folder: Path, needles: list[bytes]) -> list[str]:
    return sorted(str(p) for p in folder.rglob("*") if p.is_file() and any(n in p.read_bytes() for n in needles))


@pytest.fixture
def offline(tmp_path: Path) -> Offline:
    return make_offline(tmp_path / "offline-machine")


@pytest.fixture
def zk_init(settings: Settings, offline: Offline) -> InitResult:
    return init_data_dir(settings, zero_knowledge=offline.public_file)


@pytest.fixture
def zk_client(settings: Settings, zk_init: InitResult) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture
def zk_world(zk_client: TestClient, zk_init: InitResult) -> World:
    return build_world(zk_client, zk_init.admin_token)


def sealed_read(client: TestClient, token: str, rid: object, purpose: str = PURPOSE) -> httpx.Response:
    return client.post(f"/v1/evidence/{rid}/sealed", json={"purpose": purpose}, headers=bearer(token))


def test_the_data_directory_holds_no_evidence_private_key(
    settings: Settings, zk_client: TestClient, zk_world: World, offline: Offline
) -> None:
    recorded(zk_client, zk_world.device, 2)  # a recording exists, sealed to the offline key only
    keys = settings.data_dir / KEYS_DIR
    assert sorted(p.name for p in keys.iterdir()) == sorted([ZERO_KNOWLEDGE_FILE, SIGNING_KEY_FILE])
    assert not list(settings.data_dir.rglob("evidence-*.key"))
    # The offline private halves were never here, in any encoding, anywhere in the data directory.
    assert files_containing(settings.data_dir, secrets_of(offline.key)) == []
    services = services_of(zk_client)
    assert services.keys.zero_knowledge and services.keys.evidence_keys == {}
    with services.sessions() as session:
        rows = session.execute(select(EvidenceKey.key_id, EvidenceKey.custody)).all()
    assert rows == [(offline.key.key_id, OFFLINE)]
    assert all(custody != SERVICE for _, custody in rows)


def test_devices_seal_to_the_offline_key_alone(zk_client: TestClient, zk_world: World, offline: Offline) -> None:
    listed = zk_client.get("/v1/keys", headers=zk_world.device.auth).json()
    assert [(k["key_id"], k["custody"], k["seal_to"]) for k in listed] == [(offline.key.key_id, "offline", True)]
    rec = recorded(zk_client, zk_world.device, 1)
    services = services_of(zk_client)
    with services.sessions() as session:
        assert list(session.scalars(select(SealedKey.key_id).where(SealedKey.recording_id == str(rec.id)))) == [
            offline.key.key_id
        ]


def test_a_sealed_read_opens_with_the_offline_key_to_the_devices_audio(
    zk_client: TestClient, zk_world: World, offline: Offline
) -> None:
    rec = recorded(zk_client, zk_world.device, 3)
    reply = sealed_read(zk_client, zk_world.officer, rec.id)
    assert reply.status_code == 200, reply.text
    document = reply.json()
    # The audit entry was committed before anything was read: it precedes every later entry, and
    # names the officer and the purpose.
    services = services_of(zk_client)
    with services.sessions() as session:
        entry = session.get(AccessLog, document["access_log"])
        assert entry is not None
        assert (entry.action, entry.target, entry.purpose) == (
            Action.EVIDENCE_READ_SEALED,
            f"recording:{rec.id}",
            PURPOSE,
        )
        assert entry.actor.startswith("user:")
    # Only the offline key's sealed data key left, never the data key itself.
    assert list(document["sealed_keys"]) == [offline.key.key_id]
    assert rec.data_key.hex() not in reply.text
    opened = sealed.open_document(document, offline.key)
    for seg, ours in zip(opened.segments, rec.segments, strict=True):
        signed = next(x for x in document["segments"] if x["index"] == seg.index)
        assert hashlib.sha256(seg.plaintext).hexdigest() == signed["plaintext_sha256"]
        pcm, _ = sf.read(io.BytesIO(seg.plaintext), dtype="int16", always_2d=True)
        np.testing.assert_array_equal(pcm, ours.pcm)  # byte-identical FLAC, decoding to the device's samples
    data, frames = sealed.join(opened, "wav")
    pcm, _ = sf.read(io.BytesIO(data), dtype="int16", always_2d=True)
    np.testing.assert_array_equal(pcm, np.concatenate([s.pcm for s in rec.segments]))
    assert frames == len(pcm)


def test_the_client_refuses_a_wrong_key_and_an_altered_document(
    tmp_path: Path, zk_client: TestClient, zk_world: World, offline: Offline
) -> None:
    rec = recorded(zk_client, zk_world.device, 2)
    document = sealed_read(zk_client, zk_world.officer, rec.id).json()
    other = make_offline(tmp_path / "another-organisation").key
    with pytest.raises(recovery.RecoveryKeyError, match="not sealed to offline key"):
        sealed.open_document(document, other)
    # Whatever a service (or the path) alters is caught with the right key too: a statement's
    # hash (the device's signature), an envelope (its signed hash), a sealed key (it does not open).
    alterations: list[Callable[[dict[str, Any]], object]] = [
        lambda d: d["segments"][1].update(plaintext_sha256="00" * 32),
        lambda d: d["segments"][0].update(envelope=base64.b64encode(b"\x01" * 80).decode()),
        lambda d: d["sealed_keys"].update({offline.key.key_id: "00" * 80}),
        lambda d: d["segments"].pop(),  # the final segment dropped
    ]
    for alter in alterations:
        tampered = json.loads(json.dumps(document))
        alter(tampered)
        with pytest.raises(IntegrityError):
            sealed.open_document(tampered, offline.key)


def test_the_read_is_logged_before_anything_leaves(
    monkeypatch: pytest.MonkeyPatch, zk_client: TestClient, zk_world: World
) -> None:
    rec = recorded(zk_client, zk_world.device, 1)

    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("the access log is down")

    monkeypatch.setattr("api.routes.sealed.record_event", broken)
    reply = sealed_read(zk_client, zk_world.officer, rec.id)
    assert reply.status_code == 503 and "access log" in reply.json()["detail"]
    assert "envelope" not in reply.text


def test_outside_zero_knowledge_mode_a_service_only_recording_has_nothing_to_hand_out(
    client: TestClient, world: World
) -> None:
    rec = recorded(client, world.device, 1)
    reply = sealed_read(client, world.officer, rec.id)
    assert reply.status_code == 409 and "sealed to no offline key" in reply.json()["detail"]


def test_audio_and_export_are_refused_clearly_in_zero_knowledge_mode(zk_client: TestClient, zk_world: World) -> None:
    rec = recorded(zk_client, zk_world.device, 1)
    audio = zk_client.post(f"/v1/evidence/{rec.id}/audio", json={"purpose": PURPOSE}, headers=bearer(zk_world.officer))
    assert audio.status_code == 409
    assert "zero-knowledge" in audio.json()["detail"] and "--key" in audio.json()["detail"]
    body = {"purpose": PURPOSE, "case_ref": "K-1", "recipient_public_key": "ab" * 32}
    export = zk_client.post(f"/v1/evidence/{rec.id}/export", json=body, headers=bearer(zk_world.officer))
    assert export.status_code == 409 and "zero-knowledge" in export.json()["detail"]


def test_the_console_refuses_to_listen_in_zero_knowledge_mode_before_logging(
    zk_client: TestClient, zk_world: World
) -> None:
    """The browser cannot hold the offline key (the CLI is the local helper): a clear page, no read logged."""
    from tests.console.support import page_csrf, provision_login, signed_in

    rec = recorded(zk_client, zk_world.device, 1)
    browser = signed_in(zk_client.app, provision_login(zk_client.app, "olivia"))  # type: ignore[arg-type]
    page = f"/console/recordings/{rec.id}"
    reply = browser.post(f"{page}/listen", data={"csrf": page_csrf(browser, page), "purpose": PURPOSE})
    assert reply.status_code == 409 and "zero-knowledge" in reply.text and "--key" in reply.text
    with services_of(zk_client).sessions() as session:
        reads = session.scalars(select(AccessLog).where(AccessLog.action == Action.EVIDENCE_READ)).all()
    assert reads == []


def test_scope_and_roles_hold_for_sealed_reads(zk_client: TestClient, zk_world: World) -> None:
    rec = recorded(zk_client, zk_world.device, 1)
    assert sealed_read(zk_client, zk_world.other_officer, rec.id).status_code == 404
    assert sealed_read(zk_client, zk_world.admin, rec.id).status_code == 403
    assert sealed_read(zk_client, zk_world.auditor, rec.id).status_code == 403
    short = sealed_read(zk_client, zk_world.officer, rec.id, purpose="x")
    assert short.status_code == 422
    services = services_of(zk_client)
    with services.sessions() as session:
        reads = session.scalars(select(AccessLog).where(AccessLog.action == Action.EVIDENCE_READ_SEALED)).all()
    assert reads == []  # nothing refused was logged as a read


def test_retention_holds_and_crypto_shredding_work_the_same(zk_client: TestClient, zk_world: World) -> None:
    services = services_of(zk_client)
    old = str(recorded(zk_client, zk_world.device, 2).id)
    held = str(recorded(zk_client, zk_world.device, 2).id)
    body = {"case_ref": "2026-LIT-9", "reason": "litigation hold for this case", "recordings": [held]}
    assert zk_client.post("/v1/holds", json=body, headers=bearer(zk_world.officer)).status_code == 201
    age(services, old, 31)
    age(services, held, 31)
    summary = job.run(services)
    assert summary.purged == [old] and held in summary.kept_by_hold
    assert_purged_once(services, old)  # the sealed data keys are gone: crypto-shredded
    assert_intact(services, held, 2)
    gone = sealed_read(zk_client, zk_world.officer, old)
    assert gone.status_code == 410
    assert sealed_read(zk_client, zk_world.officer, held).status_code == 200


def test_a_service_key_cannot_appear_in_a_zero_knowledge_data_directory(
    settings: Settings, zk_init: InitResult
) -> None:
    custodian = KeyCustodian.load(settings.data_dir, None)
    with pytest.raises(KeyFileError, match="zero-knowledge"):
        custodian.add_evidence_key(settings.data_dir, None)  # what `countersign keys rotate` would do
    # A key file planted there makes the service refuse to start rather than decrypt.
    KeyCustodian().add_evidence_key(settings.data_dir / "elsewhere", None)
    planted = next((settings.data_dir / "elsewhere" / KEYS_DIR).glob("evidence-*.key"))
    planted.rename(settings.data_dir / KEYS_DIR / planted.name)
    with pytest.raises(KeyFileError, match="zero-knowledge"):
        KeyCustodian.load(settings.data_dir, None)


def test_server_init_refuses_half_a_zero_knowledge_request(tmp_path: Path, offline: Offline) -> None:
    data = tmp_path / "cli-server"
    for args in (["--zero-knowledge"], ["--offline-public-key", str(offline.public_file)]):
        result = countersign("server", "init", "--data", str(data), *args, check=False)
        assert result.returncode == 2 and "go together" in result.stderr and not data.exists()
    not_public = countersign(
        "server", "init", "--data", str(data), "--zero-knowledge", "--offline-public-key", str(offline.private_file),
        check=False,
    )  # fmt: skip
    assert not_public.returncode == 2 and "not an offline recovery public key file" in not_public.stderr
    assert not (data / KEYS_DIR).exists()  # nothing half-made


def test_key_commands_say_zero_knowledge(settings: Settings, zk_init: InitResult, offline: Offline) -> None:
    """`keys list` works; `keys rotate` (it would make a service key) and `keys rewrap` refuse in one line."""
    data = str(settings.data_dir)
    listed = countersign("keys", "list", "--data", data)
    assert offline.key.key_id in listed.stdout and "offline" in listed.stdout
    for command in ("rotate", "rewrap"):
        refused = countersign("keys", command, "--data", data, check=False)
        assert refused.returncode != 0 and refused.stdout == "", refused.stdout
        [line] = refused.stderr.splitlines()
        assert line.startswith("error:") and "zero-knowledge" in line
    assert not list(settings.data_dir.rglob("evidence-*.key"))


# --------------------------------------------------------------------------- the bundle, finished by the client


def sealed_export(client: TestClient, token: str, rid: object, recipient: bytes | None = None) -> httpx.Response:
    body = {
        "purpose": PURPOSE,
        "case_ref": "K-ZK-7",
        "recipient": "Minato PS",
        "recipient_public_key": (recipient or bytes(PrivateKey.generate().public_key)).hex(),
    }
    return client.post(f"/v1/evidence/{rid}/export/sealed", json=body, headers=bearer(token))


def plaintext_of(rec: Any, seg: Any) -> bytes:
    """The FLAC the simulated device encoded and hashed (its envelope, opened with its data key)."""
    return open_segment(rec.data_key, rec.id, seg.index, seg.final, seg.envelope)


def service_key_of(client: TestClient) -> bytes:
    return bytes.fromhex(client.get("/v1/audit/public-key").json()["public_key"])


def test_a_zero_knowledge_export_leaves_without_audio_and_verifies_once_the_client_finishes_it(
    zk_client: TestClient, zk_world: World, offline: Offline
) -> None:
    rec = recorded(zk_client, zk_world.device, 3)
    recipient = PrivateKey.generate()
    reply = sealed_export(zk_client, zk_world.officer, rec.id, bytes(recipient.public_key))
    assert reply.status_code == 200, reply.text
    document = reply.json()
    members = {name: base64.b64decode(data) for name, data in document["members"].items()}
    # No plaintext left the service (it has none): no segment FLAC, no joined file, no data key.
    assert not [n for n in members if n.endswith(".flac")]
    assert rec.data_key.hex() not in reply.text
    # SHA256SUMS, signed by the service, already names each segment's FLAC by the hash its device signed.
    sums = members["SHA256SUMS"].decode()
    for seg in rec.segments:
        assert f"{hashlib.sha256(plaintext_of(rec, seg)).hexdigest()}  segments/{seg.index:06d}.flac\n" in sums
    assert hashlib.sha256(members["SHA256SUMS"]).hexdigest() == document["sha256sums"]
    finished = completion.finish(document, offline.key)
    for seg in rec.segments:
        assert finished[f"segments/{seg.index:06d}.flac"] == plaintext_of(
            rec, seg
        )  # byte for byte what the device encoded
    found = verify.Findings()
    verify.verify_inner(finished, service_key_of(zk_client), found)  # as the recipient checks it, with the real key
    assert found.segments == 3 and found.complete
    # Encrypted here, it opens for the recipient like any bundle.
    outer = io.BytesIO()
    write_outer(outer, [inner_zip(finished)], bytes(recipient.public_key))
    opened = io.BytesIO()
    with zipfile.ZipFile(outer) as archive:
        open_outer(archive, recipient, opened)
    assert opened.getvalue() == inner_zip(finished)
    # Audited as an export: the request first (its entry in the bundle's own custody), then what left.
    with services_of(zk_client).sessions() as session:
        asked = session.get(AccessLog, document["access_log"])
        assert asked is not None and asked.action == Action.EVIDENCE_EXPORT and asked.purpose == PURPOSE
        assert asked.detail["finished_by_client"] is True
        [left] = session.scalars(select(AccessLog).where(AccessLog.action == Action.EVIDENCE_EXPORTED)).all()
        assert left.seq > asked.seq and left.detail["sha256sums"] == document["sha256sums"]
    assert f"custody/entries/{asked.seq:012d}.json" in members


def test_the_client_refuses_to_finish_an_altered_export(
    tmp_path: Path, zk_client: TestClient, zk_world: World, offline: Offline
) -> None:
    """What a service (or the path between) alters is caught before a bundle is written."""
    rec = recorded(zk_client, zk_world.device, 2)
    document = sealed_export(zk_client, zk_world.officer, rec.id).json()
    with pytest.raises(recovery.RecoveryKeyError):
        completion.finish(document, make_offline(tmp_path / "another-organisation").key)

    def member(name: str, data: bytes) -> Callable[[dict[str, Any]], object]:
        return lambda d: d["members"].update({name: base64.b64encode(data).decode()})

    manifest = json.loads(base64.b64decode(document["members"]["manifest.json"]))
    alterations: list[Callable[[dict[str, Any]], object]] = [
        member("manifest.json", json.dumps({**manifest, "case_ref": "K-OTHER"}).encode()),  # not what was signed
        member("segments/000000.flac", plaintext_of(rec, rec.segments[0])),  # audio the service claims to have made
        member("audio/recording.flac", b"fLaC a joined file nobody signed"),
        lambda d: d["members"].pop("custody/proofs.json"),
        lambda d: d["sealed"]["segments"].pop(),  # the final segment dropped
        lambda d: d["sealed"]["segments"][0].update(plaintext_sha256="00" * 32),
    ]
    for alter in alterations:
        tampered = json.loads(json.dumps(document))
        alter(tampered)
        with pytest.raises(IntegrityError):
            completion.finish(tampered, offline.key)
    with pytest.raises(FormatError):
        completion.finish({**document, "kind": "countersign-sealed-read"}, offline.key)


def test_an_insider_who_swaps_stored_ciphertext_gets_no_export(zk_client: TestClient, zk_world: World) -> None:
    rec = recorded(zk_client, zk_world.device, 2)
    services = services_of(zk_client)
    key = segment_key(str(rec.id), 1)
    data = bytearray(services.store.get(key))
    data[40] ^= 0x01
    services.store.put(key, bytes(data))
    reply = sealed_export(zk_client, zk_world.officer, rec.id)
    assert reply.status_code == 409 and "members" not in reply.text
    with services.sessions() as session:
        actions = [
            e.action for e in session.scalars(select(AccessLog).where(AccessLog.target == f"recording:{rec.id}"))
        ]
    assert Action.EVIDENCE_EXPORT in actions and Action.EVIDENCE_INTEGRITY in actions
    assert Action.EVIDENCE_EXPORTED not in actions


def test_an_objection_record_exports_with_nothing_to_decrypt(
    zk_client: TestClient, zk_world: World, offline: Offline
) -> None:
    rec = zk_world.device.new_recording("objected")
    reply = zk_client.post("/v1/recordings", json=rec.create_body(), headers=zk_world.device.auth)
    assert reply.status_code == 201, reply.text
    document = sealed_export(zk_client, zk_world.officer, rec.id).json()
    assert document["sealed"] is None
    finished = completion.finish(document, offline.key)
    found = verify.Findings()
    verify.verify_inner(finished, service_key_of(zk_client), found)
    assert found.segments == 0 and found.complete


def test_scope_roles_and_the_log_hold_for_sealed_exports(
    monkeypatch: pytest.MonkeyPatch, zk_client: TestClient, zk_world: World
) -> None:
    rec = recorded(zk_client, zk_world.device, 1)
    assert sealed_export(zk_client, zk_world.other_officer, rec.id).status_code == 404
    assert sealed_export(zk_client, zk_world.admin, rec.id).status_code == 403
    assert sealed_export(zk_client, zk_world.auditor, rec.id).status_code == 403
    with services_of(zk_client).sessions() as session:
        exports = session.scalars(select(AccessLog).where(AccessLog.action == Action.EVIDENCE_EXPORT)).all()
    assert exports == []  # nothing refused was logged as an export

    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("the access log is down")

    monkeypatch.setattr("api.routes.export.record_event", broken)
    reply = sealed_export(zk_client, zk_world.officer, rec.id)
    assert reply.status_code == 503 and "access log" in reply.json()["detail"]
    assert "members" not in reply.text and "envelope" not in reply.text


def test_outside_zero_knowledge_mode_a_service_only_recording_exports_the_ordinary_way(
    client: TestClient, world: World
) -> None:
    rec = recorded(client, world.device, 1)
    reply = sealed_export(client, world.officer, rec.id)
    assert reply.status_code == 409 and "sealed to no offline key" in reply.json()["detail"]
    assert "/export" in reply.json()["detail"]
