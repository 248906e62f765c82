"""The fixtures themselves: a world builds, a deployment serves."""

from fastapi.testclient import TestClient

from tests.conftest import Deployment, World, bearer


def test_world_builds(client: TestClient, world: World) -> None:
    me = client.get("/v1/sites", headers=bearer(world.admin))
    assert [s["id"] for s in me.json()] == ["north", "south"]


def test_sim_device_upload_and_read(client: TestClient, world: World) -> None:
    rec = world.device.new_recording()
    world.device.add_segments(rec, 3)
    assert client.post("/v1/recordings", json=rec.create_body(), headers=world.device.auth).status_code == 201
    for seg in rec.segments:
        r = client.put(
            f"/v1/recordings/{rec.id}/segments/{seg.index}",
            content=seg.envelope,
            headers=world.device.segment_headers(seg),
        )
        assert r.status_code == 201, r.text
    shown = client.get(f"/v1/evidence/{rec.id}", headers=bearer(world.officer)).json()
    assert shown["status"] == "complete" and shown["segment_count"] == 3
    audio = client.post(
        f"/v1/evidence/{rec.id}/audio", json={"purpose": "fixture self-test"}, headers=bearer(world.officer)
    )
    assert audio.status_code == 200 and audio.content[:4] == b"fLaC"


def test_deployment_serves(deployment: Deployment) -> None:
    assert deployment.home.joinpath("device.json").exists()
