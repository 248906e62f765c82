"""Legal holds through the API: placing, scoping, catching later recordings, releasing, and blocking every deletion."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from fastapi.testclient import TestClient
from sqlalchemy import select

from api.core.models import AccessLog, utcnow
from retention import job
from tests.conftest import World, bearer
from tests.support.retention_support import age, assert_intact, assert_purged_once, services_of, upload
from tests.support.world import request_deletion

REASON = "preserve for the litigation"


def create(client: TestClient, token: str, expect: int = 201, **body: object) -> httpx.Response:
    reply = client.post("/v1/holds", json={"case_ref": "CASE-1", "reason": REASON, **body}, headers=bearer(token))
    assert reply.status_code == expect, reply.text
    return reply


def release(client: TestClient, token: str, hold_id: str, expect: int = 200) -> httpx.Response:
    reply = client.post(f"/v1/holds/{hold_id}/release", json={"reason": "case settled in 2026"}, headers=bearer(token))
    assert reply.status_code == expect, reply.text
    return reply


def delete(client: TestClient, world: World, token: str, rid: str) -> httpx.Response:
    """`token` asks for an early deletion; the other north officer approves it (two people, as required)."""
    asked = request_deletion(client, token, rid, "data subject asked for erasure")
    if asked.status_code != 202:
        return asked
    approver = world.second_officer if token != world.second_officer else world.officer
    return client.post(f"/v1/deletions/{asked.json()['id']}/approve", headers=bearer(approver))


def denials(client: TestClient, action: str) -> list[AccessLog]:
    with services_of(client).sessions() as session:
        return list(session.scalars(select(AccessLog).where(AccessLog.action == action, AccessLog.outcome == "denied")))


def test_place_show_list_release(client: TestClient, world: World) -> None:
    rid = upload(client, world.device, 1)
    hold = create(client, world.officer, case_ref="2026-LIT-014", recordings=[rid]).json()
    assert (hold["case_ref"], hold["site"], hold["scoped"], hold["recordings"], hold["covers"]) == (
        "2026-LIT-014",
        "north",
        False,
        [rid],
        1,
    )
    assert hold["active"] and hold["created_by"].startswith("user:")
    officer = bearer(world.officer)
    assert [h["id"] for h in client.get("/v1/holds", headers=officer).json()] == [hold["id"]]
    assert client.get(f"/v1/holds/{hold['id']}", headers=officer).json()["covers"] == 1
    shown = client.get(f"/v1/evidence/{rid}", headers=officer).json()
    assert shown["held_by"] == ["2026-LIT-014"]

    released = release(client, world.officer, hold["id"]).json()
    assert not released["active"] and released["release_reason"] == "case settled in 2026"
    assert client.get("/v1/holds", headers=officer).json() == []
    assert [h["id"] for h in client.get("/v1/holds", params={"active": "false"}, headers=officer).json()] == [
        hold["id"]
    ]
    release(client, world.officer, hold["id"], expect=409)
    with services_of(client).sessions() as session:
        actions = session.scalars(select(AccessLog.action).where(AccessLog.target == f"hold:{hold['id']}")).all()
    assert actions == ["api:hold:create", "api:hold:release"]


def test_held_recording_cannot_be_deleted_by_anyone(client: TestClient, world: World) -> None:
    svc = services_of(client)
    rid = upload(client, world.device, 2)
    age(svc, rid, 400)  # long past its date
    h1 = create(client, world.officer, case_ref="CASE-A", recordings=[rid]).json()["id"]
    h2 = create(client, world.officer, case_ref="CASE-B", site="north").json()["id"]

    reply = delete(client, world, world.officer, rid)
    assert reply.status_code == 409 and "CASE-A, CASE-B" in reply.json()["detail"], reply.text
    assert delete(client, world, world.admin, rid).status_code == 403  # administrators never delete evidence
    summary = job.run(svc)
    assert summary.purged == [] and summary.kept_by_hold == {rid: ("CASE-A", "CASE-B")}
    assert job.run(svc, now=utcnow() + timedelta(days=365 * 100)).purged == []  # holds never expire
    assert_intact(svc, rid, 2)
    [denied] = denials(client, "api:recording:delete")
    assert denied.detail["holds"] == ["CASE-A", "CASE-B"]

    release(client, world.officer, h1)
    reply = delete(client, world, world.officer, rid)
    assert reply.status_code == 409 and "CASE-B" in reply.json()["detail"] and "CASE-A" not in reply.json()["detail"]
    release(client, world.officer, h2)
    assert job.run(svc).purged == [rid]
    assert_purged_once(svc, rid)


def test_scoped_hold_catches_later_recordings(client: TestClient, world: World) -> None:
    """The hold exists first; recordings made afterwards that match its scope are held too."""
    svc = services_of(client)
    now = datetime.now(UTC)
    scope: dict[str, Any] = {"site": "north", "device": world.device.id, "incident_category": "threat"}
    window: dict[str, Any] = {
        "started_from": (now - timedelta(days=6000)).isoformat(),
        "started_to": (now + timedelta(days=1)).isoformat(),
    }
    hold = create(client, world.officer, case_ref="THREATS", **scope, **window).json()
    assert hold["scoped"] and hold["covers"] == 0
    threat, noise = upload(client, world.device, 1), upload(client, world.device, 1)
    for rid, category in ((threat, "threat"), (noise, "noise")):
        reply = client.post(f"/v1/recordings/{rid}/incident", json={"category": category}, headers=world.device.auth)
        assert reply.status_code == 200  # flagged at the counter
    other_site = upload(client, world.other_device, 1)
    for rid in (threat, noise, other_site):
        age(svc, rid, 5000)  # past even the incident policy, still inside the hold's window
    summary = job.run(svc)
    assert summary.kept_by_hold == {threat: ("THREATS",)}
    assert sorted(summary.purged) == sorted([noise, other_site])
    assert client.get(f"/v1/holds/{hold['id']}", headers=bearer(world.officer)).json()["covers"] == 1


def test_scoped_hold_matches_by_every_field(client: TestClient, world: World) -> None:
    svc = services_of(client)
    hold = create(client, world.officer, case_ref="SCOPE", site="north", incident_category="threat").json()
    threat, plain = upload(client, world.device, 1), upload(client, world.device, 1)
    client.post(f"/v1/evidence/{threat}/flag", json={"category": "threat"}, headers=bearer(world.officer))
    other = upload(client, world.other_device, 1)
    client.post(f"/v1/evidence/{other}/flag", json={"category": "threat"}, headers=bearer(world.other_officer))
    for rid in (threat, plain, other):
        age(svc, rid, 2000)
    summary = job.run(svc)
    assert summary.kept_by_hold == {threat: ("SCOPE",)} and sorted(summary.purged) == sorted([plain, other])
    assert client.get(f"/v1/holds/{hold['id']}", headers=bearer(world.officer)).json()["covers"] == 1


def test_officers_act_only_within_their_sites(client: TestClient, world: World) -> None:
    north = upload(client, world.device, 1)
    hold_id = create(client, world.officer, recordings=[north]).json()["id"]
    oscar = world.other_officer
    create(client, oscar, expect=404, recordings=[north])  # another site's ids are answered as absent
    create(client, oscar, expect=403, site="north")
    assert client.get(f"/v1/holds/{hold_id}", headers=bearer(oscar)).status_code == 404
    release(client, oscar, hold_id, expect=404)
    assert client.get("/v1/holds", headers=bearer(oscar)).json() == []
    assert len(denials(client, "api:access:denied")) == 4
    assert (
        client.post(
            "/v1/holds", json={"case_ref": "X", "reason": REASON, "site": "north"}, headers=bearer(world.admin)
        ).status_code
        == 403
    )
    assert client.get(f"/v1/holds/{hold_id}", headers=bearer(world.officer)).json()["active"]


def test_bad_holds_are_refused_clearly(client: TestClient, world: World) -> None:
    svc = services_of(client)
    rid = upload(client, world.device, 1)
    assert "recordings or a scope" in create(client, world.officer, expect=422).json()["detail"]
    assert "time zone" in create(client, world.officer, expect=422, started_from="2026-01-01T00:00:00").json()["detail"]
    later, earlier = "2026-02-01T00:00:00+00:00", "2026-01-01T00:00:00+00:00"
    assert (
        "before" in create(client, world.officer, expect=422, started_from=later, started_to=earlier).json()["detail"]
    )
    assert "device" in create(client, world.officer, expect=404, device="no-such-device").json()["detail"]
    create(client, world.officer, expect=422, case_ref="   ", recordings=[rid])
    create(client, world.officer, expect=422, reason="short", recordings=[rid])
    age(svc, rid, 31)
    job.run(svc)
    assert "already deleted" in create(client, world.officer, expect=410, recordings=[rid]).json()["detail"]


def test_a_hold_spans_one_site(client: TestClient, world: World) -> None:
    created = client.post(
        "/v1/users", json={"name": "bea", "role": "officer", "sites": ["north", "south"]}, headers=bearer(world.admin)
    ).json()
    both = created["token"]
    assert client.post(f"/v1/users/{created['id']}/approve", headers=bearer(world.auditor)).status_code == 200
    north, south = upload(client, world.device, 1), upload(client, world.other_device, 1)
    assert "one site" in create(client, both, expect=422, recordings=[north, south]).json()["detail"]
    assert "name the site" in create(client, both, expect=422, incident_category="threat").json()["detail"]
    assert create(client, both, recordings=[south]).json()["site"] == "south"
    assert_intact(services_of(client), north, 1)
