"""The upload path's cost and its guarantees under concurrency.

The statement count is behaviour, not timing: a change that adds a query to every upload (a second
token lookup, a relationship load nobody reads, the audit head read twice) fails here, with the
statements listed. The concurrency test uploads from several threads at once, with a checkpoint due
every few entries (signed after the commits, outside the append lock), and checks one gap-free,
verifiable chain and a Merkle tree head for every checkpoint.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import nacl.signing
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from api.bootstrap import InitResult
from api.core.audit import checkpoint_now, checkpoint_pending
from api.core.db import StatementCounter
from api.core.models import AccessLog, AuditCheckpoint, AuditHead
from api.core.services import Services
from api.core.settings import Settings
from evidence.audit_log import verify_export
from tests.conftest import Deployment, World, bearer
from tests.support.factories import SimRecording

# Per new segment: the token (1), everything the upload checks (1, with whether its site has an
# active hold: none here, so no hold lookup), the chain head's compare-and-set (1), the quota charge
# (1), the segment row (1), the audit entry (3: bump the head returning seq and chain hash, insert
# the entry, move the head's chain hash). With a hold on the site, the lookup adds one.
STATEMENTS_PER_UPLOAD = 8


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "server", env="development", audit_checkpoint_entries=7)


def services(app: FastAPI) -> Services:
    found: Services = app.state.services
    return found


def put(client: TestClient, world: World, rec: SimRecording, index: int) -> int:
    seg = rec.segments[index]
    reply = client.put(
        f"/v1/recordings/{rec.id}/segments/{index}", content=seg.envelope, headers=world.device.segment_headers(seg)
    )
    return reply.status_code


def open_recording(client: TestClient, world: World, segments: int) -> SimRecording:
    rec = world.device.new_recording()
    world.device.add_segments(rec, segments, final=False)
    reply = client.post("/v1/recordings", json=rec.create_body(), headers=world.device.auth)
    assert reply.status_code == 201, reply.text
    return rec


def test_statements_per_upload(app: FastAPI, client: TestClient, world: World) -> None:
    rec = open_recording(client, world, 6)
    assert put(client, world, rec, 0) == 201
    engine = services(app).engine
    with services(app).sessions() as session:  # sign now: no checkpoint falls due in the 3 counted uploads
        checkpoint_now(session)
        session.commit()
    counts = []
    with StatementCounter(engine) as counter:
        for index in range(1, 4):
            counter.reset()
            assert put(client, world, rec, index) == 201
            counts.append((len(counter.statements), counter.commits, counter.statements))
    for statements, commits, listed in counts:
        assert statements == STATEMENTS_PER_UPLOAD, "\n".join(listed)
        assert commits == 1
    # A repeat of a stored segment: the token and one read, no writes, no commit.
    with StatementCounter(engine) as counter:
        assert put(client, world, rec, 2) == 200
    assert len(counter.statements) == 2 and counter.commits == 0, counter.statements


def test_concurrent_uploads_keep_one_gap_free_chain(
    app: FastAPI, client: TestClient, world: World, initialised: InitResult
) -> None:
    threads, per_thread = 6, 8
    recs = [open_recording(client, world, per_thread) for _ in range(threads)]
    failures: list[str] = []
    go = threading.Barrier(threads)

    def device(rec: SimRecording) -> None:
        with TestClient(app) as own:  # one connection-like client per thread, one shared service
            go.wait()
            for index in range(per_thread):
                status = put(own, world, rec, index)
                if status != 201:
                    failures.append(f"{rec.id} {index}: {status}")

    workers = [threading.Thread(target=device, args=(rec,)) for rec in recs]
    for t in workers:
        t.start()
    for t in workers:
        t.join(timeout=120)
    assert not failures, failures
    svc = services(app)
    policy = svc.sessions.kw["info"]["audit_signer"]
    checkpoint_pending(svc.engine, policy)  # whatever is still due (one may have been skipped as busy)
    with svc.sessions() as session:
        seqs = list(session.scalars(select(AccessLog.seq).order_by(AccessLog.seq)))
        uploads = session.scalar(select(func.count()).where(AccessLog.action == "api:segment:upload"))
        signed = list(session.scalars(select(AuditCheckpoint).order_by(AuditCheckpoint.seq)))
        head = session.scalar(select(AuditHead))
        assert head is not None
    assert seqs == list(range(1, len(seqs) + 1)) and head.seq == len(seqs)
    assert uploads == threads * per_thread
    # Checkpoints were signed along the way (every 7 entries, each after its commit), each a tree head.
    assert len(signed) >= (threads * per_thread) // 7 - 1 and all(c.tree_root for c in signed)
    assert head.nodes_filled == head.checkpoint_seq == signed[-1].seq
    reply = client.get("/v1/audit/export", headers=bearer(world.auditor))
    assert reply.status_code == 200, reply.text
    report = verify_export(reply.text.splitlines(), bytes.fromhex(initialised.service_public_key))
    assert report.ok, report.problems
    assert report.last_checkpoint == report.last_seq


def test_parallel_admin_and_enrolment_calls_never_hang(deployment: Deployment) -> None:
    """16 threads of admin calls and enrolments at once through a real server (uvicorn) all finish.

    A soak run once hung enrolment with 8 concurrent admin calls in the SQLite writer queue; a hang
    here fails within the bound (each request has a timeout, the whole run a deadline).
    """
    threads, rounds = 16, 3
    url, admin = deployment.server.url, deployment.admin_token
    failures: list[str] = []
    done: list[int] = []
    go = threading.Barrier(threads)

    def admin_work(n: int) -> None:
        with httpx.Client(base_url=url, headers=bearer(admin), timeout=20) as api:
            go.wait()
            for r in range(rounds):
                try:
                    made = api.post("/v1/devices", json={"name": f"par-{n}-{r}", "site": "tokyo"})
                    if made.status_code != 201:
                        failures.append(f"device {n}/{r}: {made.status_code} {made.text}")
                        continue
                    key = nacl.signing.SigningKey.generate()
                    enrolled = httpx.post(
                        f"{url}/v1/enrol",
                        json={"code": made.json()["enrolment_code"], "public_key": bytes(key.verify_key).hex()},
                        timeout=20,
                    )
                    if enrolled.status_code != 200:
                        failures.append(f"enrol {n}/{r}: {enrolled.status_code} {enrolled.text}")
                    user = api.post("/v1/users", json={"name": f"par-{n}-{r}", "role": "auditor", "sites": []})
                    if user.status_code != 201:
                        failures.append(f"user {n}/{r}: {user.status_code} {user.text}")
                    device_id = made.json()["id"]
                    for step in ("disable", "enable"):
                        changed = api.post(f"/v1/devices/{device_id}/{step}", json={"reason": "parallel check"})
                        if changed.status_code != 200:
                            failures.append(f"{step} {n}/{r}: {changed.status_code} {changed.text}")
                    if api.get("/v1/devices").status_code != 200:
                        failures.append(f"list {n}/{r}")
                except httpx.HTTPError as exc:  # a timeout is a hang
                    failures.append(f"{n}/{r}: {type(exc).__name__} {exc}")
        done.append(n)

    workers = [threading.Thread(target=admin_work, args=(n,), daemon=True) for n in range(threads)]
    deadline = time.monotonic() + 120
    for t in workers:
        t.start()
    for t in workers:
        t.join(timeout=max(0.1, deadline - time.monotonic()))
    assert len(done) == threads, f"{threads - len(done)} threads still waiting after 120 s: {failures}"
    assert not failures, failures
