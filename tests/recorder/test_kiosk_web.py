"""The kiosk's HTTP guards: foreign Host, cross-origin POST, pairing on a LAN address, headers."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import httpx
import pytest

from consent.catalogue import builtin_notices
from recorder.home import DeviceHome
from recorder.kiosk.agent import Agent, AgentConfig
from recorder.kiosk.web import PAIR_COOKIE, KioskServer, session_token

SECRET = "a-pairing-secret-for-tests"


@pytest.fixture
def agent(home: DeviceHome) -> Iterator[Agent]:
    (home.root / "notices.json").write_text(json.dumps([n.to_dict() for n in builtin_notices()]))
    agent = Agent(AgentConfig(home=home.root), report=lambda _m: None)
    yield agent
    agent.client.close()


def serving(agent: Agent, host: str, secret: str | None) -> KioskServer:
    server = KioskServer(agent, host, 0, secret)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    return server


@pytest.fixture
def loopback(agent: Agent) -> Iterator[tuple[KioskServer, str]]:
    server = serving(agent, "127.0.0.1", None)
    yield server, f"http://127.0.0.1:{server.port}"
    server.shutdown()
    server.server_close()


def test_the_page_and_its_assets_are_served_with_security_headers(loopback: tuple[KioskServer, str]) -> None:
    _, url = loopback
    page = httpx.get(url + "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["content-security-policy"].startswith("default-src 'self'")
    assert page.headers["x-content-type-options"] == "nosniff" and page.headers["x-frame-options"] == "DENY"
    assert "http" not in page.text.replace("http-equiv", "")  # nothing from another origin
    assert httpx.get(url + "/kiosk.js").headers["content-type"].startswith("text/javascript")
    assert httpx.get(url + "/kiosk.css").headers["content-type"].startswith("text/css")
    for path in ("/../agent.py", "/static/../web.py", "/kiosk.py", "/%2e%2e/web.py"):
        assert httpx.get(url + path).status_code == 404, path
    assert httpx.get(url + "/api/state").json()["state"] == "idle"


def test_a_foreign_host_header_is_refused(loopback: tuple[KioskServer, str]) -> None:
    server, url = loopback
    # A DNS-rebinding page: the browser connects to 127.0.0.1 but names the attacker's host.
    for host in (f"evil.example:{server.port}", "127.0.0.1", f"127.0.0.1:{server.port + 1}", ""):
        assert httpx.get(url + "/api/state", headers={"Host": host}).status_code == 403, host
    assert httpx.get(url + "/api/state", headers={"Host": f"localhost:{server.port}"}).status_code == 200


def test_a_post_without_the_agents_origin_is_refused(loopback: tuple[KioskServer, str]) -> None:
    server, url = loopback
    for headers in ({}, {"Origin": "http://evil.example"}, {"Origin": "null"},
                    {"Origin": f"http://127.0.0.1:{server.port + 1}"}):  # fmt: skip
        reply = httpx.post(url + "/api/help", json={}, headers=headers)
        assert reply.status_code == 403, headers
    assert server.agent.alert is None  # nothing happened
    own = {"Origin": url}
    # A cross-site form can only send text/plain or form bodies: refused even with a forged Origin.
    assert (
        httpx.post(url + "/api/recheck", content="x=1", headers={**own, "Content-Type": "text/plain"}).status_code
        == 415
    )
    assert httpx.get(url + "/api/help").status_code == 404  # state changes are POST only
    assert httpx.post(url + "/api/recheck", json={}, headers=own).status_code == 200
    refused = httpx.post(url + "/api/stop", json={}, headers=own)
    assert refused.status_code == 409 and refused.json()["en"] == "Not recording."


def test_a_lan_address_needs_the_pairing_secret(agent: Agent) -> None:
    with pytest.raises(ValueError):
        KioskServer(agent, "0.0.0.0", 0, None)
    server = serving(agent, "0.0.0.0", SECRET)
    url = f"http://127.0.0.1:{server.port}"
    try:
        assert httpx.get(url + "/").status_code == 403
        assert httpx.get(url + "/api/state").status_code == 403
        assert httpx.post(url + "/api/recheck", json={}, headers={"Origin": url}).status_code == 403
        assert httpx.get(url + "/pair?code=wrong").status_code == 403
        assert httpx.get(url + "/", cookies={PAIR_COOKIE: "guess"}).status_code == 403
        paired = httpx.get(url + "/pair?code=" + SECRET)
        assert paired.status_code == 303 and paired.headers["location"] == "/"
        cookie = paired.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and SECRET not in cookie
        with httpx.Client(base_url=url, cookies={PAIR_COOKIE: session_token(SECRET)}) as screen:
            assert screen.get("/").status_code == 200
            assert screen.post("/api/recheck", json={}, headers={"Origin": url}).status_code == 200
            # Bound to every address, a tablet names the LAN address it reached; a DNS name is still refused.
            lan = {"Host": f"192.0.2.7:{server.port}"}
            assert screen.get("/api/state", headers=lan).status_code == 200
            assert screen.get("/api/state", headers={"Host": f"kiosk.evil.example:{server.port}"}).status_code == 403
            assert screen.get("/api/state", headers={"Host": "192.0.2.7:1"}).status_code == 403
    finally:
        server.shutdown()
        server.server_close()


def test_a_generated_pairing_code_works_once(agent: Agent) -> None:
    announced: list[str] = []
    server = KioskServer(agent, "0.0.0.0", 0, SECRET, one_time=True, announce=announced.append)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    url = f"http://127.0.0.1:{server.port}"
    try:
        assert httpx.get(url + "/pair?code=" + SECRET).status_code == 303
        assert httpx.get(url + "/pair?code=" + SECRET).status_code == 403  # used up: a copied URL pairs nothing
        (line,) = announced
        code = line.rsplit("code=", 1)[1]
        assert code != SECRET and httpx.get(url + "/pair?code=" + code).status_code == 303
        # The first screen's cookie still works: pairing another screen does not unpair it.
        assert httpx.get(url + "/", cookies={PAIR_COOKIE: session_token(SECRET)}).status_code == 200
    finally:
        server.shutdown()
        server.server_close()
