"""Test sounds: espeak-ng speech, white noise, WAV files, and playing them into the sink."""

from __future__ import annotations

import subprocess
import wave
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from tests.support.pulse import CAPTURE_RATE, PulseAudioError, PulseServer, require_program

__all__ = [
    "play_into_sink",
    "play_into_sink_and_wait",
    "read_wav",
    "speak_to_wav",
    "white_noise",
    "write_wav",
]


def speak_to_wav(
    text: str,
    path: Path,
    voice: str = "en",
    rate_hz: int = CAPTURE_RATE,
    *,
    words_per_minute: int | None = None,
) -> Path:
    """Synthesise ``text`` with espeak-ng into ``path`` as mono 16-bit PCM at ``rate_hz``.

    espeak-ng writes 22.05 kHz; sox resamples (dither disabled, so the output is
    deterministic). Text goes through stdin, so a leading ``-`` is safe.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = path.with_name(f".{path.stem}.espeak.wav")
    cmd = [require_program("espeak-ng"), "-v", voice, "-w", str(raw)]
    if words_per_minute is not None:
        cmd += ["-s", str(words_per_minute)]
    try:
        subprocess.run(
            [*cmd, "--stdin"],
            input=text.encode(),
            check=True,
            capture_output=True,
            timeout=60,
        )
        subprocess.run(
            [
                require_program("sox"),
                "-D",
                str(raw),
                "-r",
                str(rate_hz),
                "-c",
                "1",
                "-b",
                "16",
                "-e",
                "signed-integer",
                str(path),
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
    finally:
        raw.unlink(missing_ok=True)
    return path


def write_wav(path: Path, samples: npt.ArrayLike, rate: int) -> Path:
    """Write mono/multichannel samples as 16-bit PCM WAV (floats are taken as [-1, 1])."""
    data = np.asarray(samples)
    if data.dtype != np.int16:
        data = np.clip(np.round(data.astype(np.float64) * 32767.0), -32768, 32767).astype(np.int16)
    channels = 1 if data.ndim == 1 else int(data.shape[1])
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(channels)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes(np.ascontiguousarray(data).tobytes())
    return Path(path)


def read_wav(path: Path) -> tuple[npt.NDArray[Any], int]:
    """Read a WAV with soundfile; returns (int16 samples, shape (n,) or (n, ch), rate)."""
    import soundfile

    data, rate = soundfile.read(str(path), dtype="int16", always_2d=False)
    return np.asarray(data), int(rate)


def white_noise(
    seconds: float, rate: int = CAPTURE_RATE, level_dbfs: float = -12.0, seed: int = 0
) -> npt.NDArray[np.int16]:
    """Deterministic Gaussian white noise as int16 with the given RMS level."""
    rng = np.random.default_rng(seed)
    amplitude = 10.0 ** (level_dbfs / 20.0)
    noise = rng.standard_normal(round(seconds * rate)) * amplitude
    clipped = np.clip(np.round(noise * 32767.0), -32768, 32767)
    return np.asarray(clipped, dtype=np.int16)


def _paplay_command(server: PulseServer, wav: Path, sink: str | None) -> tuple[list[str], dict[str, str]]:
    device = sink or server.sink_name
    cmd = [require_program("paplay"), f"--device={device}", "--client-name=countersign-harness", str(wav)]
    return cmd, server.env(source=None, sink=device)


def play_into_sink(server: PulseServer, wav: Path, *, sink: str | None = None) -> subprocess.Popen[bytes]:
    """Start ``paplay --device=<sink> wav`` against ``server``; returns immediately.

    Output is discarded (no pipes to leak); call ``wait()`` on the result and
    check ``returncode``, or use :func:`play_into_sink_and_wait` for errors.
    """
    cmd, env = _paplay_command(server, wav, sink)
    return subprocess.Popen(
        cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def play_into_sink_and_wait(
    server: PulseServer,
    wav: Path,
    *,
    sink: str | None = None,
    timeout: float | None = 60.0,
) -> None:
    """Blocking variant of :func:`play_into_sink` (returns when the sink has played it)."""
    cmd, env = _paplay_command(server, wav, sink)
    proc = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise PulseAudioError(f"paplay {wav} failed ({proc.returncode}): {proc.stderr.decode().strip()}")
