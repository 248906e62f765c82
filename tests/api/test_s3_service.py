"""The service end to end on the S3 store: moto and SeaweedFS on loopback, a fresh object-lock bucket per test.

The ``settings`` fixture here overrides conftest's, so conftest's ``client`` and ``world`` run
the real app against S3, with credentials found by boto3's usual chain.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.core.services import Services
from api.core.settings import Settings
from api.core.storage.interface import segment_key
from api.core.storage.s3 import BucketNotUsable, S3Store
from tests.conftest import World, bearer
from tests.support.retention_support import assert_intact
from tests.support.world import delete_early

if TYPE_CHECKING:
    from tests.support.s3_server import S3Server

pytest_plugins = ["tests.support.s3_server"]

PREFIX = "countersign"


@pytest.fixture(params=["moto_s3", "seaweed_s3"], ids=["moto", "seaweedfs"])
def s3_server(request: pytest.FixtureRequest, aws_env: None) -> S3Server:
    """Each S3 server in turn: moto, and SeaweedFS (strict where moto is lenient, as AWS is)."""
    server: S3Server = request.getfixturevalue(request.param)
    return server


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> str:
    return s3_server.create_locked_bucket()


@pytest.fixture
def settings(tmp_path: Path, s3_server: S3Server, s3_bucket: str) -> Settings:
    return Settings(
        data_dir=tmp_path / "server",
        env="development",
        store="s3",
        s3_endpoint_url=s3_server.endpoint_url,
        s3_bucket=s3_bucket,
        s3_region=s3_server.region,
        s3_prefix=PREFIX,
    )


def _services(client: TestClient) -> Services:
    services: Services = client.app.state.services  # type: ignore[attr-defined]
    return services


def _upload(client: TestClient, world: World, segments: int) -> Any:
    rec = world.device.new_recording()
    world.device.add_segments(rec, segments)
    assert client.post("/v1/recordings", json=rec.create_body(), headers=world.device.auth).status_code == 201
    for seg in rec.segments:
        url = f"/v1/recordings/{rec.id}/segments/{seg.index}"
        reply = client.put(url, content=seg.envelope, headers=world.device.segment_headers(seg))
        assert reply.status_code == 201, reply.text
    return rec


def _versions(s3_server: S3Server, settings: Settings, rid: str) -> list[str]:
    prefix = f"{PREFIX}/recordings/{rid}/"
    reply = s3_server.client().list_object_versions(Bucket=settings.s3_bucket, Prefix=prefix)
    return [v["Key"] for v in reply.get("Versions", []) + reply.get("DeleteMarkers", [])]


def test_upload_and_audited_read_through_s3(
    client: TestClient, world: World, settings: Settings, s3_server: S3Server
) -> None:
    assert isinstance(_services(client).store, S3Store)
    rec = _upload(client, world, 3)
    listed = s3_server.client().list_objects_v2(Bucket=settings.s3_bucket)
    assert sorted(o["Key"] for o in listed["Contents"]) == [f"{PREFIX}/{segment_key(str(rec.id), i)}" for i in range(3)]
    assert not (settings.data_dir / "objects").exists() or not any((settings.data_dir / "objects").iterdir())

    purpose = "Complaint 2026-118 review"
    audio = client.post(f"/v1/evidence/{rec.id}/audio", json={"purpose": purpose}, headers=bearer(world.officer))
    assert audio.status_code == 200 and audio.content[:4] == b"fLaC"
    custody = client.get(f"/v1/audit/custody/{rec.id}", headers=bearer(world.auditor)).json()
    reads = [e for e in custody if e["action"] == "api:evidence:read"]
    assert [e["purpose"] for e in reads] == [purpose]


def test_early_deletion_leaves_no_version_behind(
    client: TestClient, world: World, settings: Settings, s3_server: S3Server
) -> None:
    rec = _upload(client, world, 2)
    reply = delete_early(client, world, rec.id, "recorded by mistake at the wrong counter")
    assert reply.status_code == 200, reply.text
    assert reply.json()["state"] == "purged"
    assert _versions(s3_server, settings, str(rec.id)) == []  # no versions, no delete markers


def test_a_store_level_hold_stops_a_purge_before_shredding(
    client: TestClient, world: World, settings: Settings, s3_server: S3Server
) -> None:
    """Even if the database said "delete", object lock keeps a held segment, so the keys are kept too."""
    rec = _upload(client, world, 2)
    held = segment_key(str(rec.id), 0)
    _services(client).store.set_legal_hold(held, True)
    reply = delete_early(client, world, rec.id, "recorded by mistake at the wrong counter")
    assert reply.status_code == 409, reply.text
    assert f"the object store holds {held}" in reply.json()["detail"]
    assert f"{PREFIX}/{held}" in _versions(s3_server, settings, str(rec.id))
    assert _services(client).store.legal_hold(held)
    assert_intact(_services(client), str(rec.id), 2)  # not shredded: the audio it keeps stays readable


def test_placing_reading_and_releasing_a_hold_through_the_api(client: TestClient, world: World) -> None:
    """On SeaweedFS a version that never had a hold answers NoSuchObjectLegalHold (as AWS documents):
    that is "not held", not a failure (it was a 503 when placing the hold). moto answers OFF."""
    rec = _upload(client, world, 2)
    keys = [segment_key(str(rec.id), i) for i in range(2)]
    store = _services(client).store
    assert [store.legal_hold(k) for k in keys] == [False, False]
    body = {"case_ref": "2026-LIT-031", "reason": "preserve for the litigation", "recordings": [str(rec.id)]}
    placed = client.post("/v1/holds", json=body, headers=bearer(world.officer))
    assert placed.status_code == 201, placed.text
    assert [store.legal_hold(k) for k in keys] == [True, True]
    shown = client.get(f"/v1/holds/{placed.json()['id']}", headers=bearer(world.officer))
    assert shown.status_code == 200 and shown.json()["active"]
    url = f"/v1/holds/{placed.json()['id']}/release"
    released = client.post(url, json={"reason": "case settled in 2026"}, headers=bearer(world.officer))
    assert released.status_code == 200, released.text
    assert [store.legal_hold(k) for k in keys] == [False, False]
    reply = delete_early(client, world, rec.id, "recorded by mistake at the wrong counter")
    assert reply.status_code == 200 and reply.json()["state"] == "purged", reply.text


@pytest.mark.usefixtures("initialised")
def test_service_refuses_a_bucket_without_object_lock(settings: Settings, s3_server: S3Server) -> None:
    plain = "cs-test-no-lock"
    s3_server.client().create_bucket(Bucket=plain)
    with pytest.raises(BucketNotUsable, match="does not have object lock enabled"):
        create_app(settings.model_copy(update={"s3_bucket": plain}))
    with pytest.raises(BucketNotUsable, match="does not exist"):
        create_app(settings.model_copy(update={"s3_bucket": "cs-test-never-made"}))


@pytest.mark.usefixtures("initialised")
def test_service_refuses_to_start_without_credentials(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(BucketNotUsable, match="no AWS credentials"):
        create_app(settings)
