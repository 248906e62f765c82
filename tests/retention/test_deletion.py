"""Destroying evidence takes two people or time (retention/deletion.py).

The hostile user here is one officer acting alone: they can ask, and they can
cancel, but nothing they do alone deletes a recording before the grace period
has run out for everyone to see, and an incident never without a second officer.
"""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import select

from api.core.models import AccessLog, Recording, utcnow
from api.core.services import Services
from retention import job
from tests.conftest import World, bearer
from tests.support.world import request_deletion

REASON = "the customer asked for erasure (ticket 2026-311)"


def svc(client: TestClient) -> Services:
    return client.app.state.services  # type: ignore[attr-defined,no-any-return]


def upload(client: TestClient, world: World, segments: int = 2) -> str:
    dev = world.device
    rec = dev.new_recording()
    dev.add_segments(rec, segments)
    assert client.post("/v1/recordings", json=rec.create_body(), headers=dev.auth).status_code == 201
    for seg in rec.segments:
        url = f"/v1/recordings/{rec.id}/segments/{seg.index}"
        assert client.put(url, content=seg.envelope, headers=dev.segment_headers(seg)).status_code == 201
    return str(rec.id)


def purge_state(client: TestClient, rid: str) -> str | None:
    with svc(client).sessions() as session:
        row = session.get(Recording, rid)
        assert row is not None
        return row.purge_state


def entries(client: TestClient, rid: str) -> list[tuple[str, str, str | None]]:
    with svc(client).sessions() as session:
        rows = session.scalars(select(AccessLog).where(AccessLog.target == f"recording:{rid}").order_by(AccessLog.seq))
        return [(r.action, r.outcome, r.purpose) for r in rows if "deletion" in r.action or "delete" in r.action]


def test_one_officer_alone_waits_out_the_grace_period(client: TestClient, world: World) -> None:
    rid = upload(client, world)
    asked = request_deletion(client, world.officer, rid, REASON)
    assert asked.status_code == 202, asked.text
    body = asked.json()
    assert body["state"] == "pending" and not body["needs_approval"]
    grace = svc(client).settings.deletion_grace_seconds
    assert grace == 72 * 3600  # three days, unless configured otherwise

    assert job.run(svc(client)).purged == []  # the job right away: nothing
    assert job.run(svc(client), now=utcnow() + timedelta(seconds=grace - 60)).purged == []
    assert purge_state(client, rid) is None
    later = job.run(svc(client), now=utcnow() + timedelta(seconds=grace + 60))
    assert later.purged == [rid] and later.requested_deletions == [rid]
    assert purge_state(client, rid) == "purged"
    tomb = client.get(f"/v1/evidence/{rid}/tombstone", headers=bearer(world.officer)).json()
    assert tomb["reason"] == REASON and tomb["actor"] == "system"
    assert [a for a, _, _ in entries(client, rid)] == ["api:deletion:request"]


def test_a_cancelled_request_never_deletes(client: TestClient, world: World) -> None:
    rid = upload(client, world)
    request_id = request_deletion(client, world.officer, rid, REASON).json()["id"]
    cancel = {"reason": "the customer withdrew the request"}
    # Another officer of the site may stop it (so may the requester).
    reply = client.post(f"/v1/deletions/{request_id}/cancel", json=cancel, headers=bearer(world.second_officer))
    assert reply.status_code == 200 and reply.json()["state"] == "cancelled"
    assert job.run(svc(client), now=utcnow() + timedelta(days=4)).purged == []
    assert purge_state(client, rid) is None
    again = client.post(f"/v1/deletions/{request_id}/approve", headers=bearer(world.second_officer))
    assert again.status_code == 409  # a cancelled request cannot be revived
    assert ("api:deletion:cancel", "allowed", cancel["reason"]) in entries(client, rid)


def test_an_incident_needs_the_second_officer(client: TestClient, world: World) -> None:
    rid = upload(client, world)
    flagged = client.post(f"/v1/evidence/{rid}/flag", json={"category": "threat"}, headers=bearer(world.officer))
    assert flagged.status_code == 200
    asked = request_deletion(client, world.officer, rid, REASON).json()
    assert asked["needs_approval"] is True
    assert job.run(svc(client), now=utcnow() + timedelta(days=365)).purged == []  # time alone: never
    assert purge_state(client, rid) is None
    done = client.post(f"/v1/deletions/{asked['id']}/approve", headers=bearer(world.second_officer))
    assert done.status_code == 200, done.text
    assert purge_state(client, rid) == "purged"


def test_nobody_but_a_second_officer_of_the_site_approves(client: TestClient, world: World) -> None:
    rid = upload(client, world)
    request_id = request_deletion(client, world.officer, rid, REASON).json()["id"]
    approve = f"/v1/deletions/{request_id}/approve"
    assert client.post(approve, headers=bearer(world.officer)).status_code == 403  # the requester
    assert client.post(approve, headers=bearer(world.other_officer)).status_code == 404  # another site
    assert client.post(approve, headers=bearer(world.admin)).status_code == 403  # admins never delete
    assert client.post(approve, headers=bearer(world.auditor)).status_code == 403
    assert purge_state(client, rid) is None
    # A second request while one is open is refused: one officer cannot queue copies to approve each other.
    assert request_deletion(client, world.second_officer, rid, REASON).status_code == 409
    listed = client.get("/v1/deletions", headers=bearer(world.other_officer)).json()
    assert listed == []  # south sees nothing of north's requests


def test_holds_win_at_every_step(client: TestClient, world: World) -> None:
    rid = upload(client, world)
    hold = {"case_ref": "CASE-9", "reason": "pending litigation over this", "recordings": [rid]}
    request_id = request_deletion(client, world.officer, rid, REASON).json()["id"]
    hold_id = client.post("/v1/holds", json=hold, headers=bearer(world.officer)).json()["id"]

    assert request_deletion(client, world.second_officer, rid, REASON).status_code == 409  # already open anyway
    waits = client.post(f"/v1/deletions/{request_id}/approve", headers=bearer(world.second_officer))
    assert waits.status_code == 409 and "CASE-9" in waits.json()["detail"]
    assert job.run(svc(client), now=utcnow() + timedelta(days=4)).purged == []
    assert purge_state(client, rid) is None
    assert ("api:recording:delete", "denied", REASON) in entries(client, rid)

    release = {"reason": "the case was settled"}
    assert client.post(f"/v1/holds/{hold_id}/release", json=release, headers=bearer(world.officer)).status_code == 200
    # Approved while held, it waited; released, the next run carries it out (days before policy would).
    after = job.run(svc(client), now=utcnow() + timedelta(days=4))
    assert after.purged == [rid] and after.requested_deletions == [rid]
    assert purge_state(client, rid) == "purged"


def test_a_held_recording_cannot_even_be_requested(client: TestClient, world: World) -> None:
    rid = upload(client, world)
    hold = {"case_ref": "CASE-10", "reason": "pending litigation over this", "recordings": [rid]}
    assert client.post("/v1/holds", json=hold, headers=bearer(world.officer)).status_code == 201
    refused = request_deletion(client, world.officer, rid, REASON)
    assert refused.status_code == 409 and "CASE-10" in refused.json()["detail"]
    assert client.get("/v1/deletions", headers=bearer(world.officer)).json() == []
