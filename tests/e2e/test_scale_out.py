"""Several API processes on one database and one store (PostgreSQL + S3 in the
postgres-s3 pass, SQLite + files otherwise): concurrent uploads from many
devices, concurrent reads and audit appends through both processes keep one
linear, verifiable audit chain. In the postgres-s3 pass the store is each S3
server in turn: moto, and SeaweedFS (tests/support/seaweed.py)."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator

import httpx
import nacl.signing
import pytest
import soundfile as sf

from api.bootstrap import approve_user
from api.core.settings import Settings
from evidence.audit_log import verify_export
from tests.conftest import Deployment, LiveServer, bearer, free_port
from tests.support.backends import BACKENDS, POSTGRES_S3
from tests.support.factories import SimDevice

DEVICES = 6
RECORDINGS_PER_DEVICE = 2
SEGMENTS = 3


@pytest.fixture(params=["moto", "seaweedfs"] if POSTGRES_S3 else ["files"])
def store_server(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Where the servers' store is: backend_env's (files, or a moto bucket), or a bucket on SeaweedFS."""
    if request.param == "seaweedfs":
        for name, value in BACKENDS.seaweed_bucket_env().items():
            monkeypatch.setenv(name, value)  # before the servers start: cli_env passes these on
    return str(request.param)


@pytest.fixture
def deployment(store_server: str, deployment: Deployment) -> Deployment:
    """conftest's deployment, started after ``store_server`` chose the store."""
    return deployment


@pytest.fixture
def second_server(deployment: Deployment) -> Iterator[LiveServer]:
    server = LiveServer(deployment.server.data, free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


def enrol(api: httpx.Client, admin: str, name: str) -> SimDevice:
    code = api.post("/v1/devices", json={"name": name, "site": "tokyo"}, headers=bearer(admin)).json()
    key = nacl.signing.SigningKey.generate()
    body = api.post(
        "/v1/enrol", json={"code": code["enrolment_code"], "public_key": bytes(key.verify_key).hex()}
    ).json()
    keys = {k["key_id"]: bytes.fromhex(k["public_key"]) for k in body["evidence_keys"]}
    return SimDevice(body["device_id"], body["token"], key, keys)


def test_two_processes_one_linear_audit_chain(deployment: Deployment, second_server: LiveServer) -> None:
    urls = [deployment.server.url, second_server.url]
    clients = [httpx.Client(base_url=u, timeout=60) for u in urls]
    admin = deployment.admin_token
    auditor = (
        clients[1]
        .post("/v1/users", json={"name": "audrey", "role": "auditor", "sites": []}, headers=bearer(admin))
        .json()["token"]
    )
    approve_user(Settings(data_dir=deployment.server.data, env="development"), "audrey")
    devices = [enrol(clients[i % 2], admin, f"counter-{i}") for i in range(DEVICES)]
    errors: list[str] = []
    uploaded: list[str] = []
    stop_readers = threading.Event()

    def device_work(n: int, device: SimDevice) -> None:
        # Each request goes to the other process than the last: the chain must not care.
        with httpx.Client(timeout=60) as http:
            for r in range(RECORDINGS_PER_DEVICE):
                rec = device.new_recording()
                device.add_segments(rec, SEGMENTS)
                url = urls[(n + r) % 2]
                reply = http.post(f"{url}/v1/recordings", json=rec.create_body(), headers=device.auth)
                if reply.status_code != 201:
                    errors.append(f"create: {reply.status_code} {reply.text}")
                    return
                for seg in rec.segments:
                    url = urls[(n + r + seg.index + 1) % 2]
                    reply = http.put(
                        f"{url}/v1/recordings/{rec.id}/segments/{seg.index}",
                        content=seg.envelope,
                        headers=device.segment_headers(seg),
                    )
                    if reply.status_code != 201:
                        errors.append(f"segment: {reply.status_code} {reply.text}")
                        return
                uploaded.append(str(rec.id))

    def reader(n: int) -> None:
        with httpx.Client(timeout=60) as http:
            while not stop_readers.is_set():
                url = urls[n % 2]
                listed = http.get(f"{url}/v1/evidence", headers=bearer(deployment.officer_token))
                if listed.status_code != 200:
                    errors.append(f"list: {listed.status_code}")
                    return
                complete = [r["id"] for r in listed.json() if r["status"] == "complete"]
                if complete:
                    audio = http.post(
                        f"{url}/v1/evidence/{complete[0]}/audio",
                        json={"purpose": "concurrency test read"},
                        headers=bearer(deployment.officer_token),
                    )
                    if audio.status_code != 200:
                        errors.append(f"read: {audio.status_code} {audio.text}")
                        return
                n += 1

    workers = [threading.Thread(target=device_work, args=(n, d)) for n, d in enumerate(devices)]
    readers = [threading.Thread(target=reader, args=(n,)) for n in range(2)]
    for t in [*workers, *readers]:
        t.start()
    for t in workers:
        t.join()
    stop_readers.set()
    for t in readers:
        t.join()
    assert not errors, errors[:5]
    assert len(uploaded) == DEVICES * RECORDINGS_PER_DEVICE

    # Every recording reads back whole from either process.
    for i, rid in enumerate(uploaded):
        audio = clients[i % 2].post(
            f"/v1/evidence/{rid}/audio",
            json={"purpose": "final check of each"},
            headers=bearer(deployment.officer_token),
        )
        assert audio.status_code == 200
        assert len(sf.read(io.BytesIO(audio.content))[0]) == SEGMENTS * 16000

    export = clients[0].get("/v1/audit/export", headers=bearer(auditor))
    assert export.status_code == 200
    report = verify_export(
        export.text.splitlines(), bytes.fromhex(clients[1].get("/v1/audit/public-key").json()["public_key"])
    )
    assert report.ok, report.problems
    assert report.first_seq == 1 and report.last_seq == report.entries  # gap-free across both processes
    uploads = export.text.count('"action":"api:segment:upload"')  # v3: each entry's canonical JSON
    assert uploads == DEVICES * RECORDINGS_PER_DEVICE * SEGMENTS
    for client in clients:
        client.close()
