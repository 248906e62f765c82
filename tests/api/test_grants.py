"""No single administrator can give anyone access to evidence: a grant takes a second person.

The hostile user is an administrator acting alone. They can create an officer for
any site (and print its token), create an auditor, and try every way round: use
the token at once, approve it themselves, approve it with an auditor they just
made, or with the officer they just made. None of it reads evidence.
"""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import select

from api.app import create_app
from api.core.models import AccessLog
from api.core.settings import Settings
from tests.api.test_tamper import good_recording, read, services
from tests.conftest import World, bearer, countersign


def create(client: TestClient, admin: str, name: str, role: str, sites: list[str]) -> dict[str, str]:
    reply = client.post("/v1/users", json={"name": name, "role": role, "sites": sites}, headers=bearer(admin))
    assert reply.status_code == 201, reply.text
    created: dict[str, str] = reply.json()
    return created


def test_an_admin_alone_cannot_read_evidence(client: TestClient, world: World) -> None:
    rec = good_recording(client, world.device, count=1)
    mole = create(client, world.admin, "mole", "officer", ["north"])
    assert mole["pending_approval"]
    refused = read(client, mole["token"], rec.id)
    assert refused.status_code == 403 and "awaits approval by a second person" in refused.json()["detail"]

    # Approving it themselves: admins approve nothing.
    approve = f"/v1/users/{mole['id']}/approve"
    assert client.post(approve, headers=bearer(world.admin)).status_code == 403
    # With an auditor or an officer of their own making: those are pending too, so they cannot.
    stooge = create(client, world.admin, "stooge", "auditor", [])
    accomplice = create(client, world.admin, "accomplice", "officer", ["north"])
    for token in (stooge["token"], accomplice["token"], mole["token"]):
        assert client.post(approve, headers=bearer(token)).status_code == 403
    assert read(client, mole["token"], rec.id).status_code == 403

    # Another site's officer cannot approve a north grant either.
    other = client.post(approve, headers=bearer(world.other_officer))
    assert other.status_code == 403 and "outside your scope" in other.json()["detail"]
    # A north officer can: now, and only now, the token reads (audited as ever).
    ok = client.post(approve, headers=bearer(world.officer))
    assert ok.status_code == 200 and ok.json()["approved_by"].startswith("user:")
    assert read(client, mole["token"], rec.id).status_code == 200

    with services(client).sessions() as session:
        created = session.scalars(select(AccessLog).where(AccessLog.action == "api:user:create")).all()
        approved = session.scalars(select(AccessLog).where(AccessLog.action == "api:user:approve")).all()
    assert any(e.detail.get("pending_approval") and e.target == f"user:{mole['id']}" for e in created)
    assert [e.target for e in approved if e.target == f"user:{mole['id']}"] == [f"user:{mole['id']}"]


def test_an_auditor_grant_needs_another_auditor(client: TestClient, world: World) -> None:
    second = create(client, world.admin, "ian", "auditor", [])
    approve = f"/v1/users/{second['id']}/approve"
    assert client.post(approve, headers=bearer(world.officer)).status_code == 403  # an officer: no
    assert client.get("/v1/audit", headers=bearer(second["token"])).status_code == 403
    assert client.post(approve, headers=bearer(world.auditor)).status_code == 200
    assert client.get("/v1/audit", headers=bearer(second["token"])).status_code == 200
    assert client.post(approve, headers=bearer(world.auditor)).status_code == 409  # once is enough


def test_who_hears_of_a_grant(client: TestClient, world: World) -> None:
    north = create(client, world.admin, "nora", "officer", ["north"])
    south = create(client, world.admin, "sam", "officer", ["south"])

    def names(token: str) -> set[str]:
        return {u["name"] for u in client.get("/v1/grants", headers=bearer(token)).json()}

    assert names(world.officer) == {"nora"}  # north's officers see north's grants
    assert names(world.other_officer) == {"sam"}
    assert names(world.auditor) == {"nora", "sam"}  # auditors see every grant
    assert client.get("/v1/grants", headers=bearer(world.admin)).status_code == 403
    approve = client.post(f"/v1/users/{north['id']}/approve", headers=bearer(world.officer))
    assert approve.status_code == 200
    assert names(world.officer) == set() and names(world.auditor) == {"sam"}  # approved: no longer waiting
    assert south["pending_approval"]


def test_admins_are_not_pending(client: TestClient, world: World) -> None:
    """An admin's grant reads no evidence, so it needs no second person; nor does it approve any."""
    other_admin = create(client, world.admin, "alex", "admin", [])
    assert not other_admin["pending_approval"]
    assert client.get("/v1/users", headers=bearer(other_admin["token"])).status_code == 200


def test_the_first_auditor_is_approved_on_the_server(tmp_path: Path) -> None:
    data = tmp_path / "d"
    init = countersign("server", "init", "--data", str(data))
    admin = next(line.split()[-1] for line in init.stdout.splitlines() if line.startswith("admin token"))
    settings = Settings(data_dir=data, env="development")
    with TestClient(create_app(settings)) as client:
        first = create(client, admin, "audrey", "auditor", [])
        assert client.get("/v1/audit", headers=bearer(first["token"])).status_code == 403
        approved = countersign("server", "approve-user", "audrey", "--data", str(data))
        assert approved.stdout == "approved auditor audrey\n"
        assert client.get("/v1/audit", headers=bearer(first["token"])).status_code == 200
        again = countersign("server", "approve-user", "audrey", "--data", str(data), check=False)
        assert again.returncode == 2 and "not waiting for approval" in again.stderr
    missing = countersign("server", "approve-user", "nobody", "--data", str(data), check=False)
    assert missing.returncode == 2 and "no user 'nobody'" in missing.stderr
