"""The counter kiosk in a real browser: Debian's chromium through chromium-driver (Selenium).

Each test runs `countersign recorder serve` as a subprocess against a live service (the
`deployment` fixture), recording from a PulseAudio null sink's monitor as the real-audio
tests do. A quiet room tone (-55 dBFS noise) plays into the sink throughout, because the
readiness check refuses an input that delivers only digital silence, as an idle null sink does.
One chromium serves the whole module. These test the agent, not the backend, so they are
skipped on postgres-s3.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import soundfile as sf

from consent.catalogue import pick
from evidence import wire
from recorder.home import DeviceHome
from tests.conftest import REPO, Deployment, bearer, cli_env, countersign, free_port
from tests.support.alert_receivers import SmtpServer, WebhookReceiver, wait_for
from tests.support.backends import POSTGRES_S3
from tests.support.factories import tone
from tests.support.pulse import MONITOR_SOURCE, PulseServer, start_pulseaudio
from tests.support.similarity import SIMILARITY_THRESHOLD, contains_speech, envelope_similarity
from tests.support.sounds import play_into_sink, play_into_sink_and_wait, read_wav, speak_to_wav, white_noise, write_wav

pytestmark = [
    pytest.mark.browser,
    pytest.mark.audio,
    pytest.mark.skipif(POSTGRES_S3, reason="tests the kiosk agent, not the backend: run once, on sqlite-fs"),
]

SENTENCE = "Call your supervisor right now. This is completely unacceptable and I want my money back today."
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip("needs Debian's chromium and chromium-driver (scripts/install-system-deps.sh)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--autoplay-policy=no-user-gesture-required", "--window-size=1280,900"):  # fmt: skip
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def pulse(tmp_path: Path) -> Iterator[PulseServer]:
    with start_pulseaudio() as server:
        room = write_wav(tmp_path / "room.wav", white_noise(180, level_dbfs=-55), 16000)
        player = play_into_sink(server, room)
        try:
            yield server
        finally:
            player.kill()
            player.wait()


class Kiosk:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.proc, self.port, self.log = proc, port, log
        self.url = f"http://127.0.0.1:{port}/"

    def state(self) -> dict[str, Any]:
        data: dict[str, Any] = httpx.get(self.url + "api/state", timeout=5).json()
        return data


@contextmanager
def kiosk(deployment: Deployment, pulse: PulseServer, *extra: str, sink: str = "nowhere") -> Iterator[Kiosk]:
    port = free_port()
    log = deployment.home.parent / f"kiosk-{port}.log"
    env = {**cli_env(), **pulse.pulse_vars(source=MONITOR_SOURCE, sink=sink)}
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "countersign", "recorder", "serve", "--home", str(deployment.home),
             "--port", str(port), "--segment-seconds", "1", *extra],
            env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    agent = Kiosk(proc, port, log)
    try:
        until(lambda: _answers(agent), 30, lambda: log.read_text())
        yield agent
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _answers(agent: Kiosk) -> bool:
    assert agent.proc.poll() is None, agent.log.read_text()
    try:
        return bool(agent.state())
    except httpx.TransportError:
        return False


def until(condition: Callable[[], Any], timeout: float, why: Callable[[], str] | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s{': ' + why() if why else ''}")
        time.sleep(0.1)


def by_id(driver: Any, element_id: str) -> Any:
    return driver.find_element("id", element_id)


def visible(driver: Any, element_id: str) -> bool:
    return bool(by_id(driver, element_id).is_displayed())


def evidence(deployment: Deployment) -> list[dict[str, Any]]:
    headers = {"Authorization": f"Bearer {deployment.officer_token}"}
    listed: list[dict[str, Any]] = httpx.get(f"{deployment.server.url}/v1/evidence", headers=headers).json()
    return listed


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer(free_port()).start()
    yield server
    server.stop()


@pytest.fixture
def hook() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver(free_port()).start()
    yield receiver
    receiver.stop()


def test_whole_flow_in_japanese_with_real_audio(
    browser: Any, deployment: Deployment, pulse: PulseServer, smtp: SmtpServer, hook: WebhookReceiver, tmp_path: Path
) -> None:
    """Readiness, the Japanese notice, REC, an incident, a call for help that reaches a real SMTP server
    and a webhook receiver, escalates and is acknowledged on the kiosk; the speech arrives at the service."""
    speech = speak_to_wav(SENTENCE, tmp_path / "speech.wav")
    reference, rate = read_wav(speech)
    deployment.server.stop()  # the service now sends e-mail through the test's SMTP server
    deployment.server.env = {"COUNTERSIGN_SMTP_HOST": "127.0.0.1", "COUNTERSIGN_SMTP_PORT": str(smtp.port)}
    deployment.server.start()
    with kiosk(deployment, pulse) as agent:
        browser.get(agent.url)
        assert browser.execute_script("return document.documentElement.lang") == "ja"  # Japanese by default
        start = by_id(browser, "start")
        until(lambda: start.text == "告知を表示して開始", 10, lambda: repr(start.text))  # the script fills it in
        until(start.is_enabled, 20, lambda: str(agent.state()["checks"]))
        checks = {li.get_attribute("data-check"): li for li in browser.find_elements("css selector", "#checks li")}
        assert set(checks) == {"microphone", "speaker", "server", "key", "spool"}
        until(lambda: checks["microphone"].text == "マイク: 音を受信しています", 10, lambda: checks["microphone"].text)
        start.click()
        until(lambda: visible(browser, "notice"), 10)
        until(lambda: "録音" in by_id(browser, "notice-text").text, 5)  # the customer's notice, in Japanese
        by_id(browser, "given").click()
        until(lambda: visible(browser, "recording"), 10)
        until(lambda: "録音中" in by_id(browser, "rec").text, 5)
        play_into_sink_and_wait(pulse, speech)
        assert by_id(browser, "elapsed").text != "0:00"

        by_id(browser, "incident").click()
        categories = browser.find_elements("css selector", "#categories button")
        codes = [b.get_attribute("data-code") for b in categories]
        assert codes == [c["code"] for c in agent.state()["categories"]]  # the site's list, not free text
        flagged = codes[0]
        categories[0].click()
        until(lambda: visible(browser, "incident-flag"), 5)

        # Two tiers, and a second after which nobody has answered: the kiosk must show the escalation.
        # Tier 1 hears by e-mail (a real SMTP server) and by a signed webhook (a real receiver).
        admin = httpx.Client(base_url=deployment.server.url, headers=bearer(deployment.admin_token))
        site = {"site_id": "tokyo"}
        assert admin.put(wire.SITE_ALERTING.format(**site), json={"escalate_after_seconds": 1}).status_code == 200
        for tier in (1, 2):
            contact = {"tier": tier, "email": f"tier{tier}@example.org"}
            assert admin.post(wire.ALERT_CONTACTS.format(**site), json=contact).status_code in (200, 201)
        hook.secret = admin.post(wire.ALERT_CONTACTS.format(**site), json={"tier": 1, "webhook": hook.url}).json()[
            "secret"
        ]
        admin.close()
        by_id(browser, "help").click()
        pressed = time.monotonic()
        until(lambda: "応援を要請しました" in by_id(browser, "alert-status").text, 10)
        (mail,) = wait_for(lambda: [m for m in smtp.to("tier1@example.org") if "Help" in str(m.message["Subject"])])
        (signed,) = wait_for(lambda: [h for h in hook.received if json.loads(h.body)["alert"]["kind"] == "help"])
        assert signed.valid, signed.headers  # HMAC over the exact body, with the secret shown once
        assert "counter-1" in str(mail.message["Subject"]) or "counter-1" in mail.message.get_content()
        assert max(mail.at, signed.at) - pressed < 10
        until(lambda: "上位の担当者" in by_id(browser, "alert-status").text, 15)  # escalated to tier 2 (~4 s)
        assert by_id(browser, "alert-status").get_attribute("data-state") == "escalated"
        wait_for(lambda: smtp.to("tier2@example.org"), 15)
        officer = {"Authorization": f"Bearer {deployment.officer_token}"}
        listed = httpx.get(f"{deployment.server.url}{wire.ALERTS}", headers=officer).json()
        (alert,) = [a for a in listed if a["kind"] == "help"]  # the site may also alert on the incident
        assert alert["recording_id"] == agent.state()["recording"]["id"]
        acked = httpx.post(
            f"{deployment.server.url}{wire.alert_ack_path(alert['id'])}", json={"message": "Sato is coming"},
            headers=officer,
        )  # fmt: skip
        assert acked.status_code == 200, acked.text
        asked = time.monotonic()
        until(lambda: "Sato is coming" in by_id(browser, "alert-status").text, 10)
        assert time.monotonic() - asked < 5  # "within seconds"
        assert by_id(browser, "alert-status").get_attribute("data-state") == "acknowledged"
        until(lambda: "送信済み" in by_id(browser, "upload").text, 5)
        by_id(browser, "stop").click()
        until(lambda: visible(browser, "last"), 15)
        until(lambda: "録音を終了しました" in by_id(browser, "last").text, 5)
        listed = until(lambda: [e for e in evidence(deployment) if e["status"] == "complete"], 30)
    (recording,) = listed
    assert recording["consent"]["language"] == "ja" and recording["consent"]["outcome"] == "given"
    assert recording["incident_category"] == flagged
    headers = {"Authorization": f"Bearer {deployment.officer_token}"}
    audio = httpx.post(
        f"{deployment.server.url}/v1/evidence/{recording['id']}/audio",
        json={"purpose": "kiosk browser test", "format": "wav"},
        headers=headers,
        timeout=60,
    )
    assert audio.status_code == 200, audio.text
    captured, captured_rate = sf.read(io.BytesIO(audio.content), dtype="int16")
    assert contains_speech(captured, captured_rate)
    similarity, lag = envelope_similarity(reference, captured, rate, captured_rate=captured_rate)
    assert similarity >= SIMILARITY_THRESHOLD, (similarity, lag)


def test_objection_in_english_with_the_keyboard_only(browser: Any, deployment: Deployment, pulse: PulseServer) -> None:
    """Tab and Enter alone: switch to English, start, the customer objects; an objection record, no audio."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    def press(*keys: str) -> None:
        chain = ActionChains(browser)
        for key in keys:
            chain.send_keys(key)
        chain.perform()

    def focused() -> str:
        return str(browser.execute_script("return document.activeElement.id"))

    notice = pick(DeviceHome(deployment.home).notices(), "en")
    # The reading is provisioned as an admin would (the service), and the agent fetches it itself.
    reading = io.BytesIO()
    sf.write(reading, tone(0.5), 16000, format="WAV")
    provisioned = httpx.put(
        f"{deployment.server.url}{wire.notice_audio_path(notice.id, notice.version, 'en')}",
        content=reading.getvalue(),
        headers={**bearer(deployment.admin_token), "Content-Type": "audio/wav"},
    )
    assert provisioned.status_code in (200, 201), provisioned.text
    # A second sink plays the counter's speaker, so the notice does not reach the microphone's monitor.
    pulse.pactl("load-module", "module-null-sink", "sink_name=speaker")
    with kiosk(deployment, pulse, "--output-device", "pulse", sink="speaker") as agent:
        browser.get(agent.url)
        browser.execute_script("localStorage.clear()")  # Japanese first, whatever an earlier test chose
        browser.refresh()
        until(lambda: by_id(browser, "start").is_enabled(), 20, lambda: str(agent.state()["checks"]))
        until(lambda: (deployment.home / "notice-audio" / f"{notice.id}.en.v{notice.version}.wav").is_file(), 10)
        until(lambda: focused() == "start", 5)  # once ready, the main action has the focus
        ActionChains(browser).key_down(Keys.SHIFT).send_keys(Keys.TAB).key_up(Keys.SHIFT).perform()
        assert focused() == "lang-toggle"
        press(Keys.ENTER)
        until(lambda: by_id(browser, "start").text == "Show notice and start", 5)
        assert browser.execute_script("return document.documentElement.lang") == "en"
        until(lambda: "Microphone: hearing sound" in by_id(browser, "checks").text, 5)
        press(Keys.TAB)
        assert focused() == "start"
        press(Keys.ENTER)
        until(lambda: visible(browser, "notice"), 10)
        until(lambda: by_id(browser, "notice-title").text == "About recording this conversation", 5)
        until(lambda: by_id(browser, "notice-spoken").text == "The notice was read aloud", 10)
        until(lambda: focused() == "given", 5)  # the notice's main action has the focus
        press(Keys.TAB)
        assert focused() == "objects" and by_id(browser, "objects").text == "Customer objects"
        press(Keys.ENTER)
        until(lambda: visible(browser, "last"), 10)
        until(lambda: "The objection was logged" in by_id(browser, "last").text, 5)
        listed = until(lambda: evidence(deployment), 15)  # sent by the agent's own sync loop
    (record,) = listed
    assert record["consent_outcome"] == "objected" and record["audio"] == "objection"
    assert record["segment_count"] == 0 and record["consent"]["language"] == "en"
    assert record["consent"]["method"] == "displayed+spoken"  # the whole reading played before the decision


def test_a_missing_microphone_keeps_start_disabled(browser: Any, deployment: Deployment, pulse: PulseServer) -> None:
    with kiosk(deployment, pulse, "--input-device", "no-such-microphone") as agent:
        browser.get(agent.url)
        until(lambda: "マイクが使えません" in by_id(browser, "why").text, 20, lambda: str(agent.state()))
        assert not by_id(browser, "start").is_enabled()
        for button in ("start", "recheck", "help"):  # touch targets: at least 72 CSS pixels tall
            assert by_id(browser, button).size["height"] >= 72, button
        mic = browser.find_element("css selector", '#checks li[data-check="microphone"]')
        assert mic.get_attribute("data-state") == "fail"
        by_id(browser, "lang-toggle").click()
        until(lambda: "The microphone cannot be used" in by_id(browser, "why").text, 5)
        # Even a forged click (the page's own script, so the same origin) is refused by the agent.
        refused = browser.execute_script(
            "const r = await fetch('/api/start', {method: 'POST', headers: {'Content-Type': 'application/json'},"
            ' body: \'{"language": "ja"}\'}); return [r.status, (await r.json()).en];'
        )
        assert refused[0] == 409 and "microphone" in refused[1]
        assert agent.state()["state"] == "idle"
    assert evidence(deployment) == []
    assert not list((deployment.home / "spool").glob("*/recording.json"))  # no consent record either


def test_server_down_mid_recording_uploads_by_itself(browser: Any, deployment: Deployment, pulse: PulseServer) -> None:
    with kiosk(deployment, pulse) as agent:
        browser.get(agent.url)
        until(lambda: by_id(browser, "start").is_enabled(), 20, lambda: str(agent.state()["checks"]))
        by_id(browser, "start").click()
        until(lambda: visible(browser, "notice"), 10)
        by_id(browser, "given").click()
        until(lambda: visible(browser, "recording"), 10)
        until(lambda: agent.state()["recording"]["sent"] >= 1, 10)
        deployment.server.stop()
        until(lambda: visible(browser, "offline"), 20)
        until(lambda: "オフライン" in by_id(browser, "offline").text, 5)
        time.sleep(2)  # a few more segments spool while the server is away
        by_id(browser, "stop").click()
        until(lambda: visible(browser, "last"), 30)
        until(lambda: "自動で送信" in by_id(browser, "last").text, 5)
        status = countersign("recorder", "status", "--home", str(deployment.home)).stdout
        assert "spool: 1 recordings" in status and "unsent 0" not in status, status  # what waits is shown
        deployment.server.start()
        listed = until(lambda: [e for e in evidence(deployment) if e["status"] == "complete"], 30)
        until(lambda: not list((deployment.home / "spool").glob("*/recording.json")), 10)
    (recording,) = listed
    assert recording["segment_count"] >= 4
