"""Help alerts through the API, with a real SMTP server and a real webhook receiver the test starts.

The service runs in-process (TestClient) with its delivery worker thread; e-mail goes over SMTP to
aiosmtpd, webhooks over HTTP to a server that verifies the HMAC. tests/api/test_alerts_live.py
covers what needs a real service process (SIGKILL and restart, several processes).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from api.alerts.config import AlertSettings
from api.alerts.worker import Worker
from api.core.models import AccessLog, AlertDelivery, Device, DeviceHealth, Recording
from api.core.services import Services
from api.core.storage.interface import segment_key
from evidence import wire
from tests.conftest import World, bearer, free_port
from tests.support.alert_receivers import SmtpServer, WebhookReceiver, wait_for

BOSS, DEPUTY = "boss@north.example", "deputy@north.example"


@pytest.fixture(autouse=True)
def smtp(monkeypatch: pytest.MonkeyPatch) -> Iterator[SmtpServer]:
    """Started before the app (autouse fixtures come first), so its worker reads these settings."""
    server = SmtpServer(free_port()).start()
    monkeypatch.setenv("COUNTERSIGN_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("COUNTERSIGN_SMTP_PORT", str(server.port))
    monkeypatch.setenv("COUNTERSIGN_ALERTS_POLL_SECONDS", "0.1")
    monkeypatch.setenv("COUNTERSIGN_ALERTS_RETRY_BASE_SECONDS", "0.5")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def hook() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver(free_port()).start()
    try:
        yield receiver
    finally:
        receiver.stop()


def services_of(app: FastAPI) -> Services:
    services: Services = app.state.services
    return services


def add_contact(client: TestClient, world: World, tier: int, **target: str) -> dict[str, Any]:
    reply = client.post(
        wire.ALERT_CONTACTS.format(site_id="north"), json={"tier": tier, **target}, headers=bearer(world.admin)
    )
    assert reply.status_code == 201, reply.text
    created: dict[str, Any] = reply.json()
    return created


def configure(client: TestClient, world: World, **settings: Any) -> None:
    reply = client.put(wire.SITE_ALERTING.format(site_id="north"), json=settings, headers=bearer(world.admin))
    assert reply.status_code == 200, reply.text


def open_recording(client: TestClient, world: World) -> str:
    rec = world.device.new_recording()
    reply = client.post(wire.RECORDINGS, json=rec.create_body(), headers=world.device.auth)
    assert reply.status_code == 201, reply.text
    return str(rec.id)


def raise_help(client: TestClient, world: World, **body: Any) -> dict[str, Any]:
    reply = client.post(wire.ALERTS, json={"kind": "help", **body}, headers=world.device.auth)
    assert reply.status_code == 201, reply.text
    alert: dict[str, Any] = reply.json()
    return alert


def log(app: FastAPI, action: str) -> list[AccessLog]:
    with services_of(app).sessions() as session:
        return list(session.scalars(select(AccessLog).where(AccessLog.action == action).order_by(AccessLog.seq)))


def test_raise_sends_email_and_signed_webhook_and_marks_the_recording(
    app: FastAPI, client: TestClient, world: World, smtp: SmtpServer, hook: WebhookReceiver
) -> None:
    add_contact(client, world, 1, email=BOSS)
    hook.secret = add_contact(client, world, 1, webhook=hook.url)["secret"]
    assert hook.secret.startswith("whsec_")
    recording = open_recording(client, world)
    alert = raise_help(client, world, recording_id=recording, category="threats")
    assert (alert["state"], alert["tier"], alert["device_name"], alert["site"]) == ("open", 1, "counter-n1", "north")
    assert set(alert) == {
        "id", "kind", "site", "device_id", "device_name", "recording_id", "category", "state", "tier",
        "created_at", "escalated_at", "acknowledged_at", "acknowledged_by", "message",
    }  # fmt: skip

    [mail] = wait_for(lambda: smtp.to(BOSS))
    [posted] = wait_for(lambda: hook.received)
    assert posted.valid, "the webhook's HMAC did not verify"
    document = json.loads(posted.body)
    assert document["event"] == "alert.raised" and document["alert"]["id"] == alert["id"]
    assert posted.headers["X-Countersign-Delivery"] == document["delivery_id"]
    assert "counter-n1" in mail.message["Subject"] and alert["id"] in mail.message.get_content()
    with services_of(app).sessions() as session:
        deliveries = {d.channel: d for d in session.scalars(select(AlertDelivery))}
        assert mail.message["Message-ID"] == f"<{deliveries['email'].id}@countersign>"  # stable: receivers dedupe
        assert document["delivery_id"] == deliveries["webhook"].id
        stored = session.get(Recording, recording)
        assert stored is not None and stored.incident_category == "threats"
    # The alert, the incident flag and each delivery are in the audit log.
    wait_for(lambda: len(log(app, "alerts:delivery:sent")) == 2)
    [raised] = log(app, "api:alert:raise")
    assert raised.target == f"alert:{alert['id']}" and len(raised.detail["deliveries"]) == 2
    assert [e.target for e in log(app, "api:recording:flag")] == [f"recording:{recording}"]
    assert "whsec_" not in json.dumps([e.detail for e in log(app, "api:alert-contact:add")])  # secrets never logged


def test_an_existing_incident_category_is_kept(app: FastAPI, client: TestClient, world: World) -> None:
    recording = open_recording(client, world)
    flagged = client.post(wire.incident_path(recording), json={"category": "violence"}, headers=world.device.auth)
    assert flagged.status_code == 200
    configure(client, world, incident_alerts=False)
    raise_help(client, world, recording_id=recording)
    with services_of(app).sessions() as session:
        stored = session.get(Recording, recording)
        assert stored is not None and stored.incident_category == "violence"


def test_acknowledgment_reaches_the_device_and_only_site_officers_may_give_it(
    app: FastAPI, client: TestClient, world: World
) -> None:
    alert = raise_help(client, world)
    url, ack = wire.alert_path(alert["id"]), wire.alert_ack_path(alert["id"])
    body = {"message": "Sato is coming"}
    # Another site's officer: as if it did not exist, for reading and for answering.
    for method, path in (("GET", url), ("POST", ack)):
        reply = client.request(method, path, json=body, headers=bearer(world.other_officer))
        assert reply.status_code == 404 and reply.json()["detail"] == "no such alert"
    for token in (world.admin, world.auditor):  # administrators and auditors never answer alerts
        assert client.post(ack, json=body, headers=bearer(token)).status_code == 403
    assert client.post(ack, json=body, headers=world.device.auth).status_code == 403
    # Another device cannot read it either.
    reply = client.get(url, headers=world.other_device.auth)
    assert reply.status_code == 404 and reply.json()["detail"] == "no such alert"
    assert client.get(url, headers=world.device.auth).json()["state"] == "open"

    answered = client.post(ack, json=body, headers=bearer(world.officer))
    assert answered.status_code == 200, answered.text
    shown = client.get(url, headers=world.device.auth).json()
    assert (shown["state"], shown["message"], shown["acknowledged_by"]) == ("acknowledged", "Sato is coming", "olivia")
    assert shown["acknowledged_at"] is not None
    again = client.post(ack, json={"message": "me too"}, headers=bearer(world.second_officer))
    assert again.status_code == 409 and "olivia" in again.json()["detail"]
    [entry] = log(app, "api:alert:ack")
    assert entry.target == f"alert:{alert['id']}" and entry.detail["message"] == "Sato is coming"
    denied = [e for e in log(app, "api:access:denied") if "alert" in e.detail.get("reason", "")]
    assert len(denied) == 3  # the other site's officer twice, the other device once
    listed = client.get(wire.ALERTS, params={"state": "acknowledged"}, headers=bearer(world.officer)).json()
    assert [a["id"] for a in listed] == [alert["id"]]
    assert client.get(wire.ALERTS, headers=bearer(world.other_officer)).json() == []


def test_no_acknowledgment_escalates_to_tier_two(
    app: FastAPI, client: TestClient, world: World, smtp: SmtpServer
) -> None:
    add_contact(client, world, 1, email=BOSS)
    add_contact(client, world, 2, email=DEPUTY)
    configure(client, world, escalate_after_seconds=2)
    alert = raise_help(client, world)
    wait_for(lambda: smtp.to(BOSS))
    assert smtp.to(DEPUTY) == []  # not before the timeout
    [second] = wait_for(lambda: smtp.to(DEPUTY), timeout=10)
    assert "escalated" in second.message["Subject"]
    shown = client.get(wire.alert_path(alert["id"]), headers=world.device.auth).json()
    assert (shown["state"], shown["tier"]) == ("escalated", 2) and shown["escalated_at"] is not None
    [entry] = log(app, "alerts:alert:escalate")
    assert entry.detail["tier"] == 2 and entry.target == f"alert:{alert['id']}"
    # Acknowledged now: no further tier, no further e-mail.
    assert client.post(
        wire.alert_ack_path(alert["id"]), json={"message": "on my way"}, headers=bearer(world.officer)
    ).is_success
    time.sleep(1.5)
    assert len(smtp.inbox) == 2


def test_acknowledged_in_time_does_not_escalate(client: TestClient, world: World, smtp: SmtpServer) -> None:
    add_contact(client, world, 1, email=BOSS)
    add_contact(client, world, 2, email=DEPUTY)
    configure(client, world, escalate_after_seconds=1)
    alert = raise_help(client, world)
    client.post(wire.alert_ack_path(alert["id"]), json={"message": "coming"}, headers=bearer(world.officer))
    time.sleep(2)
    assert smtp.to(DEPUTY) == []


def test_failing_webhook_is_retried_with_backoff(
    app: FastAPI, client: TestClient, world: World, hook: WebhookReceiver
) -> None:
    hook.statuses = [500]
    hook.secret = add_contact(client, world, 1, webhook=hook.url)["secret"]
    raise_help(client, world)
    first, second = wait_for(lambda: hook.received[:2] if len(hook.received) >= 2 else None)
    assert first.valid and second.valid and first.body == second.body  # the same notification, signed again
    assert first.headers["X-Countersign-Delivery"] == second.headers["X-Countersign-Delivery"]
    assert second.at - first.at >= 0.45  # COUNTERSIGN_ALERTS_RETRY_BASE_SECONDS=0.5
    time.sleep(1.2)
    assert len(hook.received) == 2  # delivered: not sent again
    with services_of(app).sessions() as session:
        [delivery] = session.scalars(select(AlertDelivery)).all()
        assert (delivery.state, delivery.attempts) == ("delivered", 2) and "500" in (delivery.last_error or "")
    [sent] = log(app, "alerts:delivery:sent")
    assert sent.detail["attempt"] == 2


@pytest.mark.parametrize(
    "url",
    ["file:///etc/passwd", "javascript:alert(1)", "gopher://127.0.0.1:25/", "ftp://example.org/x", "http://", "hook"],
)
def test_hostile_webhook_urls_are_refused(client: TestClient, world: World, url: str) -> None:
    reply = client.post(
        wire.ALERT_CONTACTS.format(site_id="north"), json={"tier": 1, "webhook": url}, headers=bearer(world.admin)
    )
    assert reply.status_code == 422, reply.text
    shown = client.get(wire.SITE_ALERTING.format(site_id="north"), headers=bearer(world.admin)).json()
    assert shown["contacts"] == []


def test_contact_needs_exactly_one_target_and_a_known_site(client: TestClient, world: World) -> None:
    path = wire.ALERT_CONTACTS.format(site_id="north")
    both = {"tier": 1, "email": BOSS, "webhook": "https://example.org/h"}
    assert client.post(path, json=both, headers=bearer(world.admin)).status_code == 422
    assert client.post(path, json={"tier": 1}, headers=bearer(world.admin)).status_code == 422
    nowhere = wire.ALERT_CONTACTS.format(site_id="atlantis")
    assert client.post(nowhere, json={"tier": 1, "email": BOSS}, headers=bearer(world.admin)).status_code == 404
    created = add_contact(client, world, 1, webhook="https://example.org/h")
    shown = client.get(wire.SITE_ALERTING.format(site_id="north"), headers=bearer(world.admin))
    assert created["secret"] not in shown.text and "secret" not in shown.text  # shown once, at creation
    removed = client.delete(
        wire.ALERT_CONTACT.format(site_id="north", contact_id=created["id"]), headers=bearer(world.admin)
    )
    assert removed.status_code == 200 and removed.json()["contacts"] == []


def test_a_device_name_cannot_inject_mail_headers(
    app: FastAPI, client: TestClient, world: World, smtp: SmtpServer
) -> None:
    # Names are identifiers at the API; this one is forced into the database, as a hostile import might.
    with services_of(app).sessions() as session, session.begin():
        session.execute(
            update(Device).where(Device.id == world.device.id).values(name="c1\r\nBcc: evil@attacker.example\r\n")
        )
    add_contact(client, world, 1, email=BOSS)
    raise_help(client, world)
    [mail] = wait_for(lambda: smtp.inbox)
    assert mail.rcpt_tos == [BOSS]
    assert mail.message["Bcc"] is None and "evil@attacker.example" not in mail.message.get("To", "")
    subject = mail.message["Subject"]
    assert "\n" not in subject and "\r" not in subject and "\\x0d\\x0a" in subject  # shown, escaped


def test_incident_flag_raises_an_alert_when_the_site_says_so(
    app: FastAPI, client: TestClient, world: World, smtp: SmtpServer
) -> None:
    add_contact(client, world, 1, email=BOSS)
    recording = open_recording(client, world)
    flagged = client.post(wire.incident_path(recording), json={"category": "verbal-abuse"}, headers=world.device.auth)
    assert flagged.status_code == 200
    [alert] = client.get(wire.ALERTS, headers=bearer(world.officer)).json()
    assert (alert["kind"], alert["recording_id"], alert["category"]) == ("incident", recording, "verbal-abuse")
    wait_for(lambda: smtp.to(BOSS))
    assert "Incident" in smtp.inbox[0].message["Subject"]
    # Re-categorised while the alert waits: no second alert.
    client.post(wire.incident_path(recording), json={"category": "threats"}, headers=world.device.auth)
    assert len(client.get(wire.ALERTS, headers=bearer(world.officer)).json()) == 1
    # Off: flags raise nothing.
    configure(client, world, incident_alerts=False)
    other = open_recording(client, world)
    client.post(wire.incident_path(other), json={"category": "threats"}, headers=world.device.auth)
    assert len(client.get(wire.ALERTS, headers=bearer(world.officer)).json()) == 1


def test_pressing_twice_is_one_alert(client: TestClient, world: World) -> None:
    first = raise_help(client, world)
    again = client.post(wire.ALERTS, json={"kind": "help"}, headers=world.device.auth)
    assert again.status_code == 200 and again.json()["id"] == first["id"]


def test_a_device_cannot_raise_for_another_devices_recording(client: TestClient, world: World) -> None:
    recording = open_recording(client, world)
    reply = client.post(wire.ALERTS, json={"kind": "help", "recording_id": recording}, headers=world.other_device.auth)
    assert reply.status_code == 404


def test_device_settings_default_and_site_categories(client: TestClient, world: World) -> None:
    shown = client.get(wire.DEVICE_SETTINGS, headers=world.device.auth).json()
    assert shown["site"] == "north" and shown["incident_alerts"] is True and shown["escalate_after_seconds"] == 120
    assert [c["code"] for c in shown["incident_categories"]][:3] == ["verbal-abuse", "threats", "violence"]
    assert all(c["ja"] and c["en"] for c in shown["incident_categories"])
    own = [{"code": "kasuhara", "ja": "カスハラ", "en": "Customer harassment"}]
    configure(client, world, incident_categories=own, escalate_after_seconds=300, opening_hours="mon-fri 08:30-17:15")
    shown = client.get(wire.DEVICE_SETTINGS, headers=world.device.auth).json()
    assert shown["incident_categories"] == own and shown["escalate_after_seconds"] == 300
    bad = {"opening_hours": "weekdays 9-5"}
    reply = client.put(wire.SITE_ALERTING.format(site_id="north"), json=bad, headers=bearer(world.admin))
    assert reply.status_code == 422 and "opening hours" in reply.text
    twice = {"incident_categories": own * 2}
    assert (
        client.put(wire.SITE_ALERTING.format(site_id="north"), json=twice, headers=bearer(world.admin)).status_code
        == 422
    )


def test_heartbeat_reports_skew_and_notifies_once(
    app: FastAPI, client: TestClient, world: World, smtp: SmtpServer
) -> None:
    add_contact(client, world, 1, email=BOSS)
    ahead = datetime.now(UTC) + timedelta(hours=1)
    body = {"clock": ahead.isoformat(), "spool_used_bytes": 10, "spool_max_bytes": 100, "unsent_segments": 0}
    reply = client.post(wire.HEARTBEAT, json=body, headers=world.device.auth)
    assert reply.status_code == 200, reply.text
    assert 3590 < reply.json()["skew_seconds"] < 3610 and reply.json()["server_time"]
    client.post(wire.HEARTBEAT, json=body, headers=world.device.auth)  # still off: no second notice
    full = {**body, "clock": datetime.now(UTC).isoformat(), "spool_used_bytes": 95, "unsent_segments": 40}
    client.post(wire.HEARTBEAT, json=full, headers=world.device.auth)
    wait_for(lambda: len(smtp.inbox) >= 2)
    time.sleep(0.5)
    subjects = sorted(m.message["Subject"] for m in smtp.inbox)
    assert len(subjects) == 2 and "clock_skew" in subjects[0] and "spool_filling" in subjects[1]
    assert [e.detail["condition"] for e in log(app, "alerts:device:health")] == ["clock_skew", "spool_filling"]
    naive = {**body, "clock": "2026-01-01T00:00:00"}
    assert client.post(wire.HEARTBEAT, json=naive, headers=world.device.auth).status_code == 422


def test_silent_device_during_opening_hours(app: FastAPI, client: TestClient, world: World, smtp: SmtpServer) -> None:
    add_contact(client, world, 1, email=BOSS)
    configure(client, world, opening_hours="mon-sun 00:00-23:59", timezone="UTC")
    body = {"clock": datetime.now(UTC).isoformat(), "spool_used_bytes": 0, "spool_max_bytes": 100, "unsent_segments": 0}
    client.post(wire.HEARTBEAT, json=body, headers=world.device.auth)
    with services_of(app).sessions() as session, session.begin():
        session.execute(update(DeviceHealth).values(last_seen_at=datetime.now(UTC) - timedelta(hours=2)))
    [mail] = wait_for(lambda: smtp.inbox)
    assert "silent" in mail.message["Subject"]
    time.sleep(0.5)
    assert len(smtp.inbox) == 1  # once per silence


def test_officer_stream_shows_alerts_of_their_sites(client: TestClient, world: World) -> None:
    alert = raise_help(client, world)
    with client.stream("GET", wire.ALERT_STREAM, params={"timeout": "0"}, headers=bearer(world.officer)) as reply:
        assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/event-stream")
        text = "".join(reply.iter_text())
    [data] = [line.removeprefix("data: ") for line in text.splitlines() if line.startswith("data: ")]
    assert json.loads(data)["id"] == alert["id"] and "event: alert" in text
    with client.stream("GET", wire.ALERT_STREAM, params={"timeout": "0"}, headers=bearer(world.other_officer)) as reply:
        assert "data:" not in "".join(reply.iter_text())


def test_two_workers_deliver_each_notification_once(
    app: FastAPI, client: TestClient, world: World, smtp: SmtpServer
) -> None:
    """Several service processes share one outbox: two workers draining it at once send everything once."""
    services = services_of(app)
    worker = app.state.alert_worker
    worker.stop()  # this test's own two workers do the work
    app.state.alert_worker = None
    for n in range(3):
        add_contact(client, world, 1, email=f"sup{n}@north.example")
    for _ in range(6):
        client.post(
            wire.ALERTS, json={"kind": "help", "recording_id": open_recording(client, world)}, headers=world.device.auth
        )
    assert smtp.inbox == []
    config = AlertSettings()
    workers = [Worker(services.settings, services.keys.signing_key, config) for _ in range(2)]
    threads = [threading.Thread(target=w.drain) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for w in workers:
        w.stop()
    wait_for(lambda: len(smtp.inbox) >= 18)
    time.sleep(0.3)
    ids = [m.message["Message-ID"] for m in smtp.inbox]
    assert len(ids) == 18 and len(set(ids)) == 18
    assert len(log(app, "alerts:delivery:sent")) == 18


def test_integrity_failure_on_read_notifies_the_site_once(
    app: FastAPI, client: TestClient, world: World, smtp: SmtpServer
) -> None:
    add_contact(client, world, 1, email=BOSS)
    rec = world.device.new_recording()
    world.device.add_segments(rec, 2)
    assert client.post(wire.RECORDINGS, json=rec.create_body(), headers=world.device.auth).status_code == 201
    for seg in rec.segments:
        put = client.put(
            wire.segment_path(rec.id, seg.index), content=seg.envelope, headers=world.device.segment_headers(seg)
        )
        assert put.status_code == 201, put.text
    store = services_of(app).store
    key = segment_key(str(rec.id), 1)
    store.put(key, store.get(key)[:-1])  # a byte gone from the stored object
    read = {"purpose": "reviewing the complaint of 2 December"}
    for _ in range(2):
        reply = client.post(f"/v1/evidence/{rec.id}/audio", json=read, headers=bearer(world.officer))
        assert reply.status_code == 409
    [mail] = wait_for(lambda: smtp.inbox)
    assert "integrity" in mail.message["Subject"] and str(rec.id) in mail.message.get_content()
    time.sleep(0.5)
    assert len(smtp.inbox) == 1  # once per recording: it will not heal
    [entry] = log(app, "alerts:device:health")
    assert entry.detail["condition"] == "integrity" and entry.detail["recording"] == str(rec.id)


def test_a_delivery_that_keeps_failing_is_given_up_and_logged(
    app: FastAPI, client: TestClient, world: World, hook: WebhookReceiver
) -> None:
    app.state.alert_worker.stop()  # a worker of this test's own, with a short retry budget
    app.state.alert_worker = None
    hook.statuses = [503] * 10
    hook.secret = add_contact(client, world, 1, webhook=hook.url)["secret"]
    alert = raise_help(client, world)
    services = services_of(app)
    config = AlertSettings(alerts_max_attempts=3, alerts_retry_base_seconds=0.05)
    worker = Worker(services.settings, services.keys.signing_key, config)
    try:
        wait_for(lambda: worker.run_once() == 0 and len(hook.received) == 3, timeout=10)
    finally:
        worker.stop()
    with services.sessions() as session:
        [delivery] = session.scalars(select(AlertDelivery)).all()
        assert (delivery.state, delivery.attempts) == ("failed", 3) and "503" in (delivery.last_error or "")
    [entry] = log(app, "alerts:delivery:failed")
    assert entry.outcome == "failed" and entry.target == f"alert:{alert['id']}" and entry.detail["attempts"] == 3
