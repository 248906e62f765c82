"""The kiosk page and its JSON API, on the standard library's ThreadingHTTPServer.

No web framework: the counter PC's install (the recorder extra) has none. Every asset is
a file in recorder/kiosk/static served from here; the Content-Security-Policy
(default-src 'self') keeps the page from loading anything else.

Who may talk to it:
* Host must name this agent (127.0.0.1 / localhost / [::1] / the --host address, with the
  port): a foreign Host is a DNS-rebinding page in the counter's browser, refused. Bound to
  every address (--host 0.0.0.0), any IP literal with the port is accepted, never a DNS name.
* State-changing requests are POST with a JSON body and an Origin equal to this agent's
  own: a cross-site form or fetch from another local page is refused.
* Bound to a LAN address, the page must also present the pairing cookie, which only the
  pairing URL (/pair?code=CODE) sets. A code the agent generated (printed at start) works
  once; the next one is printed when it is used. A --pairing-secret-file secret stays valid
  (the operator keeps it), and its cookies survive a restart of the agent.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import secrets
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from recorder.kiosk.agent import Agent, Refused

STATIC = Path(__file__).parent / "static"
ASSETS = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/kiosk.css": ("kiosk.css", "text/css; charset=utf-8"),
    "/kiosk.js": ("kiosk.js", "text/javascript; charset=utf-8"),
}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
PAIR_COOKIE = "countersign_kiosk"
MAX_BODY = 4096


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def session_token(secret: str) -> str:
    """What the pairing cookie holds: derived from the secret, so the secret itself never sits in a cookie."""
    return hmac.new(secret.encode(), b"countersign-kiosk-session", hashlib.sha256).hexdigest()


class KioskServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(
        self,
        agent: Agent,
        host: str,
        port: int,
        pairing_secret: str | None,
        *,
        one_time: bool = False,
        announce: Callable[[str], None] | None = None,
    ) -> None:
        if not is_loopback(host) and not pairing_secret:
            raise ValueError("a LAN address needs a pairing secret")
        self.agent = agent
        self.pairing_secret = pairing_secret  # None: loopback, no pairing
        self.session = session_token(pairing_secret) if pairing_secret else ""
        self._code = pairing_secret
        self._one_time = one_time
        self._announce = announce or (lambda _message: None)
        self._code_lock = threading.Lock()
        super().__init__((host, port), KioskHandler)
        bound = self.server_address[1]
        named = f"[{host}]" if ":" in host else host
        self.allowed_hosts = {f"{name}:{bound}" for name in ("127.0.0.1", "localhost", "[::1]", named)}
        self.port = bound
        # Bound to every address (0.0.0.0, ::), screens reach it by whichever address they route to;
        # an IP literal cannot be rebound by DNS, so those are accepted (a DNS name still is not).
        self.any_address = host in ("0.0.0.0", "::")

    def redeem(self, offered: str) -> bool:
        """Is this the pairing code? A generated one is used up, and the next one announced."""
        with self._code_lock:
            if self._code is None or not hmac.compare_digest(offered.encode(), self._code.encode()):
                return False
            if self._one_time:
                self._code = secrets.token_urlsafe(24)
                self._announce(f"screen paired; the next screen pairs with /pair?code={self._code}")
            return True

    def host_allowed(self, header: str) -> bool:
        header = header.lower()
        if header in self.allowed_hosts:
            return True
        if not self.any_address:
            return False
        name, _, port = header.rpartition(":")
        if port != str(self.port):
            return False
        try:
            ipaddress.ip_address(name.strip("[]"))
        except ValueError:
            return False
        return True


class KioskHandler(BaseHTTPRequestHandler):
    server: KioskServer
    protocol_version = "HTTP/1.1"
    server_version = "countersign-kiosk"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        return  # the page polls every second: access lines would drown the agent's own log

    # ------------------------------------------------------------------ guards

    def _host_ok(self) -> bool:
        return self.server.host_allowed(self.headers.get("Host", ""))

    def _paired(self) -> bool:
        if self.server.pairing_secret is None:
            return True
        cookie = SimpleCookie()
        try:
            cookie.load(self.headers.get("Cookie", ""))
        except Exception:  # a malformed cookie header is an unpaired request
            return False
        morsel = cookie.get(PAIR_COOKIE)
        return morsel is not None and hmac.compare_digest(morsel.value, self.server.session)

    def _same_origin(self) -> bool:
        origin = self.headers.get("Origin")
        return origin is not None and origin.lower() == f"http://{self.headers.get('Host', '').lower()}"

    # ------------------------------------------------------------------ replies

    def _send(self, status: int, body: bytes, content_type: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in {**SECURITY_HEADERS, **(extra or {})}.items():
            self.send_header(name, value)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, data: Any) -> None:
        self._send(status, json.dumps(data, ensure_ascii=False).encode(), "application/json; charset=utf-8")

    def _refuse(self, status: int, en: str, ja: str) -> None:
        self._json(status, {"en": en, "ja": ja})

    # ------------------------------------------------------------------ methods

    def do_GET(self) -> None:
        if not self._host_ok():
            return self._refuse(HTTPStatus.FORBIDDEN, "unknown Host", "不明なホストです")
        url = urlsplit(self.path)
        if url.path == "/pair":
            return self._pair(url.query)
        if not self._paired():
            return self._refuse(
                HTTPStatus.FORBIDDEN,
                "This screen is not paired: open the pairing URL the agent printed.",
                "この画面はペアリングされていません。エージェントが表示したURLを開いてください。",
            )
        if url.path == "/api/state":
            return self._json(HTTPStatus.OK, self.server.agent.snapshot())
        asset = ASSETS.get(url.path)
        if asset is None:
            return self._refuse(HTTPStatus.NOT_FOUND, "not found", "見つかりません")
        self._send(HTTPStatus.OK, (STATIC / asset[0]).read_bytes(), asset[1])

    do_HEAD = do_GET

    def _pair(self, query: str) -> None:
        offered = parse_qs(query).get("code", [""])[0]
        if self.server.pairing_secret is None:
            self._send(HTTPStatus.SEE_OTHER, b"", "text/plain", {"Location": "/"})
            return
        if not self.server.redeem(offered):
            return self._refuse(HTTPStatus.FORBIDDEN, "wrong or used pairing code", "コードが違うか使用済みです")
        cookie = f"{PAIR_COOKIE}={self.server.session}; Path=/; HttpOnly; SameSite=Strict; Max-Age=31536000"
        # Redirected, so the code does not stay in the address bar or the history.
        self._send(HTTPStatus.SEE_OTHER, b"", "text/plain", {"Location": "/", "Set-Cookie": cookie})

    def do_POST(self) -> None:
        if not self._host_ok():
            return self._refuse(HTTPStatus.FORBIDDEN, "unknown Host", "不明なホストです")
        if not self._same_origin():
            return self._refuse(HTTPStatus.FORBIDDEN, "cross-origin request refused", "他のページからの操作は拒否")
        if not self._paired():
            return self._refuse(HTTPStatus.FORBIDDEN, "this screen is not paired", "ペアリングされていません")
        if not self.headers.get("Content-Type", "").startswith("application/json"):
            return self._refuse(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "JSON only", "JSONのみ")
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            return self._refuse(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "too large", "大きすぎます")
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            return self._refuse(HTTPStatus.BAD_REQUEST, "not JSON", "JSONではありません")
        if not isinstance(body, dict):
            return self._refuse(HTTPStatus.BAD_REQUEST, "not an object", "形式が違います")
        agent = self.server.agent
        actions = {
            "/api/start": lambda: agent.begin(str(body.get("language", "ja"))),
            "/api/decide": lambda: agent.decide(str(body.get("outcome", ""))),
            "/api/cancel": agent.cancel,
            "/api/stop": agent.stop,
            "/api/done": agent.done,
            "/api/incident": lambda: agent.incident(str(body.get("category", ""))),
            "/api/help": agent.call_help,
            "/api/recheck": agent.recheck,
        }
        action = actions.get(urlsplit(self.path).path)
        if action is None:
            return self._refuse(HTTPStatus.NOT_FOUND, "not found", "見つかりません")
        try:
            action()
        except Refused as exc:
            return self._json(HTTPStatus.CONFLICT, {"en": exc.en, "ja": exc.ja})
        self._json(HTTPStatus.OK, agent.snapshot())
