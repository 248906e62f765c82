"""The agent's sync loop: what a crash or an outage left in the spool goes by itself."""

from __future__ import annotations

import time

import numpy as np

from recorder.client import DeviceClient
from recorder.kiosk.sync import SyncLoop, wait_until
from recorder.recording import LiveRecording, record_objection
from tests.recorder.conftest import Service
from tests.support.factories import consent_record, tone


def test_spooled_recordings_are_sent_closed_and_cleared(service: Service) -> None:
    spool = service.spool()
    finished = LiveRecording(service.home, spool, consent_record("given"), 16000, 1, 1.0)
    finished.add(tone(1.0), False)
    finished.add(tone(1.0, seed=1), True)
    crashed = LiveRecording(service.home, spool, consent_record("given"), 16000, 1, 1.0)
    crashed.add(tone(1.0), False)
    crashed.close()  # closed without its final segment: the process died
    objection = record_objection(service.home, spool, consent_record("objected"))
    live = LiveRecording(service.home, spool, consent_record("given"), 16000, 1, 1.0)  # holds its lock
    live.add(tone(1.0), False)

    # First with the server away: nothing leaves, nothing is lost, the loop says what waits.
    away = DeviceClient("http://127.0.0.1:9", service.home.token())
    offline = SyncLoop(away, service.spool, lambda _m: None)
    offline.pass_once()
    assert offline.online is False and offline.waiting_recordings == 4
    away.close()

    client = service.device_client()
    loop = SyncLoop(client, service.spool, lambda _m: None, interval=0.1)
    loop.busy.add(str(finished.id))  # an UploadThread owns it: skipped until released
    loop.start()
    try:
        assert wait_until(lambda: loop.last_sent.get(str(crashed.id)) == "interrupted", 10)
        assert wait_until(lambda: loop.last_sent.get(objection.id) == "objection record", 10)
        assert str(finished.id) not in loop.last_sent
        loop.busy.discard(str(finished.id))
        loop.wake()
        assert wait_until(lambda: loop.last_sent.get(str(finished.id)) == "complete", 10)
        time.sleep(0.3)
        assert str(live.id) not in loop.last_sent  # still being recorded: its lock is held
        assert loop.online is True and loop.waiting_recordings == 1
    finally:
        loop.stop()
        client.close()
    assert service.evidence(str(finished.id))["status"] == "complete"
    assert service.evidence(str(crashed.id))["status"] == "interrupted"
    assert service.evidence(objection.id)["audio"] == "objection"
    assert np.array_equal(service.audio(str(finished.id))[:16000], tone(1.0))
    assert [r.id for r in service.spool().recordings()] == [str(live.id)]
    live.close()
