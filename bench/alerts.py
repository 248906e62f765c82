"""Help-alert latency on loopback: the device's POST (the button) to the e-mail and to the webhook arriving.

A real service process (`countersign server run`, its delivery worker thread), a real SMTP server
(aiosmtpd) and a real webhook receiver that checks each signature, all on 127.0.0.1. Each round:
the device raises a help alert, the clock runs until the message is in the SMTP server's hands
and until the signed POST has been received; an officer then acknowledges it (so the next press
is a new alert). Reported: p50 / p95 / max over N rounds, and the POST's own answer time.

    .venv/bin/python -m bench.alerts                 # 50 rounds, SQLite
    .venv/bin/python -m bench.alerts --rounds 200 --database-url postgresql+psycopg://postgres@127.0.0.1/test

What bounds it: the worker is woken in-process by the commit of the alert (no poll wait), then
claims (one compare-and-set UPDATE per delivery), sends over SMTP and HTTP in parallel, and
records each delivery with its audit entry. The poll interval (COUNTERSIGN_ALERTS_POLL_SECONDS)
matters only for alerts raised through another process.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import httpx  # noqa: E402

from bench._meta import load_average, revision  # noqa: E402
from evidence import wire  # noqa: E402
from tests.support.alert_receivers import SmtpServer, WebhookReceiver, wait_for  # noqa: E402
from tests.support.world import bearer, enrol_sim_device  # noqa: E402


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def row(label: str, values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    return (
        f"{label:<22} p50 {statistics.median(ms):7.1f} ms   p95 {percentile(ms, 0.95):7.1f} ms   max {max(ms):7.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--database-url", default=None, help="PostgreSQL instead of SQLite in the data directory")
    args = parser.parse_args()

    smtp, hook = SmtpServer(free_port()).start(), WebhookReceiver(free_port()).start()
    with tempfile.TemporaryDirectory(prefix="countersign-alerts-") as tmp:
        data = Path(tmp) / "server"
        env = {k: v for k, v in os.environ.items() if not k.startswith("COUNTERSIGN_")}
        env.update(
            COUNTERSIGN_ENV="development",
            COUNTERSIGN_SMTP_HOST="127.0.0.1",
            COUNTERSIGN_SMTP_PORT=str(smtp.port),
            COUNTERSIGN_AUTH_FAILURES_PER_MINUTE="100000",
        )
        if args.database_url:
            env["COUNTERSIGN_DATABASE_URL"] = args.database_url
        countersign = [sys.executable, "-m", "countersign"]
        init = subprocess.run(
            [*countersign, "server", "init", "--data", str(data)],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        )
        admin = next(line.split()[-1] for line in init.stdout.splitlines() if line.startswith("admin token"))
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = subprocess.Popen(
            [*countersign, "server", "run", "--data", str(data), "--port", str(port)],
            env=env,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for(lambda: _healthy(url), timeout=30)
            api = httpx.Client(base_url=url, headers=bearer(admin))
            api.post("/v1/sites", json={"id": "bench"}).raise_for_status()
            officer = api.post("/v1/users", json={"name": "sato", "role": "officer", "sites": ["bench"]}).json()[
                "token"
            ]
            subprocess.run(
                [*countersign, "server", "approve-user", "--data", str(data), "sato"],
                env=env,
                cwd=REPO,
                capture_output=True,
                check=True,
            )
            contacts = wire.ALERT_CONTACTS.format(site_id="bench")
            api.post(contacts, json={"tier": 1, "email": "supervisor@bench.example"}).raise_for_status()
            hook.secret = api.post(contacts, json={"tier": 1, "webhook": hook.url}).json()["secret"]
            device = enrol_sim_device(api, admin, "counter-1", "bench")  # type: ignore[arg-type]
            http = httpx.Client(base_url=url)
            to_mail, to_hook, answer = [], [], []
            for _ in range(args.rounds):
                mails, hooks = len(smtp.inbox), len(hook.received)
                pressed = time.monotonic()
                reply = http.post(wire.ALERTS, json={"kind": "help"}, headers=device.auth)
                answer.append(time.monotonic() - pressed)
                reply.raise_for_status()

                def arrived(m: int = mails, h: int = hooks) -> bool:
                    return len(smtp.inbox) > m and len(hook.received) > h

                wait_for(arrived, step=0.001)
                to_mail.append(smtp.inbox[mails].at - pressed)
                to_hook.append(hook.received[hooks].at - pressed)
                assert hook.received[hooks].valid, "a webhook arrived with a bad signature"
                ack = {"message": "coming"}
                http.post(wire.alert_ack_path(reply.json()["id"]), json=ack, headers=bearer(officer)).raise_for_status()
        finally:
            server.terminate()
            server.wait(timeout=15)
            smtp.stop()
            hook.stop()
    backend = "PostgreSQL" if args.database_url else "SQLite"
    print(f"help alerts, {args.rounds} rounds, {backend}, {revision()}, load {load_average()}")
    print(row("POST /v1/alerts (201)", answer))
    print(row("button -> e-mail", to_mail))
    print(row("button -> webhook", to_hook))


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


if __name__ == "__main__":
    main()
