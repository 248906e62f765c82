"""The officer's pages: search within their sites only, the recording page, listening, holds; escaping; headers."""

from __future__ import annotations

import markupsafe
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from api.console import render
from api.core.models import AccessLog, ConsoleListenGrant, Device, utcnow
from evidence.audit_actions import Action
from retention.models import Hold
from tests.conftest import World, bearer
from tests.console.support import Login, page_csrf, services_of, signed_in
from tests.support.retention_support import upload

SCRIPT = "<script>alert('x')</script>"


def _read_entries(app: FastAPI) -> list[AccessLog]:
    with services_of(app).sessions() as session:
        return list(session.scalars(select(AccessLog).where(AccessLog.action == Action.EVIDENCE_READ)))


def test_search_shows_only_the_officers_sites(
    client: TestClient, app: FastAPI, world: World, logins: dict[str, Login]
) -> None:
    north = [upload(client, world.device) for _ in range(2)]
    south = upload(client, world.other_device)
    officer = signed_in(app, logins["officer"])
    page = officer.get("/console/search")
    assert page.status_code == 200
    assert all(f"/console/recordings/{rid}" in page.text for rid in north)
    assert south not in page.text and "counter-s1" not in page.text
    assert '<p id="count">2 recordings' in page.text  # the count is of this officer's sites only
    other_site = officer.get("/console/search", params={"site": "south"})
    assert '<p id="count">0 recordings' in other_site.text and south not in other_site.text
    by_device = officer.get("/console/search", params={"device": "counter-n1", "staff": "S-001", "status": "complete"})
    assert '<p id="count">2 recordings' in by_device.text
    assert '<p id="count">0 recordings' in officer.get("/console/search", params={"staff": "S-999"}).text
    assert (
        '<p id="count">0 recordings'
        in officer.get("/console/search", params={"from": "2000-01-01", "to": "2000-01-02"}).text
    )
    assert "JST" in page.text and "0:02" in page.text  # local time (Asia/Tokyo) and duration


def test_recording_page_shows_consent_chain_retention_and_custody(
    client: TestClient, app: FastAPI, world: World, logins: dict[str, Login]
) -> None:
    rid = upload(client, world.device)
    page = signed_in(app, logins["officer"]).get(f"/console/recordings/{rid}")
    assert page.status_code == 200
    detail = client.get(f"/v1/evidence/{rid}", headers=bearer(world.officer)).json()
    from api.core.models import NoticeRow

    consent = detail["consent"]
    with services_of(app).sessions() as session:
        notice = session.get(NoticeRow, (consent["notice_id"], consent["notice_version"], consent["language"]))
    assert notice is not None
    assert f'<pre id="notice-text">{markupsafe.escape(notice.text)}</pre>' in page.text  # exactly as shown
    assert "the one in the signed consent record" in page.text
    assert 'id="chain" class="ok">verified' in page.text
    assert markupsafe.escape(detail["retain_reason"]) in page.text
    assert "api:recording:create" in page.text and "api:segment:upload" in page.text  # the custody timeline


def test_other_sites_recordings_are_not_found(
    client: TestClient, app: FastAPI, world: World, logins: dict[str, Login]
) -> None:
    rid = upload(client, world.device)
    oscar = signed_in(app, logins["other_officer"])
    csrf = page_csrf(oscar)
    for path in (f"/console/recordings/{rid}", f"/console/recordings/{rid}/player", f"/console/recordings/{rid}/audio"):
        assert oscar.get(path).status_code == 404, path
    assert oscar.post(f"/console/recordings/{rid}/listen", data={"csrf": csrf, "purpose": "curious"}).status_code == 404
    assert _read_entries(app) == []


def test_admin_and_auditor_cannot_open_audio(
    client: TestClient, app: FastAPI, world: World, logins: dict[str, Login]
) -> None:
    rid = upload(client, world.device)
    for role in ("admin", "auditor"):
        browser = signed_in(app, logins[role])
        assert browser.get("/console").status_code == 200
        for path in (f"/console/recordings/{rid}", f"/console/recordings/{rid}/audio", "/console/search"):
            reply = browser.get(path)
            assert reply.status_code == 403, (role, path)
            assert "This page is for officers" in reply.text and "RIFF" not in reply.text
    assert _read_entries(app) == []


def test_listen_needs_a_purpose_then_serves_ranges(
    client: TestClient, app: FastAPI, world: World, logins: dict[str, Login]
) -> None:
    rid = upload(client, world.device, segments=3)
    officer = signed_in(app, logins["officer"])
    assert officer.get(f"/console/recordings/{rid}/audio").status_code == 403  # no purpose, no byte
    assert officer.get(f"/console/recordings/{rid}/player").status_code == 303
    csrf = page_csrf(officer, f"/console/recordings/{rid}")
    reply = officer.post(
        f"/console/recordings/{rid}/listen", data={"csrf": csrf, "purpose": "complaint 2026-17 review"}
    )
    assert reply.status_code == 303 and reply.headers["location"] == f"/console/recordings/{rid}/player"
    (entry,) = _read_entries(app)
    assert entry.purpose == "complaint 2026-17 review" and entry.detail["via"] == "console"
    player = officer.get(f"/console/recordings/{rid}/player")
    assert f'<audio id="player" controls preload="metadata" src="/console/recordings/{rid}/audio">' in player.text
    whole = officer.get(f"/console/recordings/{rid}/audio")
    assert whole.status_code == 200 and whole.headers["accept-ranges"] == "bytes"
    assert whole.headers["x-countersign-access-log"] == str(entry.seq)
    api = client.post(
        f"/v1/evidence/{rid}/audio",
        json={"purpose": "compare with the console", "format": "wav"},
        headers=bearer(world.officer),
    )
    assert whole.content == api.content and whole.content[:4] == b"RIFF"
    size = len(whole.content)
    part = officer.get(f"/console/recordings/{rid}/audio", headers={"Range": "bytes=40000-50000"})
    assert part.status_code == 206 and part.headers["content-range"] == f"bytes 40000-50000/{size}"
    assert part.content == whole.content[40000:50001]
    tail = officer.get(f"/console/recordings/{rid}/audio", headers={"Range": "bytes=-100"})
    assert tail.status_code == 206 and tail.content == whole.content[-100:]
    assert officer.get(f"/console/recordings/{rid}/audio", headers={"Range": f"bytes={size}-"}).status_code == 416
    with services_of(app).sessions() as session, session.begin():  # the grant runs out
        session.execute(update(ConsoleListenGrant).values(expires_at=utcnow()))
    assert officer.get(f"/console/recordings/{rid}/audio").status_code == 403
    assert len(_read_entries(app)) == 2  # the console's and the API's: range requests under a grant add none


def test_place_and_release_a_hold_and_scripts_are_text(
    client: TestClient, app: FastAPI, world: World, logins: dict[str, Login]
) -> None:
    rid = upload(client, world.device)
    with services_of(app).sessions() as session, session.begin():
        session.execute(update(Device).where(Device.id == world.device.id).values(name=SCRIPT))
    officer = signed_in(app, logins["officer"])
    path = f"/console/recordings/{rid}"
    reply = officer.post(
        f"{path}/holds",
        data={"csrf": page_csrf(officer, path), "case_ref": SCRIPT, "reason": "litigation notice received"},
    )
    assert reply.status_code == 303
    with services_of(app).sessions() as session:
        (hold,) = session.scalars(select(Hold)).all()
    page = officer.get(path).text
    search = officer.get("/console/search").text
    shown = str(markupsafe.escape(SCRIPT))  # &lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;
    for text in (page, search):
        assert SCRIPT not in text and shown in text
    assert f'<td class="case-ref">{shown}</td>' in page and f'<span id="device-name">{shown}</span>' in page
    release = officer.post(
        f"/console/holds/{hold.id}/release",
        data={"csrf": page_csrf(officer, path), "reason": "case closed by court", "back": rid},
    )
    assert release.status_code == 303 and release.headers["location"] == path
    assert 'id="no-holds"' in officer.get(path).text
    with services_of(app).sessions() as session:
        actions = list(session.scalars(select(AccessLog.action).where(AccessLog.target == f"hold:{hold.id}")))
    assert actions == [Action.HOLD_CREATE, Action.HOLD_RELEASE]
    bad = officer.post(f"{path}/holds", data={"csrf": page_csrf(officer, path), "case_ref": "C-1", "reason": "short"})
    assert bad.status_code == 422 and "reason" in bad.text  # the API's own validation, as a page


def test_pages_carry_the_policy_and_security_headers(app: FastAPI, logins: dict[str, Login]) -> None:
    officer = signed_in(app, logins["officer"])
    for path in ("/console/sign-in", "/console/search", "/console"):
        reply = officer.get(path)
        assert reply.status_code == 200
        assert reply.headers["content-security-policy"] == render.CSP
        assert "default-src 'self'" in render.CSP and "unsafe-inline" not in render.CSP
        assert reply.headers["x-frame-options"] == "DENY"
        assert reply.headers["x-content-type-options"] == "nosniff"
        assert reply.headers["referrer-policy"] == "no-referrer"
        assert reply.headers["cache-control"] == "no-store"
        assert "<script" not in reply.text  # no inline script, and no script needed yet
        assert "http://" not in reply.text and "https://" not in reply.text  # nothing from elsewhere
    css = officer.get("/console/static/console.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert officer.get("/console/static/../pages.py").status_code == 404
    assert officer.get("/console/static/pages.py").status_code == 404
