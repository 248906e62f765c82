"""The officer's console on a recording made through the real audio path, in Debian's chromium.

Speech is played into a PulseAudio null sink and recorded by `countersign recorder record`
through PortAudio, then uploaded to a live `countersign server run`. The officer gets a console
sign-in from the server's own command (`countersign server console-login`), signs in with TOTP,
finds the recording, states a purpose and plays it to its end in the browser. The player page
names the access-log entry its purpose made, so that entry was committed before the page, and
the audio element on it, asked for a byte. The in-process browser test (tests/console/
test_console_browser.py) covers the rest of the officer's flow on generated audio.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pyotp
import pytest

from tests.conftest import Deployment, cli_env, countersign
from tests.console.support import PASSWORD
from tests.support.backends import POSTGRES_S3
from tests.support.browser import chromium, console_errors, wait_for_script
from tests.support.real_recording import record_speech

pytestmark = [
    pytest.mark.audio,
    pytest.mark.browser,
    pytest.mark.skipif(POSTGRES_S3, reason="tests the console on real audio, not the backend: run once, on sqlite-fs"),
]

SENTENCE = "Please step back from the counter. I am recording this conversation."
PURPOSE = "complaint 2026-31: the customer's words at counter 1"


def test_officer_finds_and_plays_a_real_recording(deployment: Deployment, tmp_path: Path) -> None:
    recorded = record_speech(deployment, tmp_path, SENTENCE)
    login = countersign(
        "server", "console-login", "olivia", "--data", str(deployment.server.data),
        env=cli_env(COUNTERSIGN_CONSOLE_PASSWORD=PASSWORD),
    )  # fmt: skip
    uri = next(line for line in login.stdout.splitlines() if line.startswith("otpauth://"))
    secret = pyotp.parse_uri(uri).secret
    base = deployment.server.url
    from selenium.webdriver.common.by import By

    with chromium(extra_args=("--autoplay-policy=no-user-gesture-required", "--mute-audio")) as driver:
        driver.get(f"{base}/console/sign-in")
        driver.find_element(By.ID, "name").send_keys("olivia")
        driver.find_element(By.ID, "password").send_keys(PASSWORD)
        driver.find_element(By.ID, "code").send_keys(pyotp.TOTP(secret).now())
        driver.find_element(By.ID, "sign-in").click()
        wait_for_script(driver, "return !!document.getElementById('to-search')")
        driver.find_element(By.ID, "to-search").click()
        wait_for_script(driver, "return !!document.getElementById('count')")
        assert "1 recording" in driver.find_element(By.ID, "count").text
        driver.find_element(By.CSS_SELECTOR, "a.recording").click()
        wait_for_script(driver, "return !!document.getElementById('chain')")
        assert driver.find_element(By.ID, "chain").text.startswith("verified")
        recording_id = driver.current_url.rsplit("/", 1)[-1]

        driver.find_element(By.ID, "purpose").send_keys(PURPOSE)
        driver.find_element(By.ID, "listen").click()
        wait_for_script(driver, "return !!document.getElementById('player')")
        shown = re.search(r"access log \(entry (\d+)\)", driver.find_element(By.TAG_NAME, "main").text)
        assert shown is not None
        wait_for_script(driver, "return document.getElementById('player').readyState >= 1", timeout=60)
        duration = driver.execute_script("return document.getElementById('player').duration")
        assert abs(duration - recorded.seconds) <= 1.0  # what was recorded, within one segment
        driver.execute_script("document.getElementById('player').play();")
        assert wait_for_script(driver, "return document.getElementById('player').ended", timeout=60) is True
        assert driver.execute_script("return document.getElementById('waveform').naturalWidth") > 0
        assert console_errors(driver) == []

    with sqlite3.connect(deployment.server.data / "countersign.db") as db:
        reads = db.execute("SELECT seq, purpose, target FROM access_log WHERE action = 'api:evidence:read'").fetchall()
    # One read, with the purpose typed in the browser, and it is the entry the player page named.
    assert reads == [(int(shown.group(1)), PURPOSE, f"recording:{recording_id}")]
