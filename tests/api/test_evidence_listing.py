"""What the officer's list and the audit log tell a person: names, staff, duration; short ids; actor names.

GET /v1/evidence answers each recording with its device's name, the staff code of its signed
consent record and its duration, in a constant number of SQL statements however long the page
(the device name is joined, never fetched row by row). `id_prefix` resolves a short id within
the caller's sites only: another site's recording is as absent as one that does not exist.
Audit entries carry `actor_name`, resolved in one statement for the page.
"""

from __future__ import annotations

import uuid

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.core.db import StatementCounter
from tests.conftest import World, bearer
from tests.support.factories import SimDevice, SimRecording
from tests.support.retention_support import upload


def upload_as(client: TestClient, device: SimDevice, rid: str, segments: int = 2) -> SimRecording:
    """A recording with the id `rid` (the device signs whatever id it chose into the header)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(uuid, "uuid4", lambda: uuid.UUID(rid))
        rec = device.new_recording()
    device.add_segments(rec, segments)
    assert client.post("/v1/recordings", json=rec.create_body(), headers=device.auth).status_code == 201
    for seg in rec.segments:
        put = client.put(
            f"/v1/recordings/{rec.id}/segments/{seg.index}", content=seg.envelope, headers=device.segment_headers(seg)
        )
        assert put.status_code == 201, put.text
    return rec


def listing(client: TestClient, token: str, **params: object) -> list[dict[str, object]]:
    reply = client.get("/v1/evidence", params=params, headers=bearer(token))
    assert reply.status_code == 200, reply.text
    rows: list[dict[str, object]] = reply.json()
    return rows


def test_a_listed_recording_names_its_device_staff_and_duration(client: TestClient, world: World) -> None:
    rid = upload(client, world.device, segments=3)
    [row] = listing(client, world.officer)
    assert row["id"] == rid
    assert row["device_id"] == world.device.id and row["device_name"] == "counter-n1"
    assert row["staff_code"] == "S-001"  # from the consent record in the signed header
    assert row["duration_seconds"] == 3.0  # 3 segments of the header's segment_seconds (1.0)
    shown = client.get(f"/v1/evidence/{rid}", headers=bearer(world.officer)).json()
    assert (shown["device_name"], shown["staff_code"], shown["duration_seconds"]) == ("counter-n1", "S-001", 3.0)
    objection = upload(client, world.device, outcome="objected")
    row = next(r for r in listing(client, world.officer) if r["id"] == objection)
    assert row["duration_seconds"] == 0.0 and row["staff_code"] == "S-001" and row["device_name"] == "counter-n1"


def test_a_list_page_costs_the_same_statements_at_any_length(app: FastAPI, client: TestClient, world: World) -> None:
    engine = app.state.services.engine
    counts = []
    for more in (1, 4):
        for _ in range(more):
            upload(client, world.device, segments=1)
        with StatementCounter(engine) as counter:
            rows = listing(client, world.officer)
        counts.append((len(rows), len(counter.statements), counter.statements))
    (few, first, listed), (many, second, _) = counts
    assert many > few
    assert first == second, "\n".join(listed)


def test_id_prefix_resolves_only_within_your_sites(client: TestClient, world: World) -> None:
    north_a = upload_as(client, world.device, "abcd1111-1111-4111-8111-111111111111")
    north_b = upload_as(client, world.device, "abcd2222-2222-4222-8222-222222222222")
    south = upload_as(client, world.other_device, "abcd3333-3333-4333-8333-333333333333")

    def ids(token: str, prefix: str) -> list[str]:
        return sorted(str(r["id"]) for r in listing(client, token, id_prefix=prefix))

    assert ids(world.officer, "abcd") == sorted([str(north_a.id), str(north_b.id)])  # not south's
    assert ids(world.officer, "abcd1") == [str(north_a.id)]
    assert ids(world.officer, "abcd3") == []  # south's: exactly as if it did not exist
    assert ids(world.officer, "ffff") == []
    assert ids(world.other_officer, "abcd") == [str(south.id)]
    assert ids(world.officer, str(north_b.id)) == [str(north_b.id)]  # a whole id is a prefix too
    # Within a --site the officer does not have: nothing either.
    assert listing(client, world.officer, id_prefix="abcd", site="south") == []
    # Not a prefix the service accepts: too short, upper case, or a LIKE wildcard.
    for bad in ("abc", "ABCD", "abc%", "ab_d", "a" * 37, "-abc"):
        reply = client.get("/v1/evidence", params={"id_prefix": bad}, headers=bearer(world.officer))
        assert reply.status_code == 422, (bad, reply.text)
    # Auditors and administrators search no sites.
    for token in (world.auditor, world.admin):
        assert client.get("/v1/evidence", params={"id_prefix": "abcd"}, headers=bearer(token)).status_code == 403


def test_the_search_is_logged_with_its_prefix(client: TestClient, world: World) -> None:
    upload_as(client, world.device, "abcd1111-1111-4111-8111-111111111111")
    listing(client, world.officer, id_prefix="abcd")
    entries = client.get("/v1/audit", params={"limit": 10000}, headers=bearer(world.auditor)).json()
    listed = [e for e in entries if e["action"] == "api:evidence:list"]
    assert listed[-1]["detail"] == {"site": None, "results": 1, "id_prefix": "abcd"}


def test_audit_entries_name_their_actors(app: FastAPI, client: TestClient, world: World) -> None:
    rid = upload(client, world.device, segments=2)
    listing(client, world.officer)
    engine = app.state.services.engine
    with StatementCounter(engine) as counter:
        reply = client.get("/v1/audit", params={"limit": 10000}, headers=bearer(world.auditor))
    entries = reply.json()
    by_actor = {e["actor"]: e["actor_name"] for e in entries}
    users = {u["name"]: u["id"] for u in client.get("/v1/users", headers=bearer(world.admin)).json()}
    assert by_actor[f"user:{users['olivia']}"] == "olivia"
    assert by_actor[f"device:{world.device.id}"] == "counter-n1"
    assert all(name is None for actor, name in by_actor.items() if not actor.startswith(("user:", "device:")))
    # One lookup for the whole page, users and devices together (a UNION ALL), never one per entry.
    names = [s for s in counter.statements if "AS kind, users.id, users.name" in s]
    assert len(names) == 1, counter.statements
    assert not any("devices.name" in s and "kind" not in s for s in counter.statements), counter.statements

    custody = client.get(f"/v1/audit/custody/{rid}", headers=bearer(world.officer)).json()
    assert {e["actor_name"] for e in custody if e["action"] == "api:segment:upload"} == {"counter-n1"}
    # The names are not part of the hashed entry: the export and its verification are unchanged.
    exported = client.get("/v1/audit/export", headers=bearer(world.auditor)).text
    assert "actor_name" not in exported
