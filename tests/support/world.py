"""The populated world most API tests start from, built in one place.

tests/conftest.py's `world` fixture builds it on each test's fresh service;
tests/api/test_authorization.py builds the same world once per module.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx
import nacl.signing
from fastapi.testclient import TestClient
from sqlalchemy import select

from api import grants
from api.core.models import User
from tests.support.factories import SimDevice


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def enrol_sim_device(client: TestClient, admin_token: str, name: str, site: str) -> SimDevice:
    created = client.post("/v1/devices", json={"name": name, "site": site}, headers=bearer(admin_token))
    assert created.status_code == 201, created.text
    key = nacl.signing.SigningKey.generate()
    reply = client.post(
        "/v1/enrol", json={"code": created.json()["enrolment_code"], "public_key": bytes(key.verify_key).hex()}
    )
    assert reply.status_code == 200, reply.text
    body = reply.json()
    keys = {k["key_id"]: bytes.fromhex(k["public_key"]) for k in body["evidence_keys"] if k.get("seal_to", True)}
    return SimDevice(body["device_id"], body["token"], key, keys)


@dataclass
class World:
    """Two sites; an officer for each; an admin, an auditor; a device in each site."""

    admin: str
    officer: str  # site "north"
    other_officer: str  # site "south"
    auditor: str
    device: SimDevice  # site "north"
    other_device: SimDevice  # site "south"
    second_officer: str = ""  # site "north" too: approves what `officer` asks to delete early


def approve_on_server(client: TestClient, name: str) -> None:
    """What `countersign server approve-user` does, on the test's own service (the first auditor)."""
    services = client.app.state.services  # type: ignore[attr-defined]
    with services.sessions() as session, session.begin():
        user = session.scalar(select(User).where(User.name == name))
        assert user is not None
        grants.approve(session, user, approver="system")


def approve(client: TestClient, approver: str, user_id: str) -> None:
    reply = client.post(f"/v1/users/{user_id}/approve", headers=bearer(approver))
    assert reply.status_code == 200, reply.text


def build_world(client: TestClient, admin: str) -> World:
    """Create the sites, users and devices of a World on `client`'s service, as `admin`.

    Access takes two people: the auditor is approved on the server, the officers by the auditor.
    """
    for site in ("north", "south"):
        assert client.post("/v1/sites", json={"id": site}, headers=bearer(admin)).status_code == 201
    approver: list[str] = []

    def user(name: str, role: str, sites: list[str]) -> str:
        reply = client.post("/v1/users", json={"name": name, "role": role, "sites": sites}, headers=bearer(admin))
        assert reply.status_code == 201, reply.text
        token: str = reply.json()["token"]
        if role == "auditor":
            approve_on_server(client, name)
            approver.append(token)
        else:
            approve(client, approver[0], reply.json()["id"])
        return token

    auditor = user("audrey", "auditor", [])
    return World(
        admin=admin,
        officer=user("olivia", "officer", ["north"]),
        other_officer=user("oscar", "officer", ["south"]),
        auditor=auditor,
        device=enrol_sim_device(client, admin, "counter-n1", "north"),
        other_device=enrol_sim_device(client, admin, "counter-s1", "south"),
        second_officer=user("otto", "officer", ["north"]),
    )


def request_deletion(client: TestClient, token: str, recording_id: object, reason: str) -> httpx.Response:
    """One officer asks for an early deletion (202 with the pending request, or a refusal)."""
    return client.post(f"/v1/evidence/{recording_id}/deletion", json={"reason": reason}, headers=bearer(token))


def delete_early(client: TestClient, world: World, recording_id: object, reason: str) -> httpx.Response:
    """An early deletion as it must happen: `officer` asks, `second_officer` approves.

    Returns the refusal if the request is refused, else the approval's answer (the deletion).
    """
    asked = request_deletion(client, world.officer, recording_id, reason)
    if asked.status_code != 202:
        return asked
    return client.post(f"/v1/deletions/{asked.json()['id']}/approve", headers=bearer(world.second_officer))
