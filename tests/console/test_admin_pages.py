"""The administrators' pages: users, devices and sites through the API's own route functions, so
their rules and audit entries are the API's; one-time secrets shown once; nothing of evidence."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import markupsafe
import nacl.signing
import pyotp
import segno
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from api.console.admin import qr_svg
from api.core.models import AccessLog, Device, User
from evidence import wire
from evidence.audit_actions import Action
from tests.conftest import World, bearer
from tests.console.support import Login, browser, page_csrf, services_of, sign_in, signed_in
from tests.support.retention_support import upload

SCRIPT = "<script>alert('x')</script>"
USERS, DEVICES, SITES = "/console/admin/users", "/console/admin/devices", "/console/admin/sites"
POLICIES, NOTICES, CATEGORIES = "/console/admin/policies", "/console/admin/notices", f"{SITES}/north/categories"
REASON = "left the company last week"
# What the administration pages change, each with its audit entry (the API's).
CHANGES = (
    Action.USER_CREATE, Action.USER_DISABLE, Action.USER_ENABLE, Action.CONSOLE_LOGIN_SET, Action.DEVICE_CREATE,
    Action.DEVICE_DISABLE, Action.DEVICE_ENABLE, Action.SITE_CREATE, Action.POLICY_SET, Action.POLICY_CLEAR,
    Action.NOTICE_ADD, Action.ALERTING_SET, Action.CONSOLE_LOGIN_AWAITS_APPROVAL,
)  # fmt: skip


def _entries(app: FastAPI, action: Action) -> list[AccessLog]:
    with services_of(app).sessions() as session:
        return list(session.scalars(select(AccessLog).where(AccessLog.action == action).order_by(AccessLog.seq)))


def _user(app: FastAPI, name: str) -> User:
    with services_of(app).sessions() as session:
        user = session.scalar(select(User).where(User.name == name))
        assert user is not None
        return user


def _device(app: FastAPI, name: str) -> Device:
    with services_of(app).sessions() as session:
        device = session.scalar(select(Device).where(Device.name == name))
        assert device is not None
        return device


def _row(page: str, marker: str) -> str:
    """The table row holding `marker` (a data-user or data-device id, or a name)."""
    rows = [r for r in page.split("<tr")[1:] if marker in r]
    assert len(rows) == 1, f"{len(rows)} rows hold {marker!r}"
    return rows[0].split("</tr>")[0]


def _post(client: TestClient, page: str, path: str, **fields: str) -> tuple[int, str]:
    reply = client.post(path, data={"csrf": page_csrf(client, page), **fields})
    return reply.status_code, reply.text


def test_admin_creates_a_user_and_sees_them_listed(app: FastAPI, world: World, logins: dict[str, Login]) -> None:
    admin = signed_in(app, logins["admin"])
    page = admin.get(USERS).text
    assert 'id="to-admin"' in page and 'id="user-list"' in page
    assert 'class="login">not set<' in _row(page, ">otto<")  # no console sign-in yet
    assert 'class="login">set<' in _row(page, ">olivia<")
    status, _ = _post(admin, USERS, USERS, name="nadia", role="officer", sites="north, south")
    assert status == 303
    row = _row(admin.get(USERS).text, ">nadia<")
    assert "officer" in row and "north, south" in row and "awaits approval" in row and "not set" in row
    nadia = _user(app, "nadia")
    assert nadia.role == "officer" and sorted(nadia.site_ids) == ["north", "south"] and nadia.pending_approval
    [entry] = [e for e in _entries(app, Action.USER_CREATE) if e.target == f"user:{nadia.id}"]
    assert entry.actor == f"user:{_user(app, 'admin').id}"  # the API's own entry, the admin's
    assert entry.detail == {"role": "officer", "sites": ["north", "south"], "pending_approval": True}


def test_disable_then_enable_with_reasons_audited_as_the_api(
    client: TestClient, app: FastAPI, world: World, logins: dict[str, Login]
) -> None:
    admin = signed_in(app, logins["admin"])
    otto = _user(app, "otto")
    status, text = _post(admin, USERS, f"{USERS}/{otto.id}/disable", reason="short")
    assert status == 422 and "reason" in text and not _user(app, "otto").disabled  # the API's rule: 10 characters
    assert _post(admin, USERS, f"{USERS}/{otto.id}/disable", reason=REASON)[0] == 303
    assert _user(app, "otto").disabled and "disabled" in _row(admin.get(USERS).text, otto.id)
    assert client.get("/v1/evidence", headers=bearer(world.second_officer)).status_code == 401  # at once
    assert _post(admin, USERS, f"{USERS}/{otto.id}/enable", reason="came back to work today")[0] == 303
    assert not _user(app, "otto").disabled and "active" in _row(admin.get(USERS).text, otto.id)
    assert client.get("/v1/evidence", headers=bearer(world.second_officer)).status_code == 200
    actor = f"user:{_user(app, 'admin').id}"
    off, on = _entries(app, Action.USER_DISABLE), _entries(app, Action.USER_ENABLE)
    assert [(e.actor, e.target, e.purpose) for e in off] == [(actor, f"user:{otto.id}", REASON)]
    assert [(e.actor, e.target, e.purpose) for e in on] == [(actor, f"user:{otto.id}", "came back to work today")]
    admin_id = _user(app, "admin").id
    status, text = _post(admin, USERS, f"{USERS}/{admin_id}/disable", reason=REASON)
    assert status == 409 and "yourself" in text  # the API's rule, shown as a page


def test_new_credentials_sign_in_once_shown_and_end_old_sessions(
    client: TestClient, app: FastAPI, world: World, logins: dict[str, Login]
) -> None:
    admin = signed_in(app, logins["admin"])
    olivia = signed_in(app, logins["officer"])
    olivia_id = _user(app, "olivia").id
    reply = admin.post(f"{USERS}/{olivia_id}/credentials", data={"csrf": page_csrf(admin, USERS)})
    assert reply.status_code == 200
    password = re.search(r'id="password">([^<]+)<', reply.text)
    secret = re.search(r'id="totp-secret">([^<]+)<', reply.text)
    assert password is not None and secret is not None
    new = Login("olivia", secret.group(1))
    uri = pyotp.TOTP(new.secret).provisioning_uri(name="olivia", issuer_name="Countersign")
    assert str(markupsafe.escape(uri)) in reply.text and str(qr_svg(uri)) in reply.text  # its QR, by segno
    assert olivia.get("/console/search").status_code == 303  # her old session ended with her old factors
    assert sign_in(app, logins["officer"])[1] == 401  # the old secret and password no longer work
    # The admin has seen her new sign-in, so it works only once a second person approves it again.
    assert 'id="awaits-approval"' in reply.text and _user(app, "olivia").pending_approval
    assert sign_in(app, new, password=password.group(1))[1] == 401
    [awaits] = _entries(app, Action.CONSOLE_LOGIN_AWAITS_APPROVAL)
    assert awaits.actor == f"user:{_user(app, 'admin').id}" and awaits.target == f"user:{olivia_id}"
    approved = client.post(f"/v1/users/{olivia_id}/approve", headers=bearer(world.auditor))
    assert approved.status_code == 200, approved.text
    assert sign_in(app, new, code=new.code(1), password=password.group(1))[1] == 303  # the new ones work
    again = admin.get(USERS).text
    assert password.group(1) not in again and new.secret not in again  # shown once: not on reload
    assert 'class="login">set<' in _row(again, olivia_id)
    [entry] = _entries(app, Action.CONSOLE_LOGIN_SET)[-1:]
    assert entry.actor == f"user:{_user(app, 'admin').id}" and entry.target == f"user:{olivia_id}"
    assert entry.detail["reset"] is True and entry.detail["sessions_ended"] == 1
    assert new.secret not in str(entry.detail) and password.group(1) not in str(entry.detail)


def test_an_admins_new_credentials_need_no_approval(app: FastAPI, world: World, logins: dict[str, Login]) -> None:
    admin = signed_in(app, logins["admin"])
    assert _post(admin, USERS, USERS, name="nadia", role="admin")[0] == 303
    status, text = _post(admin, USERS, f"{USERS}/{_user(app, 'nadia').id}/credentials")
    password = re.search(r'id="password">([^<]+)<', text)
    secret = re.search(r'id="totp-secret">([^<]+)<', text)
    assert status == 200 and password is not None and secret is not None and 'id="awaits-approval"' not in text
    assert sign_in(app, Login("nadia", secret.group(1)), password=password.group(1))[1] == 303  # no evidence access
    assert _entries(app, Action.CONSOLE_LOGIN_AWAITS_APPROVAL) == []
    [entry] = _entries(app, Action.CONSOLE_LOGIN_SET)[-1:]
    assert entry.detail == {"name": "nadia", "reset": False, "sessions_ended": 0}


def test_added_device_shows_a_code_and_its_qr_once_and_the_code_enrols(
    client: TestClient, app: FastAPI, world: World, logins: dict[str, Login]
) -> None:
    admin = signed_in(app, logins["admin"])
    status, text = _post(admin, DEVICES, DEVICES, name="counter-n2", site="north")
    assert status == 200
    found = re.search(r'id="enrolment-code">([A-Z0-9-]+)<', text)
    assert found is not None
    code = found.group(1)
    svg = re.search(r"<svg[^>]*>.*?</svg>", text, re.S)
    assert svg is not None and 'class="segno"' in svg.group(0) and "style=" not in svg.group(0)  # CSP: no style=""
    assert svg.group(0) == segno.make(code, error="m").svg_inline(scale=4, border=4)  # segno's, of this code
    key = nacl.signing.SigningKey.generate()
    enrolled = client.post("/v1/enrol", json={"code": code, "public_key": bytes(key.verify_key).hex()})
    assert enrolled.status_code == 200, enrolled.text
    page = admin.get(DEVICES).text
    assert code not in page and "yes" in _row(page, ">counter-n2<").split('class="enrolled">')[1][:5]
    assert [e.target for e in _entries(app, Action.DEVICE_CREATE)][-1] == f"device:{_device(app, 'counter-n2').id}"


def test_devices_show_last_seen_and_spool_and_can_be_disabled(
    client: TestClient, app: FastAPI, world: World, logins: dict[str, Login]
) -> None:
    beat = {
        "clock": datetime.now(UTC).isoformat(),
        "spool_used_bytes": 10,
        "spool_max_bytes": 100,
        "unsent_segments": 3,
    }
    assert client.post(wire.HEARTBEAT, json=beat, headers=world.device.auth).status_code == 200
    admin = signed_in(app, logins["admin"])
    page = admin.get(DEVICES).text
    row = _row(page, ">counter-n1<")
    assert "10 bytes of 100 bytes (10% full), 3 unsent" in row and "never" not in row
    assert "never" in _row(page, ">counter-s1<")  # no heartbeat yet
    south = _device(app, "counter-s1")
    assert _post(admin, DEVICES, f"{DEVICES}/{south.id}/disable", reason="stolen from the counter")[0] == 303
    assert client.post(wire.HEARTBEAT, json=beat, headers=world.other_device.auth).status_code == 401  # revoked
    assert "disabled" in _row(admin.get(DEVICES).text, south.id)
    assert _post(admin, DEVICES, f"{DEVICES}/{south.id}/enable", reason="found it again, resealed")[0] == 303
    assert client.post(wire.HEARTBEAT, json=beat, headers=world.other_device.auth).status_code == 200
    assert [e.purpose for e in _entries(app, Action.DEVICE_DISABLE)] == ["stolen from the counter"]
    assert [e.purpose for e in _entries(app, Action.DEVICE_ENABLE)] == ["found it again, resealed"]


def test_sites_are_listed_and_added_and_names_shown_as_text(
    app: FastAPI, world: World, logins: dict[str, Login]
) -> None:
    admin = signed_in(app, logins["admin"])
    assert _post(admin, SITES, SITES, id="east", name=f"East {SCRIPT}")[0] == 303
    page = admin.get(SITES).text
    assert SCRIPT not in page and str(markupsafe.escape(f"East {SCRIPT}")) in _row(page, ">east<")
    assert SCRIPT not in admin.get(DEVICES).text  # the site picker too
    status, text = _post(admin, DEVICES, DEVICES, name=SCRIPT, site="east")
    assert status == 422 and SCRIPT not in text  # a device name is an identifier (the API's schema)
    assert [e.target for e in _entries(app, Action.SITE_CREATE)][-1] == "site:east"


def test_admin_pages_show_no_note_or_audio(
    client: TestClient, app: FastAPI, world: World, logins: dict[str, Login]
) -> None:
    rid = upload(client, world.device)
    officer = signed_in(app, logins["officer"])
    path = f"/console/recordings/{rid}"
    secret_note = "the customer's address is 1-2-3 Chuo"
    assert _post(officer, path, f"{path}/notes", text=secret_note)[0] == 303
    admin = signed_in(app, logins["admin"])
    for page in (USERS, DEVICES, SITES):
        reply = admin.get(page)
        assert reply.status_code == 200
        assert secret_note not in reply.text and rid not in reply.text and "RIFF" not in reply.text
        assert "/recordings/" not in reply.text and "<audio" not in reply.text


def _all_routes(app: FastAPI) -> list[tuple[str, str, dict[str, str]]]:
    otto, south = _user(app, "otto").id, _device(app, "counter-s1").id
    return [
        ("GET", USERS, {}),
        ("POST", USERS, {"name": "nadia", "role": "admin"}),
        ("POST", f"{USERS}/{otto}/disable", {"reason": REASON}),
        ("POST", f"{USERS}/{otto}/enable", {"reason": REASON}),
        ("POST", f"{USERS}/{otto}/credentials", {}),
        ("GET", DEVICES, {}),
        ("POST", DEVICES, {"name": "counter-n9", "site": "north"}),
        ("POST", f"{DEVICES}/{south}/disable", {"reason": REASON}),
        ("POST", f"{DEVICES}/{south}/enable", {"reason": REASON}),
        ("GET", SITES, {}),
        ("POST", SITES, {"id": "east"}),
        ("GET", POLICIES, {}),
        ("POST", POLICIES, {"category": "incident", "site": "north", "retain_days": "30"}),
        ("POST", f"{POLICIES}/clear", {"category": "incident", "site": "north"}),
        ("GET", NOTICES, {}),
        ("POST", NOTICES, {"id": "counter", "language": "en", "title": "Recording", "text": "We record."}),
        ("GET", CATEGORIES, {}),
        ("POST", CATEGORIES, {"code": "shoplifting", "ja": "万引き", "en": "Shoplifting"}),
        ("POST", f"{CATEGORIES}/remove", {"code": "other"}),
    ]


def test_officers_and_auditors_are_refused_and_strangers_sent_to_sign_in(
    app: FastAPI, world: World, logins: dict[str, Login]
) -> None:
    callers = {role: signed_in(app, logins[role]) for role in ("officer", "auditor")}
    denied = len(_entries(app, Action.ACCESS_DENIED))
    changes = {a: len(_entries(app, a)) for a in CHANGES}
    wrong = []
    for role, caller in {**callers, "anonymous": browser(app)}.items():
        csrf = page_csrf(caller) if role != "anonymous" else ""
        for method, path, fields in _all_routes(app):
            reply = caller.get(path) if method == "GET" else caller.post(path, data={**fields, "csrf": csrf})
            expected = 303 if role == "anonymous" else 403
            if reply.status_code != expected or (expected == 303 and reply.headers["location"] != "/console/sign-in"):
                wrong.append(f"{role} {method} {path}: {reply.status_code}")
    assert wrong == []
    with services_of(app).sessions() as session:  # nothing changed
        assert session.scalar(select(User).where(User.name == "nadia")) is None
        assert session.scalar(select(Device).where(Device.name == "counter-n9")) is None
    assert not _user(app, "otto").disabled and len(_entries(app, Action.CONSOLE_LOGIN_SET)) == len(logins)
    assert {a: len(_entries(app, a)) for a in CHANGES} == changes  # no change of any kind, audited or not
    refusals = _entries(app, Action.ACCESS_DENIED)[denied:]  # each 403 is logged, as the API's refusals
    assert len([e for e in refusals if e.actor != "anonymous"]) == 2 * len(_all_routes(app))


def test_forms_without_the_csrf_token_are_refused(app: FastAPI, world: World, logins: dict[str, Login]) -> None:
    admin = signed_in(app, logins["admin"])
    admin.get(USERS)
    for method, path, fields in _all_routes(app):
        if method == "POST":
            for token in ({}, {"csrf": "forged"}):
                reply = admin.post(path, data={**fields, **token})
                assert reply.status_code == 403 and "CSRF" in reply.text, path
    with services_of(app).sessions() as session:
        assert session.scalar(select(User).where(User.name == "nadia")) is None
    assert not _user(app, "otto").disabled and not _device(app, "counter-s1").disabled


def test_bad_input_is_a_clear_4xx_page(app: FastAPI, world: World, logins: dict[str, Login]) -> None:
    admin = signed_in(app, logins["admin"])
    unknown = "00000000-0000-4000-8000-000000000000"
    cases = [
        (USERS, USERS, {"name": "", "role": "officer", "sites": "north"}, 422),
        (USERS, USERS, {"name": "nadia", "role": "superuser"}, 422),
        (USERS, USERS, {"name": "nadia", "role": "officer", "sites": "atlantis"}, 404),
        (USERS, USERS, {"name": "nadia", "role": "officer"}, 422),  # an officer needs a site
        (USERS, USERS, {"name": "olivia", "role": "officer", "sites": "north"}, 409),
        (USERS, USERS, {"name": SCRIPT, "role": "admin"}, 422),
        (USERS, f"{USERS}/{unknown}/disable", {"reason": REASON}, 404),
        (USERS, f"{USERS}/{unknown}/credentials", {}, 404),
        (USERS, f"{USERS}/not-a-uuid/credentials", {}, 404),
        (DEVICES, f"{DEVICES}/<b>x<b>/disable", {"reason": REASON}, 404),
        (DEVICES, DEVICES, {"name": "", "site": "north"}, 422),
        (DEVICES, DEVICES, {"name": "counter-x", "site": "atlantis"}, 404),
        (DEVICES, DEVICES, {"name": "counter-x"}, 422),
        (DEVICES, f"{DEVICES}/{unknown}/enable", {"reason": REASON}, 404),
        (SITES, SITES, {"id": ""}, 422),
        (SITES, SITES, {"id": "no spaces here"}, 422),
        (SITES, SITES, {"id": "north"}, 409),
    ]
    wrong = []
    for page, path, fields, expected in cases:
        status, text = _post(admin, page, path, **fields)
        if status != expected or 'id="refusal"' not in text or SCRIPT in text or "<b>x" in text:
            wrong.append(f"{path} {fields}: {status}, expected {expected}")
    assert wrong == []  # each a console page saying why, none echoing markup
    with services_of(app).sessions() as session:
        assert session.scalar(select(User).where(User.name == "nadia")) is None
        assert session.scalar(select(Device).where(Device.name == "counter-x")) is None


def test_retention_policies_set_and_cleared_through_the_api(
    app: FastAPI, world: World, logins: dict[str, Login]
) -> None:
    admin = signed_in(app, logins["admin"])
    page = admin.get(POLICIES).text
    assert 'data-category="incident" data-site=""' in page  # the shipped default is shown
    status, _ = _post(admin, POLICIES, POLICIES, category="incident", site="north", retain_days="30", delete_days="400")
    assert status == 303
    row = _row(admin.get(POLICIES).text, 'data-category="incident" data-site="north"')
    assert 'class="retain">30<' in row and 'class="delete">400<' in row and "stored" in row
    [entry] = _entries(app, Action.POLICY_SET)
    assert entry.actor == f"user:{_user(app, 'admin').id}" and entry.target == "policy:north/incident"
    assert entry.detail["after"] == {"retain_days": 30, "delete_days": 400, "source": "stored"}
    assert _post(admin, POLICIES, f"{POLICIES}/clear", category="incident", site="north")[0] == 303
    assert 'data-site="north"' not in admin.get(POLICIES).text
    assert [e.target for e in _entries(app, Action.POLICY_CLEAR)] == ["policy:north/incident"]
    wrong = []
    for path, fields, expected in [
        (POLICIES, {"category": "incident", "retain_days": "thirty"}, 422),
        (POLICIES, {"category": "incident", "retain_days": "-1"}, 422),
        (POLICIES, {"category": "incident", "retain_days": "9" * 40}, 422),
        (POLICIES, {"category": "bogus", "retain_days": "30"}, 422),
        (POLICIES, {"category": "incident", "site": "atlantis", "retain_days": "30"}, 404),
        (POLICIES, {"category": "incident", "retain_days": "", "delete_days": ""}, 422),  # a rule needs a period
        (f"{POLICIES}/clear", {"category": "incident", "site": "north"}, 404),  # nothing stored there now
        (f"{POLICIES}/clear", {"category": "bogus"}, 422),
    ]:
        status, text = _post(admin, POLICIES, path, **fields)
        if status != expected or 'id="refusal"' not in text:
            wrong.append(f"{path} {fields}: {status}, expected {expected}")
    assert wrong == [] and len(_entries(app, Action.POLICY_SET)) == 1


def test_notices_added_as_new_versions_and_shown_as_text(
    client: TestClient, app: FastAPI, world: World, logins: dict[str, Login]
) -> None:
    admin = signed_in(app, logins["admin"])
    text = f"We record this conversation.\r\nSee {SCRIPT}"
    fields = {"id": "counter-x", "language": "en", "title": f"Recording {SCRIPT}", "text": text}
    assert _post(admin, NOTICES, NOTICES, **fields)[0] == 303
    page = admin.get(NOTICES).text
    assert SCRIPT not in page and str(markupsafe.escape(f"Recording {SCRIPT}")) in page
    listed = [n for n in client.get("/v1/notices", headers=bearer(world.admin)).json() if n["id"] == "counter-x"]
    assert [(n["version"], n["text"]) for n in listed] == [(1, f"We record this conversation.\nSee {SCRIPT}")]
    assert _post(admin, NOTICES, NOTICES, **{**fields, "text": "Second version."})[0] == 303
    listed = [n for n in client.get("/v1/notices", headers=bearer(world.admin)).json() if n["id"] == "counter-x"]
    assert [n["version"] for n in listed] == [1, 2]  # a new version; the first is unchanged
    assert "Second version." in admin.get(NOTICES).text
    assert [e.actor for e in _entries(app, Action.NOTICE_ADD)][-2:] == [f"user:{_user(app, 'admin').id}"] * 2
    wrong = []
    for bad, expected in [
        ({"language": "fr"}, 422),
        ({"text": ""}, 422),
        ({"title": ""}, 422),
        ({"id": "no spaces"}, 422),
        ({"text": "Second version."}, 409),  # the latest version already says this
    ]:
        status, shown = _post(admin, NOTICES, NOTICES, **{**fields, **bad})
        if status != expected or SCRIPT in shown:
            wrong.append(f"{bad}: {status}, expected {expected}")
    assert wrong == []


def test_incident_categories_added_and_removed_through_the_api(
    client: TestClient, app: FastAPI, world: World, logins: dict[str, Login]
) -> None:
    admin = signed_in(app, logins["admin"])
    assert 'data-code="threats"' in admin.get(CATEGORIES).text  # the defaults, until changed
    added = {"code": "shoplifting", "ja": "万引き", "en": f"Shoplifting {SCRIPT}"}
    assert _post(admin, CATEGORIES, CATEGORIES, **added)[0] == 303
    page = admin.get(CATEGORIES).text
    assert SCRIPT not in page and str(markupsafe.escape(added["en"])) in _row(page, 'data-code="shoplifting"')
    assert _post(admin, CATEGORIES, f"{CATEGORIES}/remove", code="other")[0] == 303
    shown = client.get("/v1/sites/north/alerting", headers=bearer(world.admin)).json()["incident_categories"]
    codes = [c["code"] for c in shown]
    assert codes[-1] == "shoplifting" and "other" not in codes and "threats" in codes
    south = client.get("/v1/sites/south/alerting", headers=bearer(world.admin)).json()["incident_categories"]
    assert "other" in [c["code"] for c in south]  # one site's change only
    entries = _entries(app, Action.ALERTING_SET)
    assert [e.target for e in entries] == ["site:north", "site:north"]
    assert entries[0].actor == f"user:{_user(app, 'admin').id}"
    wrong = []
    for path, fields, expected in [
        (CATEGORIES, {"code": "threats", "ja": "脅迫", "en": "Threats"}, 422),  # codes are unique
        (CATEGORIES, {"code": "", "ja": "x", "en": "x"}, 422),
        (CATEGORIES, {"code": "fraud", "ja": "", "en": "Fraud"}, 422),
        (f"{CATEGORIES}/remove", {"code": "nothing-such"}, 404),
        (f"{SITES}/atlantis/categories", {"code": "fraud", "ja": "詐欺", "en": "Fraud"}, 404),
    ]:
        status, text = _post(admin, CATEGORIES, path, **fields)
        if status != expected or 'id="refusal"' not in text:
            wrong.append(f"{path} {fields}: {status}, expected {expected}")
    assert wrong == [] and len(_entries(app, Action.ALERTING_SET)) == 2
    assert admin.get(f"{SITES}/atlantis/categories").status_code == 404
