"""Capture is proven before consent: `recorder record` with an input that opens but never delivers."""

from __future__ import annotations

import json
from typing import Any

import pytest
from typer.testing import CliRunner

from consent.catalogue import builtin_notices
from evidence.errors import ExitCode
from recorder import capture
from recorder.cli import app
from recorder.errors import AudioDeviceError
from recorder.home import DeviceHome


class DeadStream:
    """Opens and starts, like a muted USB input whose driver never calls back."""

    def __init__(self, **_kwargs: Any) -> None:
        self.closed = False

    def start(self) -> None:
        return None

    def stop(self) -> None:
        return None

    def close(self) -> None:
        self.closed = True


class LiveStream(DeadStream):
    """Delivers one block of silence at once, then nothing more."""

    def __init__(self, callback: Any, blocksize: int, **_kwargs: Any) -> None:
        super().__init__()
        self.callback, self.blocksize = callback, blocksize

    def start(self) -> None:
        import numpy as np

        status = type("Status", (), {"input_overflow": False})()
        self.callback(np.zeros((self.blocksize, 1), dtype=np.int16), self.blocksize, None, status)


@pytest.fixture
def fake_portaudio(monkeypatch: pytest.MonkeyPatch) -> Any:
    sd = pytest.importorskip("sounddevice")
    monkeypatch.setattr(sd, "check_input_settings", lambda **_kwargs: None)
    monkeypatch.setattr(capture, "START_TIMEOUT", 0.3)
    return sd


def test_a_stream_that_delivers_nothing_fails_start(fake_portaudio: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fake_portaudio, "InputStream", DeadStream)
    with pytest.raises(AudioDeviceError, match="no audio arrived"):
        capture.DeviceSource().start()


def test_audio_before_arm_is_measured_and_dropped(fake_portaudio: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fake_portaudio, "InputStream", LiveStream)
    source = capture.DeviceSource()
    source.start()
    assert source.peak == 0  # it heard digital silence, and kept none of it
    assert source._queue.empty()
    source.close()


def test_record_with_a_dead_input_leaves_no_consent_and_no_recording(
    fake_portaudio: Any, monkeypatch: pytest.MonkeyPatch, home: DeviceHome
) -> None:
    (home.root / "notices.json").write_text(json.dumps([n.to_dict() for n in builtin_notices()]))
    monkeypatch.setattr(fake_portaudio, "InputStream", DeadStream)
    result = CliRunner().invoke(
        app, ["record", "--home", str(home.root), "--input-device", "usb-mic", "--language", "en"], input="\n"
    )
    assert result.exit_code == ExitCode.USAGE, result.output
    assert "no audio arrived" in result.output
    assert "About recording this conversation" not in result.output  # the notice was never shown
    assert not home.spool_dir.exists() or not list(home.spool_dir.glob("*/recording.json"))
