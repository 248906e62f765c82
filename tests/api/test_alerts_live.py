"""Help alerts with the service as real processes: killed and restarted, and several at once on one database.

E-mail goes to an aiosmtpd server and webhooks to an HTTP receiver the test starts; the counts
are what those receivers saw, so "exactly once" is measured at the far end of the transport.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from api.bootstrap import approve_user
from api.core.settings import Settings
from evidence import wire
from tests.conftest import REPO, bearer, cli_env, countersign, enrol_sim_device, free_port
from tests.support.alert_receivers import SmtpServer, WebhookReceiver, wait_for
from tests.support.factories import SimDevice

BOSS = "boss@tokyo.example"


class Service:
    """`countersign server run` with alerting settings in its environment; SIGKILL-able."""

    def __init__(self, data: Path, port: int, **env: str) -> None:
        self.data, self.port, self.env = data, port, env
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, **env: str) -> Service:
        log = open(self.data.parent / f"server-{self.port}.log", "ab")  # noqa: SIM115 (the child keeps it)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "countersign", "server", "run", "--data", str(self.data), "--port", str(self.port)],
            env=cli_env(**{**self.env, **env}),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (self.data.parent / f"server-{self.port}.log").read_text()
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError("the service did not start")

    def kill(self) -> None:
        """SIGKILL: no shutdown handler runs, as in a power cut or an OOM kill."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=15)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=15)
        self.proc = None


@dataclass
class Site:
    data: Path
    smtp: SmtpServer
    hook: WebhookReceiver
    admin: str
    officer: str
    env: dict[str, str]
    services: list[Service]

    def service(self, **env: str) -> Service:
        service = Service(self.data, free_port(), **self.env, **env)
        self.services.append(service)
        return service


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    data = tmp_path / "server"
    init = countersign("server", "init", "--data", str(data))
    admin = next(line.split()[-1] for line in init.stdout.splitlines() if line.startswith("admin token"))
    smtp, hook = SmtpServer(free_port()).start(), WebhookReceiver(free_port()).start()
    env = {
        "COUNTERSIGN_SMTP_HOST": "127.0.0.1",
        "COUNTERSIGN_SMTP_PORT": str(smtp.port),
        "COUNTERSIGN_ALERTS_POLL_SECONDS": "0.1",
    }
    state = Site(data, smtp, hook, admin, "", env, [])
    try:
        setup = state.service(COUNTERSIGN_ALERTS_WORKER="false").start()
        api = httpx.Client(base_url=setup.url, headers=bearer(admin))
        assert api.post("/v1/sites", json={"id": "tokyo"}).status_code == 201
        state.officer = api.post("/v1/users", json={"name": "olivia", "role": "officer", "sites": ["tokyo"]}).json()[
            "token"
        ]
        approve_user(Settings(data_dir=data, env="development"), "olivia")
        contacts = wire.ALERT_CONTACTS.format(site_id="tokyo")
        assert api.post(contacts, json={"tier": 1, "email": BOSS}).status_code == 201
        hook.secret = api.post(contacts, json={"tier": 1, "webhook": hook.url}).json()["secret"]
        api.close()
        setup.stop()
        yield state
    finally:
        for service in state.services:
            service.kill()
        smtp.stop()
        hook.stop()


def _device(service: Service, admin: str) -> SimDevice:
    with httpx.Client(base_url=service.url) as client:
        return enrol_sim_device(client, admin, f"counter-{free_port()}", "tokyo")  # type: ignore[arg-type]


def _raise(service: Service, device: SimDevice) -> dict[str, str]:
    rec = device.new_recording()
    opened = httpx.post(f"{service.url}{wire.RECORDINGS}", json=rec.create_body(), headers=device.auth)
    assert opened.status_code == 201, opened.text
    reply = httpx.post(
        f"{service.url}{wire.ALERTS}", json={"kind": "help", "recording_id": str(rec.id)}, headers=device.auth
    )
    assert reply.status_code == 201, reply.text
    alert: dict[str, str] = reply.json()
    return alert


def test_killed_before_delivery_restarted_sends_each_notification_exactly_once(site: Site) -> None:
    # The alert commits, then the process dies before any worker has sent anything.
    first = site.service(COUNTERSIGN_ALERTS_WORKER="false").start()
    device = _device(first, site.admin)
    alert = _raise(first, device)
    first.kill()
    assert site.smtp.inbox == [] and site.hook.received == []

    again = site.service().start()  # a worker this time, on the same database
    wait_for(lambda: site.smtp.inbox and site.hook.received)
    time.sleep(1.5)  # long enough for any second send to arrive
    assert len(site.smtp.inbox) == 1 and len(site.hook.received) == 1
    assert site.hook.received[0].valid
    assert json.loads(site.hook.received[0].body)["alert"]["id"] == alert["id"]
    # Killed again and restarted: what was delivered stays delivered.
    again.kill()
    site.service().start()
    time.sleep(1.5)
    assert len(site.smtp.inbox) == 1 and len(site.hook.received) == 1


def test_deliver_once_drains_the_outbox_from_the_data_directory(site: Site) -> None:
    service = site.service(COUNTERSIGN_ALERTS_WORKER="false").start()
    _raise(service, _device(service, site.admin))
    service.kill()
    drained = countersign("server", "deliver", "--data", str(site.data), "--once", env=cli_env(**site.env))
    assert drained.stdout.startswith("2 notification")
    again = countersign("server", "deliver", "--data", str(site.data), "--once", env=cli_env(**site.env))
    assert again.stdout.startswith("0 notification")
    assert len(site.smtp.inbox) == 1 and len(site.hook.received) == 1 and site.hook.received[0].valid


def test_several_service_processes_send_each_notification_once(site: Site) -> None:
    services = [site.service().start() for _ in range(3)]
    device = _device(services[0], site.admin)
    alerts = [_raise(services[n % 3], device) for n in range(6)]
    wait_for(lambda: len(site.smtp.inbox) >= 6 and len(site.hook.received) >= 6)
    time.sleep(1.5)
    ids = {m.message["Message-ID"] for m in site.smtp.inbox}
    assert len(site.smtp.inbox) == 6 and len(ids) == 6
    hooked = [json.loads(h.body)["alert"]["id"] for h in site.hook.received]
    assert sorted(hooked) == sorted(a["id"] for a in alerts) and all(h.valid for h in site.hook.received)
    # The officer answers through one process; the device sees it through another.
    ack = httpx.post(
        f"{services[1].url}{wire.alert_ack_path(alerts[0]['id'])}",
        json={"message": "Sato is coming"},
        headers=bearer(site.officer),
    )
    assert ack.status_code == 200, ack.text
    shown = httpx.get(f"{services[2].url}{wire.alert_path(alerts[0]['id'])}", headers=device.auth).json()
    assert (shown["state"], shown["acknowledged_by"], shown["message"]) == ("acknowledged", "olivia", "Sato is coming")


def test_killed_mid_send_resends_after_the_lease_with_the_same_delivery_id(site: Site) -> None:
    """The one case where a receiver sees a notification twice: it is told which one by the delivery id."""
    site.hook.delays = [4.0]  # the first POST is held until after the sender is dead
    first = site.service(COUNTERSIGN_ALERTS_LEASE_SECONDS="2").start()
    _raise(first, _device(first, site.admin))
    wait_for(lambda: site.hook.received and site.smtp.inbox)
    time.sleep(0.5)  # the e-mail's delivery is committed by now; the webhook is still held
    first.kill()  # mid-send: the receiver has the body, the outbox row is still claimed
    started = time.monotonic()
    site.service(COUNTERSIGN_ALERTS_LEASE_SECONDS="2").start()
    wait_for(lambda: len(site.hook.received) >= 2)
    time.sleep(1.0)
    one, two = site.hook.received
    assert one.valid and two.valid and len(site.hook.received) == 2
    assert one.headers["X-Countersign-Delivery"] == two.headers["X-Countersign-Delivery"]
    assert json.loads(one.body)["delivery_id"] == json.loads(two.body)["delivery_id"]
    assert two.at - started < 10  # after the lease, not never
    assert len(site.smtp.inbox) == 1  # the e-mail had been recorded as sent: not again
