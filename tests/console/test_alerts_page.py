"""The officer's alerts page: their sites' alerts only, acknowledging through the form, CSRF, roles, escaping;
and, in a real browser, an alert that appears on the open page by itself.

The page and its form call the API's own route functions (list_alerts, acknowledge, alert_stream),
so what the page shows and what the form changes is checked against the API's GET /v1/alerts/{id}.
The browser test tests the page, not the backend: it is skipped on postgres-s3, as
tests/console/test_console_browser.py is.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import markupsafe
import pyotp
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from api.core.models import AccessLog, Device
from evidence import wire
from evidence.audit_actions import Action
from tests.conftest import World, bearer, free_port
from tests.console.support import PASSWORD, Login, page_csrf, services_of, signed_in
from tests.support.backends import POSTGRES_S3
from tests.support.browser import chromium, console_errors, wait_for_script
from tests.support.factories import SimDevice

SCRIPT = "<script>alert('x')</script>"


def _raise(client: TestClient, device: SimDevice, **body: Any) -> dict[str, Any]:
    reply = client.post(wire.ALERTS, json={"kind": "help", **body}, headers=device.auth)
    assert reply.status_code == 201, reply.text
    alert: dict[str, Any] = reply.json()
    return alert


def _api_view(client: TestClient, world: World, alert_id: str) -> dict[str, Any]:
    reply = client.get(wire.ALERT.format(alert_id=alert_id), headers=bearer(world.officer))
    assert reply.status_code == 200, reply.text
    view: dict[str, Any] = reply.json()
    return view


def _acks(app: FastAPI) -> int:
    with services_of(app).sessions() as session:
        return session.scalar(select(func.count()).where(AccessLog.action == Action.ALERT_ACK)) or 0


def test_page_lists_only_the_officers_sites_alerts(
    client: TestClient, app: FastAPI, world: World, logins: dict[str, Login]
) -> None:
    rec = world.device.new_recording()
    assert client.post(wire.RECORDINGS, json=rec.create_body(), headers=world.device.auth).status_code == 201
    north = _raise(client, world.device, recording_id=str(rec.id))
    south = _raise(client, world.other_device)
    officer = signed_in(app, logins["officer"])
    page = officer.get("/console/alerts")
    assert page.status_code == 200
    assert f'data-alert="{north["id"]}"' in page.text and 'data-state="open"' in page.text
    assert '<td class="device">counter-n1</td>' in page.text and '<td class="site">north</td>' in page.text
    assert '<td class="kind">help</td>' in page.text and '<td class="tier">1</td>' in page.text
    assert "JST" in page.text  # local time (Asia/Tokyo)
    assert f'href="/console/recordings/{rec.id}"' in page.text  # the alert's recording
    assert f'action="/console/alerts/{north["id"]}/ack"' in page.text  # unanswered: a form
    assert south["id"] not in page.text and "counter-s1" not in page.text and "south" not in page.text
    assert '<p id="alert-count">1 alert</p>' in page.text
    assert '<script src="/console/static/alerts.js" defer></script>' in page.text  # the live part, from 'self'
    js = officer.get("/console/static/alerts.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert "/console/alerts/stream" in js.text
    other = signed_in(app, logins["other_officer"]).get("/console/alerts").text
    assert south["id"] in other and north["id"] not in other and "counter-n1" not in other


def test_ack_through_the_form_shows_on_the_page_and_in_the_api(
    client: TestClient, app: FastAPI, world: World, logins: dict[str, Login]
) -> None:
    alert = _raise(client, world.device)
    officer = signed_in(app, logins["officer"])
    csrf = page_csrf(officer, "/console/alerts")
    reply = officer.post(f"/console/alerts/{alert['id']}/ack", data={"csrf": csrf, "message": "Sato is coming"})
    assert reply.status_code == 303 and reply.headers["location"] == "/console/alerts"
    page = officer.get("/console/alerts").text
    assert '<span class="message">Sato is coming</span>' in page and '<span class="by">olivia</span>' in page
    assert 'data-state="acknowledged"' in page and f'action="/console/alerts/{alert["id"]}/ack"' not in page
    view = _api_view(client, world, alert["id"])
    assert (view["state"], view["acknowledged_by"], view["message"]) == ("acknowledged", "olivia", "Sato is coming")
    assert _acks(app) == 1  # the API's audit entry (api:alert:ack), written by the API's function
    again = officer.post(f"/console/alerts/{alert['id']}/ack", data={"csrf": csrf, "message": "me too"})
    assert again.status_code == 409 and "olivia" in again.text  # the first answer wins, as in the API
    empty = _raise(client, world.device)
    blank = officer.post(f"/console/alerts/{empty['id']}/ack", data={"csrf": csrf, "message": "  "})
    assert blank.status_code == 422 and "message" in blank.text  # the API's own validation, as a page
    assert _api_view(client, world, empty["id"])["state"] == "open"


def test_ack_without_csrf_is_refused_and_changes_nothing(
    client: TestClient, app: FastAPI, world: World, logins: dict[str, Login]
) -> None:
    alert = _raise(client, world.device)
    officer = signed_in(app, logins["officer"])
    path = f"/console/alerts/{alert['id']}/ack"
    assert officer.post(path, data={"message": "Sato is coming"}).status_code == 403
    assert officer.post(path, data={"csrf": "forged", "message": "Sato is coming"}).status_code == 403
    view = _api_view(client, world, alert["id"])
    assert (view["state"], view["acknowledged_by"], view["message"]) == ("open", None, None)
    assert _acks(app) == 0
    assert f'action="{path}"' in officer.get("/console/alerts").text  # still waiting for an answer


def test_admins_and_auditors_are_refused(
    client: TestClient, app: FastAPI, world: World, logins: dict[str, Login]
) -> None:
    alert = _raise(client, world.device)
    for role in ("admin", "auditor"):
        browser = signed_in(app, logins[role])
        page = browser.get("/console/alerts")
        assert page.status_code == 403 and alert["id"] not in page.text and "counter-n1" not in page.text
        assert browser.get("/console/alerts/stream", params={"timeout": "0"}).status_code == 403
        csrf = page_csrf(browser)
        ack = browser.post(f"/console/alerts/{alert['id']}/ack", data={"csrf": csrf, "message": "on my way"})
        assert ack.status_code == 403
        assert 'href="/console/alerts"' not in browser.get("/console").text  # no nav link for them
    assert _api_view(client, world, alert["id"])["state"] == "open"
    officer = signed_in(app, logins["officer"])
    assert 'href="/console/alerts"' in officer.get("/console").text


def test_stream_relays_the_officers_alerts(
    client: TestClient, app: FastAPI, world: World, logins: dict[str, Login]
) -> None:
    north, south = _raise(client, world.device), _raise(client, world.other_device)
    officer = signed_in(app, logins["officer"])
    with officer.stream("GET", "/console/alerts/stream", params={"timeout": "0"}) as reply:
        assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/event-stream")
        body = "".join(reply.iter_text())
    assert f"id: {north['id']}" in body and "event: alert" in body and south["id"] not in body
    anonymous = TestClient(app, follow_redirects=False)
    assert anonymous.get("/console/alerts/stream", params={"timeout": "0"}).status_code == 303


def test_scripts_in_a_message_or_a_device_name_are_text(
    client: TestClient, app: FastAPI, world: World, logins: dict[str, Login]
) -> None:
    with services_of(app).sessions() as session, session.begin():
        session.execute(update(Device).where(Device.id == world.device.id).values(name=SCRIPT))
    alert = _raise(client, world.device)
    officer = signed_in(app, logins["officer"])
    shown = str(markupsafe.escape(SCRIPT))  # &lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;
    assert f'<td class="device">{shown}</td>' in officer.get("/console/alerts").text
    form = {"csrf": page_csrf(officer, "/console/alerts"), "message": SCRIPT}
    assert officer.post(f"/console/alerts/{alert['id']}/ack", data=form).status_code == 303
    page = officer.get("/console/alerts").text
    assert SCRIPT not in page and f'<span class="message">{shown}</span>' in page
    assert page.count("<script") == 1  # only the page's own alerts.js
    assert _api_view(client, world, alert["id"])["message"] == SCRIPT  # stored as written, escaped when shown


# --------------------------------------------------------------------------- in a real browser


@pytest.fixture
def served(app: FastAPI, client: TestClient) -> Iterator[str]:
    """The test's own service in uvicorn in a thread (the World is built through `client`, on the same app)."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 10
    while not server.started and time.time() < deadline:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def _wait(driver: Any, script: str, timeout: float = 5.0) -> Any:
    return wait_for_script(driver, script, timeout)


def _row(alert_id: str) -> str:
    return f"document.querySelector('tr[data-alert=\"{alert_id}\"]')"


@pytest.mark.browser
@pytest.mark.skipif(POSTGRES_S3, reason="tests the console's pages, not the backend: run once, on sqlite-fs")
def test_alert_appears_live_and_is_acknowledged_in_the_browser(
    app: FastAPI, client: TestClient, world: World, logins: dict[str, Login], served: str
) -> None:
    from selenium.webdriver.common.by import By

    with chromium() as driver:
        driver.get(f"{served}/console/sign-in")
        driver.find_element(By.ID, "name").send_keys("olivia")
        driver.find_element(By.ID, "password").send_keys(PASSWORD)
        driver.find_element(By.ID, "code").send_keys(pyotp.TOTP(logins["officer"].secret).now())
        driver.find_element(By.ID, "sign-in").click()
        _wait(driver, "return document.getElementById('to-alerts') !== null")  # signed in: the officer's nav
        driver.find_element(By.ID, "to-alerts").click()
        _wait(driver, "return document.getElementById('alert-count') !== null")
        assert driver.current_url == f"{served}/console/alerts"
        assert driver.find_element(By.ID, "alert-count").text == "0 alerts"
        _wait(driver, "return document.getElementById('live').textContent.startsWith('Live: new alerts')")
        driver.execute_script("window.notReloaded = true;")  # gone if the page were loaded again

        first = _raise(client, world.device)  # the device presses Call for help
        _wait(driver, f"return {_row(first['id'])} !== null")
        assert driver.execute_script("return window.notReloaded === true")  # it came by itself, no reload
        row = driver.find_element(By.CSS_SELECTOR, f'tr[data-alert="{first["id"]}"]')
        assert row.find_element(By.CSS_SELECTOR, "td.device").text == "counter-n1"
        assert row.find_element(By.CSS_SELECTOR, "td.state").text == "open"
        answer = row.find_element(By.CSS_SELECTOR, "input.ack-message")
        answer.send_keys("Sato is")

        second = _raise(client, world.device, kind="incident")  # another one while the officer types
        _wait(driver, f"return {_row(second['id'])} !== null")
        assert driver.execute_script("return window.notReloaded === true")
        assert driver.find_element(By.ID, "alert-count").text == "2 alerts"
        answer = driver.find_element(By.CSS_SELECTOR, f'input.ack-message[data-alert="{first["id"]}"]')
        assert answer.get_attribute("value") == "Sato is"  # what was typed survives the refresh
        answer.send_keys(" coming")
        driver.find_element(By.CSS_SELECTOR, f'tr[data-alert="{first["id"]}"] button.ack').click()

        # The form posts, and the 303 brings the same URL back: wait for the answered row, not the URL.
        answered = _wait(driver, f"return {_row(first['id'])}?.querySelector('span.message')?.textContent")
        assert answered == "Sato is coming" and driver.current_url == f"{served}/console/alerts"
        assert driver.find_element(By.CSS_SELECTOR, f'tr[data-alert="{first["id"]}"] span.by').text == "olivia"
        view = _api_view(client, world, first["id"])
        assert (view["state"], view["message"]) == ("acknowledged", "Sato is coming")
        # The stream starts with the alerts still waiting (the second): shown as they are, they fetch nothing.
        _wait(driver, "return document.getElementById('live').textContent.startsWith('Live: new alerts')")
        time.sleep(1.5)
        fetches = "return performance.getEntriesByType('resource').filter(e => e.initiatorType === 'fetch').length"
        assert driver.execute_script(fetches) == 1  # the one on connecting (what changed meanwhile); no loop
        assert console_errors(driver) == []
