"""The console in a real browser (Debian's chromium through chromium-driver): sign in with TOTP, search,
open a recording, state a purpose, play it to the end, place a hold, try to delete it (refused),
release the hold, add a note, export a bundle that the bundle verifier accepts.

The app runs in uvicorn in a thread (the test's own service, with the World built through the
API). An ASGI wrapper notes when each audio request arrived, so the test can check that the
access-log entry with the purpose was written before the first audio byte was asked for. The
page runs under the console's CSP, so a blocked inline script or a CDN asset would show in the
browser's console errors, which must stay empty. This tests the pages, not the backend: it is
skipped on postgres-s3, as tests/e2e/test_kiosk_browser.py is.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyotp
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from nacl.public import PrivateKey
from sqlalchemy import select

from api.core.models import AccessLog
from evidence.audit_actions import Action
from tests.conftest import World, free_port
from tests.console.support import PASSWORD, Login, services_of
from tests.support.backends import POSTGRES_S3
from tests.support.browser import chromium, console_errors, wait_for_script
from tests.support.retention_support import upload
from tests.support.verifier import run_verify

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(POSTGRES_S3, reason="tests the console's pages, not the backend: run once, on sqlite-fs"),
]


class AudioRequests:
    """ASGI wrapper: the time and Range header of every console audio request, and its answer's status."""

    def __init__(self, app: FastAPI) -> None:
        self.app, self.seen = app, []  # type: ignore[var-annotated]

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].endswith("/audio"):
            entry = {"at": time.time(), "range": dict(scope["headers"]).get(b"range"), "status": None}
            self.seen.append(entry)

            async def noted(message: Any) -> None:
                if message["type"] == "http.response.start":
                    entry["status"] = message["status"]
                await send(message)

            await self.app(scope, receive, noted)
            return
        await self.app(scope, receive, send)


@pytest.fixture
def served(app: FastAPI, client: TestClient) -> Iterator[tuple[str, AudioRequests]]:
    wrapped = AudioRequests(app)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(wrapped, host="127.0.0.1", port=port, lifespan="off", log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 10
    while not server.started and time.time() < deadline:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", wrapped
    finally:
        server.should_exit = True
        thread.join(10)


def test_officer_signs_in_listens_and_holds(
    app: FastAPI,
    client: TestClient,
    world: World,
    logins: dict[str, Login],
    served: tuple[str, AudioRequests],
    tmp_path: Path,
) -> None:
    base, audio_requests = served
    rid = upload(client, world.device, segments=2)
    from selenium.webdriver.common.by import By

    with chromium(extra_args=("--autoplay-policy=no-user-gesture-required", "--mute-audio")) as driver:
        driver.get(f"{base}/console/search")  # not signed in: sent to the sign-in page
        assert driver.current_url == f"{base}/console/sign-in"
        driver.find_element(By.ID, "name").send_keys("olivia")
        driver.find_element(By.ID, "password").send_keys(PASSWORD)
        driver.find_element(By.ID, "code").send_keys(pyotp.TOTP(logins["officer"].secret).now())
        driver.find_element(By.ID, "sign-in").click()
        wait_for_script(driver, "return !!document.getElementById('to-search')")  # clicks do not wait for the next page
        driver.find_element(By.ID, "to-search").click()
        wait_for_script(driver, "return !!document.getElementById('count')")
        assert "1 recording" in driver.find_element(By.ID, "count").text
        driver.find_element(By.CSS_SELECTOR, "a.recording").click()
        wait_for_script(driver, "return !!document.getElementById('chain')")
        assert driver.current_url == f"{base}/console/recordings/{rid}"
        assert driver.find_element(By.ID, "chain").text.startswith("verified")

        driver.find_element(By.ID, "purpose").send_keys("complaint 2026-17: what was said at the counter")
        driver.find_element(By.ID, "listen").click()
        wait_for_script(driver, "return !!document.getElementById('player')")
        assert driver.current_url == f"{base}/console/recordings/{rid}/player"
        wait_for_script(driver, "return document.getElementById('player').readyState >= 1")
        duration = driver.execute_script("return document.getElementById('player').duration")
        assert 1.9 < duration < 2.1
        driver.execute_script("var a = document.getElementById('player'); a.currentTime = 1.0; a.play();")
        assert wait_for_script(driver, "return document.getElementById('player').ended") is True

        with services_of(app).sessions() as session:
            (read,) = session.scalars(select(AccessLog).where(AccessLog.action == Action.EVIDENCE_READ)).all()
        assert read.purpose == "complaint 2026-17: what was said at the counter"
        assert audio_requests.seen, "the audio element made no request"
        assert read.at.timestamp() < audio_requests.seen[0]["at"]  # logged before the first byte was even asked for
        assert any(r["range"] for r in audio_requests.seen) and all(
            r["status"] in (200, 206) for r in audio_requests.seen
        )
        # The waveform (under the same grant) finds the moment: a click at its middle seeks to half the
        # duration, and the playhead follows. The element seeks by range requests (206s), from the
        # server or from what it already buffered of them.
        assert wait_for_script(driver, "var w = document.getElementById('waveform'); return w.complete") is True
        assert driver.execute_script("return document.getElementById('waveform').naturalWidth") > 0  # it loaded
        driver.find_element(By.ID, "waveform").click()  # WebDriver clicks an element at its centre
        position = driver.execute_script("return document.getElementById('player').currentTime")
        assert abs(position - duration / 2) < 0.05
        playhead = driver.execute_script("return document.getElementById('playhead').style.left")
        assert abs(float(playhead.rstrip("%")) - 50) < 2.5
        assert any(r["status"] == 206 for r in audio_requests.seen)

        driver.get(f"{base}/console/recordings/{rid}")
        driver.find_element(By.ID, "case-ref").send_keys("CASE-<b>42</b>")
        driver.find_element(By.ID, "hold-reason").send_keys("litigation notice received")
        driver.find_element(By.ID, "place-hold").click()
        wait_for_script(driver, "return !!document.querySelector('td.case-ref')")
        assert driver.find_element(By.CSS_SELECTOR, "td.case-ref").text == "CASE-<b>42</b>"  # text, not markup
        driver.find_element(By.ID, "deletion-reason").send_keys("recorded by mistake, no incident")
        driver.find_element(By.ID, "deletion-confirm").click()
        driver.find_element(By.ID, "request-deletion").click()  # held: the API refuses, the page says why
        wait_for_script(driver, "return !!document.getElementById('refusal')")
        assert "legal hold" in driver.find_element(By.ID, "refusal").text
        (refused,) = console_errors(driver)  # the refusal's own 409, and nothing else (reading the log empties it)
        assert "/deletion" in refused and "409" in refused
        driver.get(f"{base}/console/recordings/{rid}")
        assert not driver.find_elements(By.ID, "deletion-requested")  # nothing was asked
        driver.find_element(By.CSS_SELECTOR, "input.release-reason").send_keys("case closed by the court")
        driver.find_element(By.CSS_SELECTOR, "button.release").click()
        wait_for_script(driver, "return !!document.getElementById('no-holds')")
        assert driver.find_element(By.ID, "no-holds").text == "Not held."

        note = "Called back.\n<script>document.title = 'ran'</script><img src=x onerror=alert(1)>"
        driver.find_element(By.ID, "note-text").send_keys(note)
        driver.find_element(By.ID, "add-note").click()
        wait_for_script(driver, "return !!document.querySelector('p.note-text')")
        assert driver.find_element(By.CSS_SELECTOR, "p.note-text").text == note  # text, line break kept, not markup
        assert driver.execute_script("return document.querySelectorAll('#notes script, #notes img').length") == 0
        assert driver.title != "ran"

        # The export downloads the zip; the recipient's key pair is what their `verify.py keygen` makes.
        downloads = tmp_path / "downloads"
        downloads.mkdir()
        driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
        recipient = PrivateKey.generate()
        driver.find_element(By.ID, "export-case-ref").send_keys("K-2026-001")
        driver.find_element(By.ID, "export-purpose").send_keys("handed to the police for case K-2026-001")
        driver.find_element(By.ID, "export-recipient").send_keys("Station 7")
        driver.find_element(By.ID, "export-key").send_keys(bytes(recipient.public_key).hex())
        driver.find_element(By.ID, "export").click()
        bundle = downloads / f"evidence-{rid}.zip"
        deadline = time.time() + 60
        while not (bundle.exists() and not list(downloads.glob("*.crdownload"))) and time.time() < deadline:
            time.sleep(0.2)
        assert bundle.exists(), sorted(p.name for p in downloads.iterdir())
        (tmp_path / "recipient.key").write_text(bytes(recipient).hex() + "\n")
        # verify.py as a script, in a process of its own (the PyNaCl-only virtualenv run is tests/evidence's)
        checked = run_verify(Path(sys.executable), tmp_path, str(bundle), "--key", "recipient.key", "--json")
        assert checked.returncode == 0, checked.stdout + checked.stderr
        report = json.loads(checked.stdout)
        assert report["verdict"] == "VALID"
        (export,) = [e for e in report["custody"] if e["action"] == Action.EVIDENCE_EXPORT]
        assert export["purpose"] == "handed to the police for case K-2026-001"
        assert export["detail"]["case_ref"] == "K-2026-001"
        driver.find_element(By.ID, "sign-out").click()
        wait_for_script(driver, "return !!document.getElementById('sign-in')")
        assert driver.current_url == f"{base}/console/sign-in"
        assert console_errors(driver) == []
