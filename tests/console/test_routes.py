"""The console's role x route table: every /console route, for anonymous, officer, other-site officer, admin, auditor.

The console's routes authenticate by cookie, not bearer token, so tests/api/test_authorization.py
lists them in OUTSIDE_THE_TABLE and points here. A route added under /console without a row below
fails test_every_console_route_is_in_the_table. POSTs carry the caller's valid CSRF token, so the
cell is the role's answer (the token's own refusals are tests/console/test_csrf.py); a GET's fields
are its query (the alert stream's ?timeout=0 ends it after its first poll).
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from api.core.models import Device, Recording, RecordingNote, User
from retention.models import DeletionRequest, Hold
from tests.api.test_authorization import OUTSIDE_THE_TABLE, served_routes
from tests.conftest import World, bearer
from tests.console.support import Login, browser, page_csrf, services_of, signed_in
from tests.support.retention_support import upload
from tests.support.world import request_deletion

CALLERS = ("anonymous", "officer", "other_officer", "admin", "auditor")
RID, HOLD, ALERT = "{recording_id}", "{hold_id}", "{alert_id}"
# (method, path, form fields, answers in CALLERS order). Rows run in this order for each caller:
# listen before player, audio and waveform (the grant), sign-out last (it ends the session); the deletion
# request comes after a hold is placed, so it is the API's refusal (409) and the recording stays.
TABLE: list[tuple[str, str, dict[str, str], tuple[int, ...]]] = [
    ("GET", "/console", {}, (303, 200, 200, 200, 200)),
    ("GET", "/console/sign-in", {}, (200, 200, 200, 200, 200)),
    ("POST", "/console/sign-in", {}, (403, 403, 403, 403, 403)),  # no sign-in form token: refused
    ("GET", "/console/static/{name}", {}, (200, 200, 200, 200, 200)),
    ("GET", "/console/search", {}, (303, 200, 200, 403, 403)),
    ("GET", f"/console/recordings/{RID}", {}, (303, 200, 404, 403, 403)),
    ("POST", f"/console/recordings/{RID}/listen", {"purpose": "complaint review"}, (303, 303, 404, 403, 403)),
    ("GET", f"/console/recordings/{RID}/player", {}, (303, 200, 404, 403, 403)),
    ("GET", f"/console/recordings/{RID}/audio", {}, (303, 200, 404, 403, 403)),
    ("GET", f"/console/recordings/{RID}/waveform.svg", {}, (303, 200, 404, 403, 403)),
    (
        "POST",
        f"/console/recordings/{RID}/holds",
        {"case_ref": "C-2", "reason": "a legal matter here"},
        (303, 303, 404, 403, 403),
    ),
    ("POST", f"/console/holds/{HOLD}/release", {"reason": "case closed by court"}, (303, 303, 404, 403, 403)),
    ("POST", f"/console/recordings/{RID}/notes", {"text": "called the customer back"}, (303, 303, 404, 403, 403)),
    ("POST", f"/console/recordings/{RID}/flag", {"category": "threats"}, (303, 303, 404, 403, 403)),
    (
        "POST",
        f"/console/recordings/{RID}/extend",
        {"until": "2036-04-01", "reason": "the court asked us to keep it"},
        (303, 303, 404, 403, 403),
    ),
    (  # the officer gets through to the API's rule: still held (the hold placed in the row above), refused
        "POST",
        f"/console/recordings/{RID}/deletion",
        {"reason": "recorded by mistake, no incident", "confirm": "yes"},
        (303, 409, 404, 403, 403),
    ),
    ("GET", "/console/alerts", {}, (303, 200, 200, 403, 403)),
    ("GET", "/console/alerts/stream", {"timeout": "0"}, (303, 200, 200, 403, 403)),
    ("POST", f"/console/alerts/{ALERT}/ack", {"message": "Sato is coming"}, (303, 303, 404, 403, 403)),
    # Hand-over (tests/console/test_handover.py): {request_id} is olivia's request to delete a second
    # recording, so her approval is the API's refusal (403: not her own) and her cancel goes through.
    ("GET", "/console/deletions", {}, (303, 200, 200, 403, 403)),
    ("POST", "/console/deletions/{request_id}/approve", {"confirm": "yes"}, (303, 403, 404, 403, 403)),
    ("POST", "/console/deletions/{request_id}/cancel", {"reason": "keep it, please"}, (303, 303, 404, 403, 403)),
    (  # the held recording: a hold never stops an export; the key is X25519's base point, a valid public key
        "POST",
        f"/console/recordings/{RID}/export",
        {"case_ref": "C-3", "purpose": "handed to the police today", "recipient_public_key": "09" + "00" * 31},
        (303, 200, 404, 403, 403),
    ),
    # Administration (tests/console/test_admin_pages.py): {user_id} is otto (no console session, so a new
    # sign-in ends nobody's), {device_id} the south device; each disable is followed by its enable.
    ("GET", "/console/admin/users", {}, (303, 403, 403, 200, 403)),
    ("POST", "/console/admin/users", {"name": "nadia", "role": "admin"}, (303, 403, 403, 303, 403)),
    ("POST", "/console/admin/users/{user_id}/disable", {"reason": "on leave for a month"}, (303, 403, 403, 303, 403)),
    ("POST", "/console/admin/users/{user_id}/enable", {"reason": "back from the leave"}, (303, 403, 403, 303, 403)),
    ("POST", "/console/admin/users/{user_id}/credentials", {}, (303, 403, 403, 200, 403)),
    ("GET", "/console/admin/devices", {}, (303, 403, 403, 200, 403)),
    ("POST", "/console/admin/devices", {"name": "counter-n9", "site": "north"}, (303, 403, 403, 200, 403)),
    ("POST", "/console/admin/devices/{device_id}/disable", {"reason": "sent for repair"}, (303, 403, 403, 303, 403)),
    ("POST", "/console/admin/devices/{device_id}/enable", {"reason": "back from repair"}, (303, 403, 403, 303, 403)),
    ("GET", "/console/admin/sites", {}, (303, 403, 403, 200, 403)),
    ("POST", "/console/admin/sites", {"id": "east"}, (303, 403, 403, 303, 403)),
    # {site_id} is north; the policy set is then cleared, the category added then removed.
    ("GET", "/console/admin/policies", {}, (303, 403, 403, 200, 403)),
    (
        "POST",
        "/console/admin/policies",
        {"category": "incident", "site": "north", "retain_days": "30"},
        (303, 403, 403, 303, 403),
    ),
    ("POST", "/console/admin/policies/clear", {"category": "incident", "site": "north"}, (303, 403, 403, 303, 403)),
    ("GET", "/console/admin/notices", {}, (303, 403, 403, 200, 403)),
    (
        "POST",
        "/console/admin/notices",
        {"id": "counter-t", "language": "en", "title": "Recording", "text": "We record."},
        (303, 403, 403, 303, 403),
    ),
    ("GET", "/console/admin/sites/{site_id}/categories", {}, (303, 403, 403, 200, 403)),
    (
        "POST",
        "/console/admin/sites/{site_id}/categories",
        {"code": "shoplifting", "ja": "万引き", "en": "Shoplifting"},
        (303, 403, 403, 303, 403),
    ),
    ("POST", "/console/admin/sites/{site_id}/categories/remove", {"code": "shoplifting"}, (303, 403, 403, 303, 403)),
    # The audit browser (tests/console/test_audit_log.py): auditors only; "Verify now" exports and checks the log.
    ("GET", "/console/audit", {"outcome": "denied"}, (303, 403, 403, 403, 200)),
    ("GET", "/console/audit/export", {"action": "api:hold:create"}, (303, 403, 403, 403, 200)),
    ("POST", "/console/audit/verify", {}, (303, 403, 403, 403, 200)),
    ("POST", "/console/sign-out", {}, (303, 303, 303, 303, 303)),
]


def test_every_console_route_is_in_the_table(app: FastAPI) -> None:
    served = {(m, p) for m, p in served_routes(app) if p.startswith("/console")}
    assert served == {(m, p) for m, p, _, _ in TABLE}
    assert {k for k in OUTSIDE_THE_TABLE if k[1].startswith("/console")} == served  # and listed there, pointing here


def test_role_by_route(client: TestClient, app: FastAPI, world: World, logins: dict[str, Login]) -> None:
    rid = upload(client, world.device)
    officer = signed_in(app, logins["officer"])
    path = f"/console/recordings/{rid}"
    form = {"csrf": page_csrf(officer, path), "case_ref": "C-1", "reason": "litigation notice received"}
    assert officer.post(f"{path}/holds", data=form).status_code == 303
    with services_of(app).sessions() as session:
        hold_id = session.scalars(select(Hold)).one().id
    raised = client.post("/v1/alerts", json={"kind": "help"}, headers=world.device.auth)
    assert raised.status_code == 201, raised.text
    alert_id = raised.json()["id"]
    second = upload(client, world.device)  # the hand-over rows' deletion request (not held: it can be asked)
    asked = request_deletion(client, world.officer, second, "recorded by mistake, no incident")
    assert asked.status_code == 202, asked.text
    request_id = asked.json()["id"]
    with services_of(app).sessions() as session:  # the administration rows' user and device
        otto = session.scalars(select(User.id).where(User.name == "otto")).one()
        south = session.scalars(select(Device.id).where(Device.name == "counter-s1")).one()
    browsers = {"anonymous": browser(app), "officer": officer}  # one sign-in each: a TOTP code is spent once
    browsers.update({role: signed_in(app, logins[role]) for role in CALLERS[2:]})
    wrong = []
    for caller, column in zip(CALLERS, range(len(CALLERS)), strict=True):
        client_ = browsers[caller]
        csrf = page_csrf(client_) if caller != "anonymous" else ""
        for method, template, fields, answers in TABLE:
            url = template.replace(RID, rid).replace(HOLD, hold_id).replace(ALERT, alert_id)
            url = url.replace("{name}", "console.css").replace("{user_id}", otto).replace("{device_id}", south)
            url = url.replace("{site_id}", "north")
            url = url.replace("{request_id}", request_id)
            if method == "GET":
                status = client_.get(url, params=fields).status_code
            else:
                data = {**fields, "csrf": csrf} if template != "/console/sign-in" else fields
                status = client_.post(url, data=data).status_code
            if status != answers[column]:
                wrong.append(f"{caller} {method} {template}: {status}, expected {answers[column]}")
    assert wrong == []
    assert "RIFF" not in browsers["admin"].get(f"{path}/audio").text
    with services_of(app).sessions() as session:  # only the officer's forms changed anything
        authors = session.scalars(select(User.name).join(RecordingNote, RecordingNote.author_id == User.id)).all()
        assert authors == ["olivia"]
        assert session.get(Recording, rid).incident_category == "threats"  # type: ignore[union-attr]
        assert session.scalars(select(DeletionRequest).where(DeletionRequest.recording_id == rid)).all() == []
        asked_row = session.get(DeletionRequest, request_id)  # refused to its requester, cancelled by her
        assert asked_row is not None and asked_row.approved_by is None and asked_row.cancelled_by is not None
    shown = client.get(f"/v1/alerts/{alert_id}", headers=bearer(world.officer)).json()
    assert shown["state"] == "acknowledged" and shown["acknowledged_by"] == "olivia"  # the officer's, once
