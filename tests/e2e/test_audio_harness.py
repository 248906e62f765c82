"""Proof that the audio harness works end to end (and that its checks can fail).

The ``audio`` tests start a private PulseAudio daemon, play espeak-ng speech into
its ``counter`` null sink and record ``counter.monitor`` through
``sounddevice.InputStream(device="pulse")`` -- the same path the recorder uses.
Run them with ``pytest -m audio -s tests/e2e/test_audio_harness.py`` to see the numbers.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.support.capture_process import CaptureProcess, reinitialise_portaudio, start_capture
from tests.support.pulse import CAPTURE_RATE, MONITOR_SOURCE, SINK_NAME, PulseServer, start_pulseaudio
from tests.support.similarity import BANDS_HZ, SIMILARITY_THRESHOLD, contains_speech, envelope_similarity
from tests.support.sounds import play_into_sink, play_into_sink_and_wait, read_wav, speak_to_wav, white_noise

SENTENCE_A = "State your full name and the date of this recording."  # 2.9 s
SENTENCE_B = "Seven silver spoons were found under the table."  # 2.8 s
RATE = CAPTURE_RATE
MARGIN_SECONDS = 0.4  # capture this much longer than the sentence

_TOOLS = ("pulseaudio", "pactl", "paplay", "parec", "espeak-ng", "sox")


def _require_audio_stack() -> None:
    missing = [tool for tool in _TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"audio stack not installed: {', '.join(missing)}")


@pytest.fixture(scope="module")
def pulse() -> Iterator[PulseServer]:
    _require_audio_stack()
    with start_pulseaudio() as server:
        yield server


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    _require_audio_stack()
    directory = tmp_path_factory.mktemp("speech")
    return {
        "a": speak_to_wav(SENTENCE_A, directory / "a.wav"),
        "b": speak_to_wav(SENTENCE_B, directory / "b.wav"),
    }


def _capture_playback(
    server: PulseServer, wav: Path | None, out: Path, seconds: float
) -> tuple[np.ndarray, int, CaptureProcess, float]:
    """Record ``counter.monitor`` in a fresh process while ``wav`` is played into the sink."""
    with start_capture(server, out, seconds=seconds) as capture:
        capture.wait_ready()
        play_started = time.monotonic()
        if wav is not None:
            play_into_sink_and_wait(server, wav)
        captured, rate = capture.wait()
    return captured, rate, capture, play_started


def _duration(wav: Path) -> float:
    samples, rate = read_wav(wav)
    return len(samples) / rate


# --------------------------------------------------------------------------- #
# Pure analysis (no audio stack needed)
# --------------------------------------------------------------------------- #


def _pseudo_speech(seconds: float, seed: int) -> np.ndarray:
    """Noise in four bands, each switched on and off at syllable rate."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    out = np.zeros(n)
    for low, high in BANDS_HZ:
        noise = rng.standard_normal(n)
        spectrum = np.fft.rfft(noise)
        freqs = np.fft.rfftfreq(n, 1 / RATE)
        spectrum[(freqs < low) | (freqs >= high)] = 0
        band = np.fft.irfft(spectrum, n)
        syllables = np.repeat(rng.random(int(seconds * 6) + 1) > 0.4, RATE // 6)[:n]
        out += band * syllables * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t + rng.random() * 6))
    return np.asarray(0.3 * out / np.abs(out).max())


def test_similarity_ignores_offset_gain_and_silence() -> None:
    reference = _pseudo_speech(3.0, seed=1)
    offset = 12345
    captured = np.concatenate([np.zeros(offset), 0.05 * reference, np.zeros(RATE)])
    captured += np.random.default_rng(9).standard_normal(len(captured)) * 1e-4
    score, lag = envelope_similarity(reference, captured, RATE)
    assert score > 0.99
    assert abs(lag - offset) <= 0.0025 * RATE  # 2.5 ms lag resolution

    other = _pseudo_speech(3.0, seed=2)
    assert envelope_similarity(other, captured, RATE)[0] < SIMILARITY_THRESHOLD
    assert envelope_similarity(reference, np.zeros(3 * RATE), RATE) == (0.0, 0)


def test_similarity_handles_other_capture_rate() -> None:
    reference = _pseudo_speech(3.0, seed=3)
    at_48k = np.repeat(reference, 3)  # crude 3x upsampling; envelopes do not care
    score, lag = envelope_similarity(reference, np.concatenate([np.zeros(4800), at_48k]), RATE, captured_rate=48000)
    assert score > 0.98
    assert abs(lag - 4800) <= 0.0025 * 48000


# --------------------------------------------------------------------------- #
# Real audio path
# --------------------------------------------------------------------------- #


@pytest.mark.audio
def test_pulse_server_is_private_and_answers(pulse: PulseServer) -> None:
    assert pulse.is_answering()
    assert pulse.sinks() == [SINK_NAME]
    assert MONITOR_SOURCE in pulse.sources()
    env = pulse.env(source=MONITOR_SOURCE)
    assert env["PULSE_SERVER"] == f"unix:{pulse.socket_path}"
    assert env["PULSE_SOURCE"] == "counter.monitor"
    assert str(pulse.socket_path).startswith("/tmp/cs-pulse-")


@pytest.mark.audio
def test_played_speech_is_captured_through_pulse_device(
    pulse: PulseServer, speech: dict[str, Path], tmp_path: Path
) -> None:
    reference, rate = read_wav(speech["a"])
    captured, cap_rate, capture, play_started = _capture_playback(
        pulse, speech["a"], tmp_path / "capture.wav", _duration(speech["a"]) + MARGIN_SECONDS
    )
    assert cap_rate == rate == RATE
    assert capture.info["device"] == "pulse"
    assert capture.info["overflows"] == 0
    assert contains_speech(captured, cap_rate)

    score, lag = envelope_similarity(reference, captured, rate)
    assert capture.ready_monotonic is not None and capture.ready_frames is not None
    expected_lag = capture.ready_frames + (play_started - capture.ready_monotonic) * cap_rate
    print(
        f"\nmatch score={score:.4f} lag={lag} samples ({lag / cap_rate * 1000:.1f} ms), "
        f"lag - clock estimate = {(lag - expected_lag) / cap_rate * 1000:+.1f} ms"
    )
    assert score >= SIMILARITY_THRESHOLD
    assert 0 <= lag <= 0.5 * cap_rate

    # (b) the same capture must NOT match unrelated references.
    unrelated = {
        "other sentence": read_wav(speech["b"])[0],
        "white noise": white_noise(3.0, RATE, seed=7),
    }
    for name, other in unrelated.items():
        other_score, _ = envelope_similarity(other, captured, rate)
        print(f"{name}: score={other_score:.4f}")
        assert other_score < SIMILARITY_THRESHOLD, name


@pytest.mark.audio
def test_capture_of_unrelated_playback_is_rejected(pulse: PulseServer, speech: dict[str, Path], tmp_path: Path) -> None:
    reference_a, rate = read_wav(speech["a"])
    reference_b, _ = read_wav(speech["b"])
    captured, _, _, _ = _capture_playback(
        pulse, speech["b"], tmp_path / "capture_b.wav", _duration(speech["b"]) + MARGIN_SECONDS
    )
    wrong, _ = envelope_similarity(reference_a, captured, rate)
    right, _ = envelope_similarity(reference_b, captured, rate)
    print(f"\nplayed B: score vs A={wrong:.4f}, vs B={right:.4f}")
    assert wrong < SIMILARITY_THRESHOLD
    assert right >= SIMILARITY_THRESHOLD  # and the capture itself was fine


@pytest.mark.audio
def test_silent_capture_is_rejected(pulse: PulseServer, speech: dict[str, Path], tmp_path: Path) -> None:
    reference, rate = read_wav(speech["a"])
    captured, cap_rate, _, _ = _capture_playback(pulse, None, tmp_path / "silence.wav", 0.6)
    assert len(captured) >= 0.6 * cap_rate
    assert not contains_speech(captured, cap_rate)
    score, _ = envelope_similarity(reference, captured, rate)
    print(f"\nsilence: score={score:.4f}")
    assert score < SIMILARITY_THRESHOLD


@pytest.mark.audio
def test_in_process_capture_after_portaudio_reinitialisation(
    pulse: PulseServer, speech: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """sounddevice in *this* process: set the env, then re-scan PortAudio devices."""
    sd = pytest.importorskip("sounddevice")
    reference, rate = read_wav(speech["a"])
    seconds = _duration(speech["a"]) + MARGIN_SECONDS
    for name, value in pulse.pulse_vars(source=pulse.monitor_source).items():
        monkeypatch.setenv(name, value)
    try:
        reinitialise_portaudio()
        chunks: list[np.ndarray] = []
        with sd.InputStream(device="pulse", samplerate=RATE, channels=1, dtype="int16", blocksize=160) as stream:
            chunks.append(stream.read(160)[0].copy())  # flowing before we play
            player = play_into_sink(pulse, speech["a"])
            try:
                while sum(len(c) for c in chunks) < seconds * RATE:
                    chunks.append(stream.read(1600)[0].copy())
            finally:
                assert player.wait(timeout=10) == 0
    finally:
        monkeypatch.undo()
        reinitialise_portaudio()  # forget the private server's devices again
    captured = np.concatenate(chunks)[:, 0]
    score, lag = envelope_similarity(reference, captured, rate)
    print(f"\nin-process: score={score:.4f} lag={lag / RATE * 1000:.1f} ms")
    assert score >= SIMILARITY_THRESHOLD
