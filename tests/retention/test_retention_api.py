"""Retention through the API: policies (admins), flags and extensions (officers), and what every recording shows."""

from __future__ import annotations

from datetime import datetime, timedelta

import httpx
from fastapi.testclient import TestClient
from sqlalchemy import select

from api.core.models import AccessLog, Recording, utcnow
from retention import job
from tests.conftest import World, bearer
from tests.support.retention_support import age, assert_intact, services_of, upload


def put_policy(client: TestClient, world: World, expect: int = 200, **body: object) -> httpx.Response:
    reply = client.put("/v1/policies", json=body, headers=bearer(world.admin))
    assert reply.status_code == expect, reply.text
    return reply


def shown(client: TestClient, world: World, rid: str, token: str | None = None) -> dict[str, object]:
    reply = client.get(f"/v1/evidence/{rid}", headers=bearer(token or world.officer))
    assert reply.status_code == 200, reply.text
    body: dict[str, object] = reply.json()
    return body


def started(client: TestClient, rid: str) -> datetime:
    with services_of(client).sessions() as session:
        recording = session.get(Recording, rid)
        assert recording is not None
        return recording.started_at


def days_after_start(client: TestClient, world: World, rid: str, token: str | None = None) -> float:
    until = datetime.fromisoformat(str(shown(client, world, rid, token)["retain_until"]))
    return (until - started(client, rid)) / timedelta(days=1)


def last_entry(client: TestClient, action: str) -> AccessLog:
    with services_of(client).sessions() as session:
        entry = session.scalars(
            select(AccessLog).where(AccessLog.action == action).order_by(AccessLog.seq.desc())
        ).first()
        assert entry is not None
        return entry


def test_every_recording_shows_its_date_and_why(client: TestClient, world: World) -> None:
    rid = upload(client, world.device, 1)
    body = shown(client, world, rid)
    assert days_after_start(client, world, rid) == 30
    assert body["retain_reason"] == "delete: default/routine: delete after 30 d" and body["held_by"] == []
    listed = {r["id"]: r for r in client.get("/v1/evidence", headers=bearer(world.officer)).json()}
    assert listed[rid]["retain_until"] == body["retain_until"]
    objection = upload(client, world.device, outcome="objected")
    assert days_after_start(client, world, objection) == 90


def test_policies_shipped_set_show_clear(client: TestClient, world: World) -> None:
    admin = bearer(world.admin)
    shipped = client.get("/v1/policies", headers=admin).json()
    assert {(p["category"], p["delete_days"], p["source"]) for p in shipped} == {
        ("routine", 30, "shipped"),
        ("interrupted", 30, "shipped"),
        ("objection", 90, "shipped"),
        ("incident", 1095, "shipped"),
    }
    north, south = upload(client, world.device, 1), upload(client, world.other_device, 1)

    change = put_policy(client, world, category="routine", site="north", delete_days=7).json()
    assert change["recomputed"] == 1 and change["rule"]["site"] == "north"
    assert days_after_start(client, world, north) == 7
    assert days_after_start(client, world, south, world.other_officer) == 30
    entry = last_entry(client, "api:policy:set")
    assert entry.target == "policy:north/routine" and entry.detail["before"] is None
    assert entry.detail["after"]["delete_days"] == 7 and entry.detail["recomputed"] == 1

    put_policy(client, world, category="routine", retain_days=60)  # a default floor no site undercuts
    assert days_after_start(client, world, north) == 60
    assert shown(client, world, north)["retain_reason"] == "retain: default/routine: retain 60 d"
    rules = client.get("/v1/policies", params={"site": "north"}, headers=admin).json()
    assert [(p["site"], p["retain_days"], p["delete_days"]) for p in rules if p["category"] == "routine"] == [
        (None, 60, None),
        ("north", None, 7),
    ]

    cleared = client.delete("/v1/policies", params={"category": "routine"}, headers=admin).json()
    assert cleared["rule"]["source"] == "shipped" and days_after_start(client, world, north) == 7
    cleared = client.delete("/v1/policies", params={"category": "routine", "site": "north"}, headers=admin).json()
    assert cleared["rule"] is None and days_after_start(client, world, north) == 30
    assert (
        client.delete("/v1/policies", params={"category": "routine", "site": "north"}, headers=admin).status_code == 404
    )


def test_bad_policies_are_refused(client: TestClient, world: World) -> None:
    assert "retain period, a delete period" in put_policy(client, world, 422, category="routine").json()["detail"]
    put_policy(client, world, 422, category="shouting", delete_days=3)
    put_policy(client, world, 422, category="routine", delete_days=0)
    assert (
        "atlantis"
        in put_policy(client, world, 404, category="routine", site="atlantis", delete_days=3).json()["detail"]
    )
    for role in (world.officer, world.auditor, world.device.token):
        reply = client.put("/v1/policies", json={"category": "routine", "delete_days": 1}, headers=bearer(role))
        assert reply.status_code == 403


def test_a_flag_recomputes_and_is_audited(client: TestClient, world: World) -> None:
    rid, by_device = upload(client, world.device, 1), upload(client, world.device, 1)
    reply = client.post(f"/v1/evidence/{rid}/flag", json={"category": "verbal-abuse"}, headers=bearer(world.officer))
    assert reply.status_code == 200, reply.text
    assert reply.json()["incident_category"] == "verbal-abuse" and days_after_start(client, world, rid) == 1095
    entry = last_entry(client, "api:recording:flag")
    assert entry.actor.startswith("user:") and entry.detail["previous"] is None
    assert entry.detail["retain_until"][0] != entry.detail["retain_until"][1]

    client.post(f"/v1/recordings/{by_device}/incident", json={"category": "threat"}, headers=world.device.auth)
    assert days_after_start(client, world, by_device) == 1095  # flagged at the counter: same policy
    for token, status in ((world.admin, 403), (world.other_officer, 404)):  # another site's: as if absent
        reply = client.post(f"/v1/evidence/{rid}/flag", json={"category": "x"}, headers=bearer(token))
        assert reply.status_code == status


def test_an_extension_is_never_shortened_by_policy(client: TestClient, world: World) -> None:
    svc = services_of(client)
    rid = upload(client, world.device, 1)
    until = (started(client, rid) + timedelta(days=400)).isoformat()
    body = {"until": until, "reason": "complaint may escalate to court"}
    reply = client.post(f"/v1/evidence/{rid}/extend", json=body, headers=bearer(world.officer))
    assert reply.status_code == 200, reply.text
    assert days_after_start(client, world, rid) == 400
    assert "extended by an officer" in str(shown(client, world, rid)["retain_reason"])
    assert last_entry(client, "api:recording:extend").purpose == "complaint may escalate to court"

    put_policy(client, world, category="routine", delete_days=1)
    assert days_after_start(client, world, rid) == 400
    age(svc, rid, 10)  # ten days old now; the extension (a date) still keeps it
    assert job.run(svc).purged == []
    assert_intact(svc, rid, 1)

    shorter = {"until": (utcnow() + timedelta(days=5)).isoformat(), "reason": "changed my mind about it"}
    reply = client.post(f"/v1/evidence/{rid}/extend", json=shorter, headers=bearer(world.officer))
    assert reply.status_code == 409 and "never shortened" in reply.json()["detail"]
    for bad in ("2020-01-01T00:00:00+00:00", "2031-01-01T00:00:00"):
        reply = client.post(f"/v1/evidence/{rid}/extend", json={**body, "until": bad}, headers=bearer(world.officer))
        assert reply.status_code == 422, reply.text
