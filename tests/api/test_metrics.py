"""GET /metrics: Prometheus text that counts exactly what was done, labels that are route templates,
and no scraping by strangers (loopback only by default; a bearer token when one is configured)."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import nacl.signing
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from sqlalchemy import create_engine, func, select

from api.app import create_app
from api.bootstrap import InitResult
from api.core.audit import checkpoint_now
from api.core.models import AccessLog, AuditHead, utcnow
from api.core.settings import Settings, SettingsError
from evidence import wire
from evidence.audit_actions import Action
from retention import job
from tests.conftest import REPO, Deployment, World, bearer, cli_env, free_port
from tests.support.backends import POSTGRES_S3
from tests.support.factories import SimDevice
from tests.support.retention_support import age, services_of, upload
from tests.support.world import build_world, enrol_sim_device

TOKEN = "k3Jx9-metrics-scraper-0f7Qz2LwPv"  # long and random enough for MetricsAccess
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-")


def parse(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} of a whole page."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(page: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return page.get((name, tuple(sorted(labels.items()))), 0.0)


def moved(before: dict, after: dict, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


# --------------------------------------------------------------------------- a real server over HTTP


def _enrol(api: httpx.Client, admin: str) -> SimDevice:
    code = api.post("/v1/devices", json={"name": "counter-m", "site": "tokyo"}, headers=bearer(admin)).json()
    key = nacl.signing.SigningKey.generate()
    body = api.post("/v1/enrol", json={"code": code["enrolment_code"], "public_key": bytes(key.verify_key).hex()})
    assert body.status_code == 200, body.text
    keys = {k["key_id"]: bytes.fromhex(k["public_key"]) for k in body.json()["evidence_keys"]}
    return SimDevice(body.json()["device_id"], body.json()["token"], key, keys)


def test_a_scrape_over_http_counts_what_the_devices_did(deployment: Deployment) -> None:
    api = httpx.Client(base_url=deployment.server.url, timeout=30)
    device = _enrol(api, deployment.admin_token)
    scrape = api.get("/metrics")  # loopback, no token configured: allowed
    assert scrape.status_code == 200, scrape.text
    assert scrape.headers["content-type"].startswith("text/plain; version=0.0.4")
    before = parse(scrape.text)

    # Two recordings: one finished (3 segments), one left open (2); one retry, one refusal.
    stored, size = 0, 0
    for count, final in ((3, True), (2, False)):
        rec = device.new_recording()
        device.add_segments(rec, count, final=final)
        assert api.post(wire.RECORDINGS, json=rec.create_body(), headers=device.auth).status_code == 201
        for seg in rec.segments:
            url = wire.SEGMENT.format(recording_id=rec.id, index=seg.index)
            reply = api.put(url, content=seg.envelope, headers=device.segment_headers(seg))
            assert reply.status_code == 201, reply.text
            stored, size = stored + 1, size + len(seg.envelope)
    again = api.put(url, content=seg.envelope, headers=device.segment_headers(seg))
    assert again.status_code == 200  # the same bytes again: a repeat
    ahead = wire.SEGMENT.format(recording_id=rec.id, index=7)
    assert api.put(ahead, content=seg.envelope, headers=device.segment_headers(seg)).status_code == 409
    assert api.get(f"/v1/no-such-thing/{rec.id}").status_code == 404

    after = parse(api.get("/metrics").text)
    assert moved(before, after, "countersign_segment_uploads_total", outcome="stored") == stored == 5
    assert moved(before, after, "countersign_segment_uploads_total", outcome="repeat") == 1
    assert moved(before, after, "countersign_segment_uploads_total", outcome="refused") == 1
    assert moved(before, after, "countersign_segment_uploads_total", outcome="failed") == 0
    assert moved(before, after, "countersign_segment_bytes_total") == size

    # Latency by route template: the segment route saw 6 answers in 2xx and 1 in 4xx, under one label.
    segment = {"route": wire.SEGMENT, "method": "PUT"}
    timed = "countersign_http_request_duration_seconds_count"
    assert moved(before, after, timed, **segment, status="2xx") == 6
    assert moved(before, after, timed, **segment, status="4xx") == 1
    assert moved(before, after, timed, route=wire.RECORDINGS, method="POST", status="2xx") == 2
    assert moved(before, after, timed, route="unmatched", method="GET", status="4xx") == 1
    assert moved(before, after, timed, route="/metrics", method="GET", status="2xx") == 1  # the first scrape
    routes = {dict(labels).get("route") for (name, labels) in after if name == timed}
    assert wire.SEGMENT in routes and not any(UUID.search(r or "") for r in routes)  # templates, never ids
    assert all(r == "unmatched" or (r or "").startswith("/") for r in routes)

    # From the database: the audit log's length, open recordings, devices seen (the deployment's
    # CLI-enrolled recorder counts too: its enrolment is its last contact).
    engine = create_engine(Settings(data_dir=deployment.server.data, env="development").sqlalchemy_url)
    try:
        with engine.connect() as db:
            seq = db.scalar(select(AuditHead.seq))
            uploads = db.scalar(select(func.count()).where(AccessLog.action == Action.SEGMENT_UPLOAD))
    finally:
        engine.dispose()
    assert value(after, "countersign_audit_entries_total") == seq
    assert moved(before, after, "countersign_audit_entries_total") >= stored and uploads == stored
    assert value(after, "countersign_database_up") == 1
    assert value(after, "countersign_open_recordings") == 1
    assert value(after, "countersign_devices_enabled") == 2
    for window in ("5m", "1h", "24h"):
        assert value(after, "countersign_devices_seen", within=window) == 2
    assert 0 <= value(after, "countersign_device_oldest_contact_age_seconds") < 300
    assert value(after, "countersign_audit_unsigned_entries") <= seq
    api.close()


# --------------------------------------------------------------------------- in process (TestClient)


@pytest.fixture
def token_app(tmp_path: Path, initialised: InitResult, settings: Settings) -> FastAPI:
    return create_app(settings.model_copy(update={"metrics_token": SecretStr(TOKEN)}))


@pytest.fixture
def token_client(token_app: FastAPI) -> Iterator[TestClient]:
    with TestClient(token_app) as test_client:
        yield test_client


def scrape(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    reply = client.get("/metrics", headers=bearer(TOKEN))
    assert reply.status_code == 200, reply.text
    return parse(reply.text)


def test_strangers_are_refused(client: TestClient, token_client: TestClient) -> None:
    # No token configured: loopback only, and the TestClient's address ("testclient") is not loopback.
    refused = client.get("/metrics")
    assert refused.status_code == 403 and "loopback" in refused.json()["detail"]
    # A token configured: nobody without it, whatever the address.
    for headers in ({}, bearer("wrong-token-of-the-same-len"), {"Authorization": f"Basic {TOKEN}"}, bearer("")):
        reply = token_client.get("/metrics", headers=headers)
        assert reply.status_code == 401, headers
        assert reply.headers["www-authenticate"] == "Bearer"
        assert "countersign_" not in reply.text
    assert token_client.get("/metrics", headers=bearer(TOKEN)).status_code == 200


def test_metrics_are_not_in_the_openapi_schema(client: TestClient) -> None:
    assert not any(path.startswith("/metrics") for path in client.get("/openapi.json").json()["paths"])


@pytest.mark.usefixtures("initialised")
@pytest.mark.parametrize("token", ["short", "changeme-changeme-changeme-0", "x" * 40])
def test_a_weak_token_stops_the_service_from_starting(settings: Settings, token: str) -> None:
    with pytest.raises(SettingsError, match="COUNTERSIGN_METRICS_TOKEN"):
        create_app(settings.model_copy(update={"metrics_token": SecretStr(token)}))


def test_purge_results_and_the_checkpoint_age(token_client: TestClient, initialised: InitResult) -> None:
    world: World = build_world(token_client, initialised.admin_token)
    svc = services_of(token_client)
    before = scrape(token_client)
    due = upload(token_client, world.device, 1)
    held = upload(token_client, world.device, 1)
    assert token_client.post(
        "/v1/holds",
        json={"case_ref": "CASE-9", "reason": "preserve for the litigation", "recordings": [held]},
        headers=bearer(world.officer),
    ).is_success
    for rid in (due, held):
        age(svc, rid, days=365 * 20)  # past any retention rule
    summary = job.run(svc)
    assert summary.purged == [due] and list(summary.kept_by_hold) == [held]
    job.run(svc, dry_run=True)  # a dry run changes nothing and counts nothing
    with svc.sessions() as session, session.begin():
        checkpoint_now(session)

    after = scrape(token_client)
    assert moved(before, after, "countersign_purge_results_total", outcome="purged") == 1
    assert moved(before, after, "countersign_purge_results_total", outcome="held") == 1
    assert moved(before, after, "countersign_purge_results_total", outcome="error") == 0
    assert moved(before, after, "countersign_retention_runs_total", result="ok") == 1
    assert 0 <= value(after, "countersign_audit_checkpoint_age_seconds") < 60
    assert value(after, "countersign_audit_unsigned_entries") == 0
    assert 0 <= value(after, "countersign_retention_last_run_age_seconds") < 60


def test_a_device_silent_for_a_day_is_not_seen(token_client: TestClient, initialised: InitResult) -> None:
    world = build_world(token_client, initialised.admin_token)
    quiet = enrol_sim_device(token_client, initialised.admin_token, "counter-quiet", "north")
    upload(token_client, quiet, 1)
    svc = services_of(token_client)
    from api.core.models import Device, Recording

    with svc.sessions() as session, session.begin():
        long_ago = utcnow() - timedelta(days=3)
        session.get(Device, quiet.id).enrolled_at = long_ago  # type: ignore[union-attr]
        for recording in session.scalars(select(Recording).where(Recording.device_id == quiet.id)):
            recording.last_activity_at = long_ago
        session.get(Device, world.other_device.id).disabled = True  # type: ignore[union-attr]
    page = scrape(token_client)
    assert value(page, "countersign_devices_enabled") == 2  # world.device and the quiet one
    assert [value(page, "countersign_devices_seen", within=w) for w in ("5m", "1h", "24h")] == [1, 1, 1]
    assert 3 * 86400 - 60 < value(page, "countersign_device_oldest_contact_age_seconds") < 3 * 86400 + 60


# --------------------------------------------------------------------------- several workers


@pytest.mark.skipif(POSTGRES_S3, reason="the same with any database: run once, in the SQLite pass")
def test_several_workers_add_up_in_one_scrape(tmp_path: Path) -> None:
    """`server run --workers 2` with PROMETHEUS_MULTIPROC_DIR: an earlier run's files are cleared, each
    worker counts into its own files, and one scrape adds them all up."""
    data = tmp_path / "server"
    shared = tmp_path / "prometheus"
    shared.mkdir()
    (shared / "counter_1.db").write_bytes(b"an earlier run's counts")
    env = cli_env(PROMETHEUS_MULTIPROC_DIR=str(shared))
    init = [sys.executable, "-m", "countersign", "server", "init", "--data", str(data)]
    subprocess.run(init, env=env, check=True, capture_output=True, cwd=REPO, timeout=120)
    port = free_port()
    log = tmp_path / "workers.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "countersign",
                "server",
                "run",
                "--data",
                str(data),
                "--port",
                str(port),
                "--workers=2",
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        # New connections each time, so both workers answer some (the kernel spreads accepts).
        for _ in range(40):
            assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200
        page = parse(httpx.get(f"{url}/metrics", timeout=10).text)
        route = {"route": "/healthz", "method": "GET", "status": "2xx"}
        assert value(page, "countersign_http_request_duration_seconds_count", **route) >= 41
        assert not (shared / "counter_1.db").exists()
        workers = {f.stem.rsplit("_", 1)[1] for f in shared.glob("histogram_*.db")}
        assert len(workers) == 2, workers  # both answered, and the total above is theirs together
        assert value(page, "countersign_database_up") == 1
    finally:
        proc.terminate()
        proc.wait(timeout=20)
