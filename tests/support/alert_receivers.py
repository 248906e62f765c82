"""Real receivers for help-alert notifications: an SMTP server (aiosmtpd) and a webhook endpoint (http.server).

Neither is a mock of our transport: the service's smtplib talks SMTP to aiosmtpd, and its httpx
POSTs to a real HTTP server that checks the HMAC signature the way docs/alerts.md tells receivers to.
"""

from __future__ import annotations

import email
import email.policy
import http.server
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller

from api.alerts.webhook import verify


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    at: float


class _Handler:
    def __init__(self, inbox: list[Received]) -> None:
        self.inbox = inbox

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.inbox.append(Received(envelope.mail_from, list(envelope.rcpt_tos), parsed, time.monotonic()))  # type: ignore[arg-type]
        return "250 OK"


class SmtpServer:
    """aiosmtpd on 127.0.0.1:port; `inbox` holds every message accepted."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.inbox: list[Received] = []
        self.controller = Controller(_Handler(self.inbox), hostname="127.0.0.1", port=port)

    def start(self) -> SmtpServer:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()

    def to(self, address: str) -> list[Received]:
        return [m for m in self.inbox if address in m.rcpt_tos]


@dataclass
class Hook:
    body: bytes
    headers: dict[str, str]
    valid: bool
    at: float


@dataclass
class WebhookReceiver:
    """An HTTP server that records each POST, checks its signature with `secret`, answers from `statuses`."""

    port: int
    secret: str = ""
    statuses: list[int] = field(default_factory=list)  # answered in turn; then 200
    received: list[Hook] = field(default_factory=list)
    delays: list[float] = field(default_factory=list)  # seconds to hold each request before answering, in turn

    def start(self) -> WebhookReceiver:
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = {k: v for k, v in self.headers.items()}
                receiver.received.append(Hook(body, headers, verify(receiver.secret, headers, body), time.monotonic()))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                time.sleep(receiver.delays.pop(0) if receiver.delays else 0)
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:  # the sender went away meanwhile (a test killed it)
                    pass

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def wait_for(what: Callable[[], Any], timeout: float = 15.0, step: float = 0.05) -> Any:
    """Poll until `what()` is truthy; its value, or AssertionError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = what()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout} s waiting for {getattr(what, '__name__', what)}")
