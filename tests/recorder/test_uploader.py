"""recorder.uploader against the real service on loopback (uvicorn in a thread)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest

from consent.records import ConsentRecord
from recorder.client import DeviceClient
from recorder.errors import ServerRefused, ServerUnreachable
from recorder.recording import LiveRecording, record_objection
from recorder.spool import Spool
from recorder.uploader import UploadThread, finish, send_pending
from tests.recorder.conftest import Service
from tests.recorder.support import RATE
from tests.support.factories import consent_record, tone


def recorded(service: Service, consent: ConsentRecord, segments: int, final: bool = True) -> LiveRecording:
    live = LiveRecording(service.home, service.spool(), consent, RATE, 1, 1.0)
    for i in range(segments):
        live.add(tone(1.0, seed=i), final and i == segments - 1)
    if not final:
        live.close()  # no final segment, but the recorder let go (as after a crash)
    return live


def source(segments: int) -> np.ndarray:
    return np.concatenate([tone(1.0, seed=i) for i in range(segments)])


def wait_until(condition: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_send_pending_then_finish_delivers_everything_and_clears_the_spool(
    service: Service, consent: ConsentRecord
) -> None:
    live = recorded(service, consent, 3)
    client = service.device_client()
    try:
        assert send_pending(client, live.spooled) == 3
        assert live.spooled.opened and live.spooled.unsent() == []
        assert send_pending(client, live.spooled) == 0  # nothing twice
        assert finish(client, service.spool(), live.spooled) == "complete"
    finally:
        client.close()
    assert not live.spooled.folder.exists()
    shown = service.evidence(str(live.id))
    assert shown["status"] == "complete" and shown["segment_count"] == 3
    assert np.array_equal(service.audio(str(live.id)), source(3))


def test_server_down_keeps_everything_spooled(service: Service, consent: ConsentRecord) -> None:
    live = recorded(service, consent, 2)
    service.server.stop()
    client = service.device_client()
    try:
        with pytest.raises(ServerUnreachable):
            send_pending(client, live.spooled)
        with pytest.raises(ServerUnreachable):
            finish(client, service.spool(), live.spooled)
    finally:
        client.close()
    assert live.spooled.folder.exists()
    assert live.spooled.segments() == [0, 1] and live.spooled.unsent() == [0, 1]
    assert not live.spooled.opened


def test_upload_thread_backs_off_while_down_and_delivers_when_back(service: Service, consent: ConsentRecord) -> None:
    live = recorded(service, consent, 3)
    service.server.stop()
    client = service.device_client()
    attempts: list[float] = []
    real_open = client.open_recording

    def counting_open(body: dict[str, Any]) -> None:
        attempts.append(time.monotonic())
        real_open(body)

    client.open_recording = counting_open  # type: ignore[method-assign]
    reports: list[str] = []
    uploader = UploadThread(client, live.spooled, reports.append, max_backoff=1.0)
    try:
        uploader.start()
        wait_until(lambda: len(attempts) >= 4)
        gaps = np.diff(attempts[:4])
        assert gaps[0] >= 0.45 and gaps[1] >= 0.95, gaps  # 0.5 s, then doubled ...
        assert gaps[2] >= 0.95 and gaps[2] < gaps[1] + 0.9, gaps  # ... up to max_backoff, not beyond
        assert live.spooled.unsent() == [0, 1, 2] and not live.spooled.opened
        assert sum("server unreachable" in r for r in reports) == 1, reports  # said once, not per retry

        service.server.start()
        uploader.notify()
        wait_until(lambda: not live.spooled.unsent())
        assert uploader.close(10)
    finally:
        uploader.close(5)
        client.close()
    assert uploader.sent == 3 and uploader.error is None
    assert reports[-1] == "server reachable again; spooled segments uploaded"
    assert service.evidence(str(live.id))["segment_count"] == 3


def test_closing_while_the_server_is_down_hands_over_to_sync(service: Service, consent: ConsentRecord) -> None:
    live = recorded(service, consent, 2)
    service.server.stop()
    client = service.device_client()
    uploader = UploadThread(client, live.spooled, lambda _message: None)
    try:
        uploader.start()
        started = time.monotonic()
        assert uploader.close(10) is False
        assert time.monotonic() - started < 5, "close() waited out the backoff instead of handing over"
        assert uploader._thread is not None and not uploader._thread.is_alive()
    finally:
        client.close()
    assert uploader.error is None
    assert live.spooled.unsent() == [0, 1], "evidence must stay spooled for sync"

    service.server.start()  # later: sync sends it all
    client = service.device_client()
    try:
        assert send_pending(client, live.spooled) == 2
        assert finish(client, service.spool(), live.spooled) == "complete"
    finally:
        client.close()


def test_re_upload_after_lost_acknowledgements_is_idempotent(service: Service, consent: ConsentRecord) -> None:
    """A crash after the server stored a segment but before `.sent` was written: all of it goes again."""
    live = recorded(service, consent, 3)
    client = service.device_client()
    try:
        send_pending(client, live.spooled)
        for marker in [*live.spooled.folder.glob("*.sent"), live.spooled.folder / "opened"]:
            marker.unlink()
        assert live.spooled.unsent() == [0, 1, 2]
        assert send_pending(client, live.spooled) == 3  # the server answers 200 for what it already has
        assert live.spooled.unsent() == [] and live.spooled.opened
        assert finish(client, service.spool(), live.spooled) == "complete"
    finally:
        client.close()
    shown = service.evidence(str(live.id))
    assert shown["status"] == "complete" and shown["segment_count"] == 3
    assert np.array_equal(service.audio(str(live.id)), source(3))


def test_a_refusal_is_reported_and_the_evidence_kept(service: Service, consent: ConsentRecord) -> None:
    live = recorded(service, consent, 3)
    damaged = live.spooled.folder / "000001.seg"
    envelope = bytearray(damaged.read_bytes())
    envelope[-1] ^= 0x01
    damaged.write_bytes(bytes(envelope))  # no longer what the device signed
    client = service.device_client()
    reports: list[str] = []
    uploader = UploadThread(client, live.spooled, reports.append)
    try:
        uploader.start()
        assert uploader.close(20) is False
        assert uploader._thread is not None and not uploader._thread.is_alive(), "a refusal must stop, not retry"
        with pytest.raises(ServerRefused, match=r"\b4\d\d\b"):
            send_pending(client, live.spooled)
        with pytest.raises(ServerRefused):
            finish(client, service.spool(), live.spooled)
    finally:
        client.close()
    assert isinstance(uploader.error, ServerRefused)
    assert any(r.startswith("upload refused, evidence kept in the spool: ") for r in reports), reports
    assert uploader.sent == 0 and live.spooled.is_sent(0)
    assert live.spooled.unsent() == [1, 2] and live.spooled.folder.exists()
    assert live.spooled.folder.exists(), "a refused recording must never leave the spool"
    assert service.evidence(str(live.id))["segment_count"] == 1


def test_a_revoked_token_is_a_refusal_not_an_outage(service: Service, consent: ConsentRecord) -> None:
    live = recorded(service, consent, 1)
    client = DeviceClient(service.server.url, "csd_not-a-token")
    try:
        with pytest.raises(ServerRefused, match="401"):
            send_pending(client, live.spooled)
    finally:
        client.close()
    assert live.spooled.unsent() == [0] and not live.spooled.opened


def test_incident_flag_goes_once_even_when_flagged_late(service: Service, consent: ConsentRecord) -> None:
    live = recorded(service, consent, 2)
    client = service.device_client()
    flags: list[str] = []
    real_flag = client.flag_incident

    def counting_flag(recording_id: str, category: str) -> None:
        flags.append(category)
        real_flag(recording_id, category)

    client.flag_incident = counting_flag  # type: ignore[method-assign]
    try:
        send_pending(client, live.spooled)
        assert flags == []
        live.spooled.update_meta(incident="harassment")  # staff flag it after the upload
        assert send_pending(client, live.spooled) == 0
        send_pending(client, live.spooled)
        assert flags == ["harassment"]
        assert live.spooled.meta()["incident_sent"] is True
        assert service.evidence(str(live.id))["incident_category"] == "harassment"
        assert finish(client, service.spool(), live.spooled) == "complete"
        assert flags == ["harassment"]
    finally:
        client.close()


def test_finish_reports_interrupted_and_objection_records(service: Service, consent: ConsentRecord) -> None:
    cut_short = recorded(service, consent, 2, final=False)
    objection = record_objection(service.home, service.spool(), consent_record("objected"))
    client = service.device_client()
    try:
        assert finish(client, service.spool(), cut_short.spooled) == "interrupted"
        assert finish(client, service.spool(), objection) == "objection record"
    finally:
        client.close()
    assert service.evidence(str(cut_short.id))["status"] == "interrupted"
    assert service.evidence(objection.id)["status"] == "objected"
    assert list(Spool(service.home.spool_dir, 10**8).recordings()) == []


def test_uploads_follow_a_live_recording_segment_by_segment(service: Service, consent: ConsentRecord) -> None:
    live = LiveRecording(service.home, service.spool(), consent, RATE, 1, 1.0)
    client = service.device_client()
    uploader = UploadThread(client, live.spooled, lambda _message: None)
    try:
        uploader.start()
        for i in range(3):
            live.add(tone(1.0, seed=i), i == 2)
            uploader.notify()
            wait_until(lambda i=i: live.spooled.is_sent(i))
            assert service.evidence(str(live.id))["segment_count"] == i + 1
        assert uploader.close(10)
    finally:
        uploader.close(5)
        client.close()
    assert service.evidence(str(live.id))["status"] == "complete"
