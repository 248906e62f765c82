"""The kiosk agent's state machine, with a scripted input: nothing becomes evidence that is not."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from consent.catalogue import builtin_notices
from evidence.audio import PCM
from recorder.errors import AudioDeviceError
from recorder.home import DeviceHome
from recorder.kiosk.agent import IDLE, NOTICE, RECORDING, STOPPED, Agent, AgentConfig, Refused
from recorder.kiosk.readiness import FAIL, OK, Check
from recorder.spool import Spool


class ScriptedSource:
    """Stands in for DeviceSource: start() may fail, peak says what was heard before arm()."""

    sample_rate = 16000
    channels = 1

    def __init__(self, *, fails: bool = False, peak: int = 500) -> None:
        self.fails, self.peak = fails, peak
        self.started = self.closed = False
        self._stopped = threading.Event()

    def check(self) -> None:
        return None

    def start(self, timeout: float = 0) -> None:
        if self.fails:
            raise AudioDeviceError("input device 'usb mic': no audio arrived within 4 s")
        self.started = True

    def close(self) -> None:
        self.closed = True

    def blocks(self) -> Iterator[PCM]:
        while not self._stopped.is_set():
            yield (np.random.default_rng(0).standard_normal((1600, 1)) * 800).astype(np.int16)
            time.sleep(0.01)

    def stop(self) -> None:
        self._stopped.set()

    def problems(self) -> dict[str, int]:
        return {}


def all_ok() -> dict[str, Check]:
    return {name: Check(name, OK, "ok", "ok") for name in ("microphone", "speaker", "server", "key", "spool")}


@pytest.fixture
def kiosk_home(home: DeviceHome) -> DeviceHome:
    (home.root / "notices.json").write_text(json.dumps([n.to_dict() for n in builtin_notices()]))
    return home


def make_agent(home: DeviceHome, source: ScriptedSource) -> Agent:
    agent = Agent(AgentConfig(home=home.root, segment_seconds=0.5), report=lambda _m: None)
    agent.source_factory = lambda _config: source  # type: ignore[assignment,return-value]
    agent.checks = all_ok()
    return agent


def spooled(home: DeviceHome) -> list[dict]:
    return [r.meta() for r in Spool(home.spool_dir, 1 << 30).recordings()]


def test_a_failing_check_keeps_start_closed_and_says_why(kiosk_home: DeviceHome) -> None:
    agent = make_agent(kiosk_home, ScriptedSource())
    agent.checks["microphone"] = Check("microphone", FAIL, "マイクに音が入っていません", "The microphone hears nothing")
    assert not agent.ready and not agent.snapshot()["ready"]
    with pytest.raises(Refused) as refused:
        agent.begin("ja")
    assert "hears nothing" in refused.value.en and "マイク" in refused.value.ja
    assert agent.state == IDLE and spooled(kiosk_home) == []


def test_capture_that_fails_to_start_creates_no_consent_and_no_recording(kiosk_home: DeviceHome) -> None:
    source = ScriptedSource(fails=True)
    agent = make_agent(kiosk_home, source)
    with pytest.raises(Refused):
        agent.begin("ja")
    assert agent.state == IDLE
    assert spooled(kiosk_home) == []  # no objection record, no 'given' recording without audio
    assert agent.checks["microphone"].state == FAIL  # and Start stays closed until it is checked again
    assert not agent.ready


def test_silence_while_the_notice_shows_refuses_to_record(kiosk_home: DeviceHome) -> None:
    source = ScriptedSource(peak=0)
    agent = make_agent(kiosk_home, source)
    agent.begin("en")
    assert agent.state == NOTICE and source.started  # the input runs before anyone decides
    with pytest.raises(Refused) as refused:
        agent.decide("given")
    assert "silence" in refused.value.en
    assert agent.state == IDLE and source.closed and spooled(kiosk_home) == []


def test_objection_is_a_record_without_audio(kiosk_home: DeviceHome) -> None:
    source = ScriptedSource()
    agent = make_agent(kiosk_home, source)
    agent.begin("ja")
    assert agent.snapshot()["notice"]["language"] == "ja"
    agent.decide("objected")
    assert agent.state == STOPPED and source.closed
    (meta,) = spooled(kiosk_home)
    assert meta["state"] == "objected" and meta["header"]["consent"]["outcome"] == "objected"
    assert "sample_rate" not in meta["header"]  # an objection record carries no audio parameters
    assert agent.snapshot()["last"]["outcome"] == "objected"


def test_given_records_until_stop_and_flags_an_incident(kiosk_home: DeviceHome) -> None:
    agent = make_agent(kiosk_home, ScriptedSource())
    agent.begin("en")
    agent.begin("ja")  # the customer's language changed at the notice: shown again, still one notice
    agent.decide("given")
    assert agent.state == RECORDING
    with pytest.raises(Refused):
        agent.begin("ja")  # a double tap cannot start a second recording
    with pytest.raises(Refused):
        agent.incident("free text")  # only the site's categories
    agent.incident("harassment")
    time.sleep(0.8)
    agent.stop()
    deadline = time.monotonic() + 10
    while agent.state != STOPPED and time.monotonic() < deadline:
        time.sleep(0.05)
    assert agent.state == STOPPED
    (meta,) = spooled(kiosk_home)
    assert meta["state"] == "closed" and meta["incident"] == "harassment"
    assert meta["header"]["consent"]["outcome"] == "given" and meta["header"]["consent"]["language"] == "ja"
    assert meta["header"]["consent"]["method"] == "displayed"  # no notice audio here: not claimed as spoken
    assert agent.snapshot()["last"]["segments"] >= 2
    agent.client.close()


def test_cancel_at_the_notice_leaves_nothing(kiosk_home: DeviceHome) -> None:
    source = ScriptedSource()
    agent = make_agent(kiosk_home, source)
    agent.begin("ja")
    agent.cancel()
    assert agent.state == IDLE and source.closed and spooled(kiosk_home) == []


def test_help_without_a_service_route_says_unavailable(kiosk_home: DeviceHome, tmp_path: Path) -> None:
    agent = make_agent(kiosk_home, ScriptedSource())
    agent.call_help()  # the offline home's server does not answer: the alert keeps trying
    time.sleep(0.2)
    assert agent.snapshot()["alert"]["state"] == "sending"
    agent.call_help()  # pressing again does not raise a second alert
    assert agent.alert is not None
    agent.alert.cancel()


class ScriptedService:
    """The alert endpoints: down for the first raise, then open -> escalated -> acknowledged."""

    def __init__(self) -> None:
        self.raised = 0
        self.polls = 0

    def raise_alert(self, kind: str, recording_id: str | None, category: str | None) -> dict:
        from recorder.errors import ServerUnreachable

        self.raised += 1
        if self.raised == 1:
            raise ServerUnreachable("connection refused")
        return {"id": "a1", "kind": kind, "state": "open", "tier": 1}

    def alert(self, alert_id: str, timeout: float | None = None) -> dict:
        self.polls += 1
        if self.polls < 2:
            return {"id": alert_id, "state": "escalated", "tier": 2}
        return {"id": alert_id, "state": "acknowledged", "tier": 2, "acknowledged_by": "sato", "message": "coming"}


def test_a_help_alert_is_retried_then_followed_to_its_acknowledgment(monkeypatch: pytest.MonkeyPatch) -> None:
    from recorder.kiosk import alerts

    monkeypatch.setattr(alerts, "RETRY_SECONDS", 0.05)
    monkeypatch.setattr(alerts, "POLL_SECONDS", 0.05)
    service = ScriptedService()
    alert = alerts.HelpAlert(service, "help", "r1", None, lambda _m: None)  # type: ignore[arg-type]
    seen: list[str] = []
    alert.start()
    deadline = time.monotonic() + 5
    while alert.state != "acknowledged" and time.monotonic() < deadline:
        if not seen or seen[-1] != alert.state:
            seen.append(alert.state)
        time.sleep(0.005)
    assert alert.state == "acknowledged" and service.raised == 2  # retried once while the server was down
    assert seen[0] == "sending" and "escalated" in seen
    assert alert.to_dict()["acknowledged_by"] == "sato" and alert.to_dict()["message"] == "coming"
