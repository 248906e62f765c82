"""Identities can be revoked and recovered: a stolen device shut off, a leaver disabled, a lost admin replaced."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from api.bootstrap import InitResult, reset_admin
from api.core.models import AccessLog
from api.core.settings import Settings
from tests.api.test_tamper import assert_reads_intact, good_recording, services
from tests.conftest import World, bearer, countersign

REASON = {"reason": "device reported stolen from counter 3"}


def actions(client: TestClient, action: str) -> list[AccessLog]:
    with services(client).sessions() as session:
        return list(session.scalars(select(AccessLog).where(AccessLog.action == action).order_by(AccessLog.seq)))


def test_a_disabled_device_cannot_upload_and_its_evidence_stays(client: TestClient, world: World) -> None:
    dev = world.device
    kept = good_recording(client, dev, count=2)
    reply = client.post(f"/v1/devices/{dev.id}/disable", json=REASON, headers=bearer(world.admin))
    assert reply.status_code == 200 and reply.json()["disabled"] is True

    rec = dev.new_recording()
    dev.add_segments(rec, 1)
    refused = client.post("/v1/recordings", json=rec.create_body(), headers=dev.auth)
    assert refused.status_code == 401 and "revoked" in refused.json()["detail"]
    assert_reads_intact(client, world.officer, kept)  # what it uploaded before is still evidence
    [entry] = actions(client, "api:device:disable")
    assert entry.target == f"device:{dev.id}" and entry.purpose == REASON["reason"]

    assert client.post(f"/v1/devices/{dev.id}/enable", json=REASON, headers=bearer(world.admin)).status_code == 200
    assert client.post("/v1/recordings", json=rec.create_body(), headers=dev.auth).status_code == 201


def test_a_disabled_officer_is_locked_out_until_enabled(client: TestClient, world: World) -> None:
    users = client.get("/v1/users", headers=bearer(world.admin)).json()
    olivia = next(u for u in users if u["name"] == "olivia")
    body = {"reason": "left the organisation on 2026-11-30"}
    assert client.post(f"/v1/users/{olivia['id']}/disable", json=body, headers=bearer(world.admin)).status_code == 200
    assert client.get("/v1/evidence", headers=bearer(world.officer)).status_code == 401
    listed = {u["name"]: u["disabled"] for u in client.get("/v1/users", headers=bearer(world.admin)).json()}
    assert listed["olivia"] is True and listed["oscar"] is False
    assert client.post(f"/v1/users/{olivia['id']}/enable", json=body, headers=bearer(world.admin)).status_code == 200
    assert client.get("/v1/evidence", headers=bearer(world.officer)).status_code == 200


def test_an_admin_cannot_disable_themselves_and_needs_a_reason(client: TestClient, world: World) -> None:
    users = client.get("/v1/users", headers=bearer(world.admin)).json()
    me = next(u for u in users if u["role"] == "admin")
    assert client.post(f"/v1/users/{me['id']}/disable", json=REASON, headers=bearer(world.admin)).status_code == 409
    oscar = next(u for u in users if u["name"] == "oscar")
    for bad in ({}, {"reason": "          "}, {"reason": "\u200b" * 12}):
        reply = client.post(f"/v1/users/{oscar['id']}/disable", json=bad, headers=bearer(world.admin))
        assert reply.status_code == 422, reply.text
    missing = client.post("/v1/devices/no-such-device/disable", json=REASON, headers=bearer(world.admin))
    assert missing.status_code == 404


@pytest.mark.parametrize("who", ["officer", "device"])
def test_rotating_a_token_retires_the_old_one(client: TestClient, world: World, who: str) -> None:
    old = bearer(world.officer) if who == "officer" else world.device.auth
    reply = client.post("/v1/token", headers=old)
    assert reply.status_code == 200, reply.text
    new = bearer(reply.json()["token"])
    assert client.get("/v1/keys", headers=new).status_code == 200
    assert client.get("/v1/keys", headers=old).status_code == 401
    [entry] = actions(client, "api:token:rotate")
    assert entry.actor == entry.target and "token" not in str(entry.detail)  # no token, no hash in the log


def test_a_lost_admin_token_is_replaced_on_the_server(
    client: TestClient, world: World, settings: Settings, initialised: InitResult
) -> None:
    token, created = reset_admin(settings, "admin")
    assert not created
    assert client.get("/v1/users", headers=bearer(token)).status_code == 200
    assert client.get("/v1/users", headers=bearer(initialised.admin_token)).status_code == 401  # the lost one
    [entry] = actions(client, "cli:admin:reset")
    assert entry.actor == "system" and entry.detail == {"name": "admin", "created": False}
    with pytest.raises(ValueError, match="is a officer, not an admin"):
        reset_admin(settings, "olivia")  # never a way to mint an officer's access


def test_reset_admin_command(tmp_path: Path) -> None:
    data = tmp_path / "d"
    countersign("server", "init", "--data", str(data))
    result = countersign("server", "reset-admin", "--data", str(data), "--name", "second-admin")
    assert "created admin second-admin" in result.stdout
    assert result.stdout.strip().splitlines()[-1].split()[-1].startswith("csu_")
    missing = countersign("server", "reset-admin", "--data", str(tmp_path / "nothing"), check=False)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
