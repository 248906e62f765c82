"""Hand-over in the console: a second officer approves an early deletion (or anyone cancels it), with
the API's own rules (never the requester, never while held, only the site's officers), and an officer
exports an evidence bundle that the recipient's verifier accepts."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import markupsafe
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from nacl.public import PrivateKey
from sqlalchemy import select

from api.core.models import AccessLog
from evidence.audit_actions import Action
from retention.models import DeletionRequest
from tests.conftest import World, bearer
from tests.console.support import Login, browser, page_csrf, provision_login, services_of, signed_in
from tests.support.retention_support import assert_intact, assert_purged_once, upload
from tests.support.world import request_deletion

SCRIPT = "<script>alert('x')</script>"
REASON = "recorded by mistake, no incident"
PURPOSE = "handed to the police for case K-2026-001"
VERIFY = Path(__file__).resolve().parents[2] / "evidence" / "bundle" / "verify.py"


def load_verifier() -> ModuleType:
    """verify.py as the recipient runs it: a lone script, imported by path (no package)."""
    spec = importlib.util.spec_from_file_location("countersign_bundle_verify_console", VERIFY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


def _asked(client: TestClient, world: World, rid: str, reason: str = REASON) -> str:
    """Olivia (world.officer) asks for the deletion through the API; the request's id."""
    reply = request_deletion(client, world.officer, rid, reason)
    assert reply.status_code == 202, reply.text
    request_id: str = reply.json()["id"]
    return request_id


def _request(app: FastAPI, request_id: str) -> DeletionRequest:
    with services_of(app).sessions() as session:
        row = session.get(DeletionRequest, request_id)
        assert row is not None
        return row


def _entries(app: FastAPI, action: Action) -> list[AccessLog]:
    with services_of(app).sessions() as session:
        return list(session.scalars(select(AccessLog).where(AccessLog.action == action).order_by(AccessLog.seq)))


def _approve(officer: TestClient, request_id: str, **extra: str) -> Any:
    form = {"csrf": page_csrf(officer, "/console/deletions"), "confirm": "yes", **extra}
    return officer.post(f"/console/deletions/{request_id}/approve", data=form)


KEEP = "the customer asked us to keep it"


def _cancel(officer: TestClient, request_id: str, reason: str = KEEP, **extra: str) -> Any:
    form = {"csrf": page_csrf(officer, "/console/deletions"), "reason": reason, **extra}
    return officer.post(f"/console/deletions/{request_id}/cancel", data=form)


def _export_form(recipient: PrivateKey, **changes: str) -> dict[str, str]:
    return {
        "case_ref": "K-2026-001",
        "purpose": PURPOSE,
        "recipient": "Station 7",
        "recipient_public_key": bytes(recipient.public_key).hex(),
        **changes,
    }


def _export(officer: TestClient, rid: str, form: dict[str, str]) -> Any:
    path = f"/console/recordings/{rid}"
    return officer.post(f"{path}/export", data={"csrf": page_csrf(officer, path), **form})


# --------------------------------------------------------------------------- deletions


def test_a_second_officer_approves_and_the_recording_is_deleted(
    client: TestClient, app: FastAPI, world: World, logins: dict[str, Login]
) -> None:
    rid = upload(client, world.device)
    request_id = _asked(client, world, rid, f"wrong counter: {SCRIPT}")
    olivia = signed_in(app, logins["officer"])
    otto = signed_in(app, provision_login(app, "otto"))  # the World's second officer of north
    listed = otto.get("/console/deletions")
    assert listed.status_code == 200
    row = listed.text.split(f'data-request="{request_id}"')[1].split("</tr>")[0]
    assert f'href="/console/recordings/{rid}"' in row and '<td class="requester">olivia</td>' in row
    assert str(markupsafe.escape(f"wrong counter: {SCRIPT}")) in row and SCRIPT not in listed.text  # text, not markup
    assert f'action="/console/deletions/{request_id}/approve"' in row and 'class="cancel"' in row
    own = olivia.get("/console/deletions").text  # the requester is told a second officer must approve
    assert 'class="own"' in own and f"/console/deletions/{request_id}/approve" not in own
    assert 'id="approve-deletion"' in otto.get(f"/console/recordings/{rid}").text  # and on the recording page
    assert 'id="approve-deletion"' not in olivia.get(f"/console/recordings/{rid}").text
    done = _approve(otto, request_id)
    assert done.status_code == 303 and done.headers["location"] == "/console/deletions"
    assert_purged_once(services_of(app), rid)  # the API's deletion: shredded, purged, tombstoned, once
    row_after = _request(app, request_id)
    assert row_after.executed_at is not None and row_after.approved_by is not None
    assert row_after.approved_by != row_after.requested_by
    (approval,) = _entries(app, Action.DELETION_APPROVE)
    assert approval.actor == row_after.approved_by and approval.target == f"recording:{rid}"
    assert client.get(f"/v1/evidence/{rid}", headers=bearer(world.officer)).status_code == 410
    assert 'id="no-deletions"' in otto.get("/console/deletions").text  # carried out: no longer waiting


def test_the_requester_may_not_approve_their_own_request(
    client: TestClient, app: FastAPI, world: World, logins: dict[str, Login]
) -> None:
    rid = upload(client, world.device)
    request_id = _asked(client, world, rid)
    refused = _approve(signed_in(app, logins["officer"]), request_id)
    assert refused.status_code == 403 and 'id="refusal"' in refused.text
    assert "cannot approve it: a second officer must" in refused.text  # the API's own words
    assert _request(app, request_id).approved_by is None
    assert_intact(services_of(app), rid, 2)


def test_approval_is_refused_while_held_and_needs_the_confirmation(
    client: TestClient, app: FastAPI, world: World, logins: dict[str, Login]
) -> None:
    rid = upload(client, world.device)
    request_id = _asked(client, world, rid)
    otto = signed_in(app, provision_login(app, "otto"))
    unconfirmed = _approve(otto, request_id, confirm="")
    assert unconfirmed.status_code == 422 and "Tick the box" in unconfirmed.text
    hold = {"case_ref": "C-77", "reason": "litigation notice received", "recordings": [rid]}
    assert client.post("/v1/holds", json=hold, headers=bearer(world.officer)).status_code == 201
    refused = _approve(otto, request_id)
    assert refused.status_code == 409 and "legal hold" in refused.text and "C-77" in refused.text
    assert _request(app, request_id).approved_by is None  # still pending: nothing approved behind the hold
    assert_intact(services_of(app), rid, 2)
    (denied,) = _entries(app, Action.RECORDING_DELETE)
    assert denied.outcome == "denied" and denied.target == f"recording:{rid}"  # the attempt is logged


def test_any_officer_of_the_site_cancels_with_a_reason(
    client: TestClient, app: FastAPI, world: World, logins: dict[str, Login]
) -> None:
    rid = upload(client, world.device)
    request_id = _asked(client, world, rid)
    olivia = signed_in(app, logins["officer"])
    path = f"/console/recordings/{rid}"
    assert 'id="cancel-deletion"' in olivia.get(path).text
    short = _cancel(olivia, request_id, "no")
    assert short.status_code == 422 and "reason" in short.text
    done = _cancel(olivia, request_id, back=rid)  # from the recording page: back to it
    assert done.status_code == 303 and done.headers["location"] == path
    row = _request(app, request_id)
    assert row.cancelled_by == row.requested_by and row.cancel_reason == KEEP
    page = olivia.get(path).text
    assert 'id="deletion-requested"' not in page and 'id="request-deletion"' in page
    again = _cancel(olivia, request_id, back="not-a-uuid")
    assert again.status_code == 409 and "can no longer be cancelled" in again.text
    assert_intact(services_of(app), rid, 2)
    second = _asked(client, world, rid)  # a new request; otto cancels it from the list
    gone = _cancel(signed_in(app, provision_login(app, "otto")), second, back="not-a-uuid")
    assert gone.status_code == 303 and gone.headers["location"] == "/console/deletions"
    assert _request(app, second).cancelled_by is not None


def test_only_the_sites_officers_see_approve_or_cancel(
    client: TestClient, app: FastAPI, world: World, logins: dict[str, Login]
) -> None:
    rid = upload(client, world.device)
    request_id = _asked(client, world, rid, "only for north: wrong counter")
    oscar = signed_in(app, logins["other_officer"])  # south: as if it did not exist
    listed = oscar.get("/console/deletions")
    assert listed.status_code == 200 and request_id not in listed.text and "only for north" not in listed.text
    for refused in (_approve(oscar, request_id), _cancel(oscar, request_id)):
        assert refused.status_code == 404 and "no such deletion request" in refused.text
    for role in ("admin", "auditor"):
        other = signed_in(app, logins[role])
        page = other.get("/console/deletions")
        assert page.status_code == 403 and "only for north" not in page.text
        csrf = page_csrf(other)
        for action, form in (("approve", {"confirm": "yes"}), ("cancel", {"reason": "not my business really"})):
            posted = other.post(f"/console/deletions/{request_id}/{action}", data={"csrf": csrf, **form})
            assert posted.status_code == 403
    anonymous = browser(app)
    assert anonymous.get("/console/deletions").status_code == 303
    assert anonymous.post(f"/console/deletions/{request_id}/approve", data={"confirm": "yes"}).status_code == 303
    row = _request(app, request_id)
    assert (row.approved_by, row.cancelled_by) == (None, None)


def test_forms_without_the_csrf_token_are_refused(
    client: TestClient, app: FastAPI, world: World, logins: dict[str, Login]
) -> None:
    rid = upload(client, world.device)
    request_id = _asked(client, world, rid)
    otto = signed_in(app, provision_login(app, "otto"))
    olivia = signed_in(app, logins["officer"])
    for form in ({"confirm": "yes"}, {"confirm": "yes", "csrf": "forged"}):
        assert otto.post(f"/console/deletions/{request_id}/approve", data=form).status_code == 403
    assert otto.post(f"/console/deletions/{request_id}/cancel", data={"reason": REASON}).status_code == 403
    exported = olivia.post(f"/console/recordings/{rid}/export", data=_export_form(PrivateKey.generate()))
    assert exported.status_code == 403 and "PK" not in exported.text[:2]
    row = _request(app, request_id)
    assert (row.approved_by, row.cancelled_by) == (None, None)
    assert _entries(app, Action.EVIDENCE_EXPORT) == []


# --------------------------------------------------------------------------- export


def test_an_exported_bundle_verifies_and_proves_its_own_export(
    client: TestClient,
    app: FastAPI,
    world: World,
    logins: dict[str, Login],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    rid = upload(client, world.device)
    olivia = signed_in(app, logins["officer"])
    page = olivia.get(f"/console/recordings/{rid}").text
    assert 'id="export-form"' in page and "verify.py keygen" in page and "passphrase" in page
    recipient = PrivateKey.generate()  # what the recipient's `python verify.py keygen` makes
    spaced = " ".join(bytes(recipient.public_key).hex().upper()[i : i + 8] for i in range(0, 64, 8))
    reply = _export(olivia, rid, _export_form(recipient, recipient_public_key=f" {spaced} "))  # as pasted
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"] == "application/zip"
    assert reply.headers["content-disposition"] == f'attachment; filename="evidence-{rid}.zip"'
    assert reply.headers["cache-control"] == "no-store"
    (tmp_path / "bundle.zip").write_bytes(reply.content)
    (tmp_path / "recipient.key").write_text(bytes(recipient).hex() + "\n")
    service = bytes(services_of(app).keys.signing_key.verify_key).hex()  # type: ignore[union-attr]
    verifier = load_verifier()
    capsys.readouterr()
    code = verifier.main(
        [str(tmp_path / "bundle.zip"), "--key", str(tmp_path / "recipient.key"), "--service-key", service, "--json"]
    )
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["verdict"] == "VALID", report
    (entry,) = [e for e in report["custody"] if e["action"] == Action.EVIDENCE_EXPORT]
    assert entry["purpose"] == PURPOSE and entry["detail"]["case_ref"] == "K-2026-001"
    assert entry["detail"]["recipient"] == "Station 7" and entry["actor_name"] == "olivia"
    (logged,) = _entries(app, Action.EVIDENCE_EXPORT)
    assert logged.seq == int(reply.headers["x-countersign-access-log"]) == entry["seq"]
    assert len(_entries(app, Action.EVIDENCE_EXPORTED)) == 1  # which bundle left, recorded after


def test_a_hostile_case_reference_and_purpose_show_as_text(
    client: TestClient, app: FastAPI, world: World, logins: dict[str, Login]
) -> None:
    rid = upload(client, world.device)
    olivia = signed_in(app, logins["officer"])
    form = _export_form(PrivateKey.generate(), case_ref=SCRIPT, purpose=f"for the court {SCRIPT}")
    assert _export(olivia, rid, form).status_code == 200
    (logged,) = _entries(app, Action.EVIDENCE_EXPORT)
    assert logged.detail["case_ref"] == SCRIPT  # kept as typed: it is data
    page = olivia.get(f"/console/recordings/{rid}").text  # the custody table shows the purpose
    assert SCRIPT not in page and str(markupsafe.escape(f"for the court {SCRIPT}")) in page


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"purpose": ""}, "purpose"),
        ({"purpose": "short"}, "purpose"),
        ({"case_ref": ""}, "case_ref"),
        ({"recipient_public_key": ""}, "verify.py keygen"),
        ({"recipient_public_key": "ab" * 31}, "verify.py keygen"),
        ({"recipient_public_key": "zz" * 32}, "verify.py keygen"),
        ({"recipient_public_key": "ab" * 33}, "verify.py keygen"),
    ],
    ids=["no-purpose", "short-purpose", "no-case", "no-key", "short-key", "not-hex", "long-key"],
)
def test_bad_export_input_is_refused_before_anything_is_read(
    client: TestClient, app: FastAPI, world: World, logins: dict[str, Login], change: dict[str, str], why: str
) -> None:
    rid = upload(client, world.device)
    reply = _export(signed_in(app, logins["officer"]), rid, _export_form(PrivateKey.generate(), **change))
    assert reply.status_code == 422 and why in reply.text and 'id="refusal"' in reply.text
    assert _entries(app, Action.EVIDENCE_EXPORT) == []


def test_only_the_sites_officers_export(
    client: TestClient, app: FastAPI, world: World, logins: dict[str, Login]
) -> None:
    rid = upload(client, world.device)
    form = _export_form(PrivateKey.generate())
    oscar = signed_in(app, logins["other_officer"])
    refused = oscar.post(f"/console/recordings/{rid}/export", data={"csrf": page_csrf(oscar), **form})
    assert refused.status_code == 404 and not refused.content.startswith(b"PK")
    for role in ("admin", "auditor"):
        other = signed_in(app, logins[role])
        reply = other.post(f"/console/recordings/{rid}/export", data={"csrf": page_csrf(other), **form})
        assert reply.status_code == 403 and not reply.content.startswith(b"PK")
    assert browser(app).post(f"/console/recordings/{rid}/export", data=form).status_code == 303
    assert _entries(app, Action.EVIDENCE_EXPORT) == []


def test_zero_knowledge_mode_names_the_cli(
    client: TestClient, app: FastAPI, world: World, logins: dict[str, Login], monkeypatch: pytest.MonkeyPatch
) -> None:
    rid = upload(client, world.device)
    olivia = signed_in(app, logins["officer"])
    path = f"/console/recordings/{rid}"
    csrf = page_csrf(olivia, path)
    monkeypatch.setattr(services_of(app).keys, "zero_knowledge", True)  # what a zero-knowledge data directory loads
    reply = olivia.post(f"{path}/export", data={"csrf": csrf, **_export_form(PrivateKey.generate())})
    assert reply.status_code == 409 and "zero-knowledge" in reply.text and "countersign evidence export" in reply.text
    assert _entries(app, Action.EVIDENCE_EXPORT) == []
