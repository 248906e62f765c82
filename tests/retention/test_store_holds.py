"""Legal holds mirrored onto the store's own holds (retention.holds_sync), on both stores.

Every test runs on the filesystem store (hold markers) and on S3 (moto on loopback, a fresh
object-lock bucket per test). The ``settings`` fixture here overrides conftest's, so conftest's
``client`` and ``world`` run the real app against the store under test.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from botocore.exceptions import ClientError
from fastapi.testclient import TestClient
from sqlalchemy import select

from api.core.settings import Settings
from api.core.storage import BlobStore
from api.core.storage.interface import segment_key
from api.core.storage.s3 import S3Store
from retention import job
from retention.models import Hold
from tests.conftest import World, bearer
from tests.retention.test_holds import create, release
from tests.support.retention_support import age, assert_intact, assert_purged_once, services_of, upload
from tests.support.world import delete_early

if TYPE_CHECKING:
    from tests.support.s3_server import MotoS3

pytest_plugins = ["tests.support.s3_server"]

PREFIX = "countersign"


@pytest.fixture(params=["filesystem", "s3"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    if request.param == "filesystem":
        return Settings(data_dir=tmp_path / "server", env="development", store="filesystem")
    moto_s3: MotoS3 = request.getfixturevalue("moto_s3")
    return Settings(
        data_dir=tmp_path / "server",
        env="development",
        store="s3",
        s3_endpoint_url=moto_s3.endpoint_url,
        s3_bucket=request.getfixturevalue("s3_bucket"),
        s3_region=moto_s3.region,
        s3_prefix=PREFIX,
    )


def store_of(client: TestClient) -> BlobStore:
    return services_of(client).store


def holds(client: TestClient, rid: str, segments: int) -> list[bool]:
    store = store_of(client)
    return [store.legal_hold(segment_key(rid, i)) for i in range(segments)]


def fail_once(monkeypatch: pytest.MonkeyPatch, store: BlobStore, when: Callable[[bool], bool]) -> list[str]:
    """Make the store's set_legal_hold raise once (a crash, an outage) when ``when(on)``; returns that key."""
    real = store.set_legal_hold
    refused: list[str] = []

    def flaky(key: str, on: bool) -> None:
        if not refused and when(on):
            refused.append(key)
            raise RuntimeError("store unreachable (simulated)")
        real(key, on)

    monkeypatch.setattr(store, "set_legal_hold", flaky)
    return refused


def test_placing_a_hold_holds_the_objects_it_covers(client: TestClient, world: World) -> None:
    held, free = upload(client, world.device, 2), upload(client, world.device, 2)
    create(client, world.officer, case_ref="CASE-1", recordings=[held])
    assert holds(client, held, 2) == [True, True]
    assert holds(client, free, 2) == [False, False]


def test_a_scoped_hold_holds_segments_uploaded_later(client: TestClient, world: World) -> None:
    create(client, world.officer, case_ref="SITE-WIDE", site="north")
    later, elsewhere = upload(client, world.device, 3), upload(client, world.other_device, 2)
    assert holds(client, later, 3) == [True, True, True]
    assert holds(client, elsewhere, 2) == [False, False]


def test_a_flag_that_brings_a_recording_under_a_scoped_hold_holds_it(client: TestClient, world: World) -> None:
    create(client, world.officer, case_ref="THREATS", site="north", incident_category="threat")
    rid = upload(client, world.device, 2)
    assert holds(client, rid, 2) == [False, False]
    reply = client.post(f"/v1/evidence/{rid}/flag", json={"category": "threat"}, headers=bearer(world.officer))
    assert reply.status_code == 200, reply.text
    assert holds(client, rid, 2) == [True, True]


def test_releasing_the_last_hold_clears_the_store_hold(client: TestClient, world: World) -> None:
    rid = upload(client, world.device, 2)
    explicit = create(client, world.officer, case_ref="CASE-A", recordings=[rid]).json()["id"]
    scoped = create(client, world.officer, case_ref="CASE-B", site="north").json()["id"]
    release(client, world.officer, explicit)
    assert holds(client, rid, 2) == [True, True]  # CASE-B still covers it
    release(client, world.officer, scoped)
    assert holds(client, rid, 2) == [False, False]


def test_purge_refuses_while_the_store_holds_an_object(client: TestClient, world: World) -> None:
    """A store hold nothing in the database explains (placed by hand): refused, named, nothing shredded."""
    svc = services_of(client)
    rid = upload(client, world.device, 2)
    age(svc, rid, 400)
    key = segment_key(rid, 1)
    svc.store.set_legal_hold(key, True)
    summary = job.run(svc)
    assert summary.purged == [] and f"the object store holds {key}" in summary.errors[rid], summary.errors
    assert_intact(svc, rid, 2)  # sealed keys kept: the audio the store keeps stays readable
    reply = delete_early(client, world, rid, "data subject erasure")
    assert reply.status_code == 409 and key in reply.json()["detail"], reply.text
    assert_intact(svc, rid, 2)

    svc.store.set_legal_hold(key, False)  # someone decides it is not needed after all
    assert job.run(svc).purged == [rid]
    assert_purged_once(svc, rid)


def test_a_failed_store_release_is_healed_by_the_purge(
    client: TestClient, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Crash between the release's commit and the store release: the store hold outlives it (safe side),
    and the purge releases it because a released hold explains it."""
    svc = services_of(client)
    rid = upload(client, world.device, 2)
    hold_id = create(client, world.officer, recordings=[rid]).json()["id"]
    age(svc, rid, 400)
    refused = fail_once(monkeypatch, svc.store, lambda on: not on)
    release(client, world.officer, hold_id)
    assert refused and any(holds(client, rid, 2))
    summary = job.run(svc)
    assert summary.purged == [rid] and summary.ok, summary.errors
    assert_purged_once(svc, rid)


def test_a_failed_store_hold_places_nothing(client: TestClient, world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """The store's hold goes on before the database's commits: if the store fails, no hold is recorded."""
    svc = services_of(client)
    rid = upload(client, world.device, 2)
    fail_once(monkeypatch, svc.store, lambda on: on)
    reply = create(client, world.officer, expect=503, recordings=[rid])
    assert "nothing was held" in reply.json()["detail"]
    with svc.sessions() as session:
        assert session.scalars(select(Hold)).all() == []
    create(client, world.officer, recordings=[rid])  # the officer retries
    assert holds(client, rid, 2) == [True, True]


def test_a_failed_store_hold_on_upload_is_completed_by_the_retry(
    client: TestClient, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    create(client, world.officer, case_ref="SITE-WIDE", site="north")
    dev = world.device
    rec = dev.new_recording()
    assert client.post("/v1/recordings", json=rec.create_body(), headers=dev.auth).status_code == 201
    dev.add_segments(rec, 1)
    [seg] = rec.segments
    url = f"/v1/recordings/{rec.id}/segments/0"
    fail_once(monkeypatch, store_of(client), lambda on: on)
    with pytest.raises(RuntimeError, match="simulated"):
        client.put(url, content=seg.envelope, headers=dev.segment_headers(seg))
    assert client.put(url, content=seg.envelope, headers=dev.segment_headers(seg)).status_code == 201
    assert holds(client, str(rec.id), 1) == [True]


def test_a_lost_store_hold_is_put_back_by_the_reconcile_step(client: TestClient, world: World) -> None:
    """Held in the database but not in the store (a restored bucket, a hand edit): the job repairs it first."""
    svc = services_of(client)
    rid = upload(client, world.device, 2)
    create(client, world.officer, recordings=[rid])
    svc.store.set_legal_hold(segment_key(rid, 0), False)
    age(svc, rid, 400)
    summary = job.run(svc)
    assert summary.store_holds_repaired == [rid] and summary.kept_by_hold == {rid: ("CASE-1",)}
    assert holds(client, rid, 2) == [True, True]
    assert job.run(svc).store_holds_repaired == []


def test_a_client_going_around_the_service_cannot_delete_held_evidence(
    client: TestClient, world: World, settings: Settings, request: pytest.FixtureRequest
) -> None:
    store = store_of(client)
    if not isinstance(store, S3Store):
        pytest.skip("object lock is an S3 feature; the filesystem store has no bypassing client to refuse")
    rid = upload(client, world.device, 1)
    hold_id = create(client, world.officer, recordings=[rid]).json()["id"]
    raw = request.getfixturevalue("moto_s3").client()  # boto3 straight to the bucket, with valid credentials
    name = f"{PREFIX}/{segment_key(rid, 0)}"
    [version] = [v["VersionId"] for v in raw.list_object_versions(Bucket=settings.s3_bucket, Prefix=name)["Versions"]]
    with pytest.raises(ClientError) as refused:
        raw.delete_object(Bucket=settings.s3_bucket, Key=name, VersionId=version)
    assert refused.value.response["Error"]["Code"] == "AccessDenied"
    assert store.get(segment_key(rid, 0))
    release(client, world.officer, hold_id)
    raw.delete_object(Bucket=settings.s3_bucket, Key=name, VersionId=version)  # released: now it can go
