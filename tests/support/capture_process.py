"""Capturing through sounddevice / PortAudio in a fresh subprocess.

PortAudio lists the ALSA ``"pulse"`` (and ``"default"``) device only if the
PulseAudio server was reachable *when PortAudio was initialised* (Pa_Initialize
probes every ALSA PCM). With no reachable server the device list is empty and
sounddevice raises ``ValueError: No input device matching 'pulse'``. So the
process that opens the stream must get ``PULSE_SERVER`` before it imports /
initialises sounddevice, or must call ``sounddevice._terminate()`` followed by
``sounddevice._initialize()`` afterwards (see :func:`reinitialise_portaudio`).
A fresh subprocess (:func:`start_capture`) is the most reliable route.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import numpy as np
import numpy.typing as npt

from tests.support.pulse import CAPTURE_RATE, PulseAudioError, PulseServer
from tests.support.sounds import read_wav

__all__ = ["PORTAUDIO_DEVICE", "CaptureProcess", "reinitialise_portaudio", "start_capture"]

PORTAUDIO_DEVICE = "pulse"
"""sounddevice/PortAudio device name (ALSA ``pcm.pulse`` from libasound2-plugins)."""

_CAPTURE_SCRIPT = r"""
import json, sys, time
import numpy as np
import sounddevice as sd
import soundfile as sf

out, seconds, device, rate, channels, block = sys.argv[1:7]
seconds, rate, channels, block = float(seconds), int(rate), int(channels), int(block)
chunks = []
overflows = 0
with sd.InputStream(device=device, samplerate=rate, channels=channels,
                    dtype="int16", blocksize=block) as stream:
    data, overflowed = stream.read(block)
    ready_at = time.monotonic()
    chunks.append(data.copy())
    got = len(data)
    overflows += int(overflowed)
    print(json.dumps({"event": "ready", "monotonic": ready_at, "frames": got,
                      "latency": stream.latency, "device": sd.query_devices(
                          stream.device, "input")["name"]}), flush=True)
    total = got + round(seconds * rate)
    while got < total:
        data, overflowed = stream.read(min(block, total - got))
        chunks.append(data.copy())
        got += len(data)
        overflows += int(overflowed)
sf.write(out, np.concatenate(chunks), rate, subtype="PCM_16")
print(json.dumps({"event": "done", "frames": got, "overflows": overflows}), flush=True)
"""


class CaptureProcess:
    """A fresh ``python -c`` process recording a PortAudio device into a WAV.

    A fresh process sees ``PULSE_SERVER`` before PortAudio initialises, which is
    the reliable way to get the ``"pulse"`` device. After :meth:`wait_ready`,
    ``ready_monotonic`` is the ``time.monotonic()`` (same clock in every process
    on Linux) at which ``ready_frames`` samples had been read.
    """

    def __init__(
        self,
        server: PulseServer,
        out_wav: Path,
        seconds: float,
        *,
        source: str | None = None,
        device: str = PORTAUDIO_DEVICE,
        samplerate: int = CAPTURE_RATE,
        channels: int = 1,
        blocksize: int = 160,
    ) -> None:
        self.out_wav = Path(out_wav)
        self.seconds = seconds
        self.samplerate = samplerate
        self.ready_monotonic: float | None = None
        self.ready_frames: int | None = None
        self.info: dict[str, Any] = {}
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._stderr_lines: list[str] = []
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                _CAPTURE_SCRIPT,
                str(self.out_wav),
                str(seconds),
                device,
                str(samplerate),
                str(channels),
                str(blocksize),
            ],
            env=server.env(source=source or server.monitor_source),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
        )
        self._readers = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._stderr_lines.append(line)

    def _stderr(self) -> str:
        for reader in self._readers:
            reader.join(timeout=2.0)
        return "".join(self._stderr_lines).strip()

    def _next_event(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.kill()
                raise PulseAudioError(f"capture produced no event in {timeout:.1f}s")
            try:
                line = self._lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                code = self.proc.wait()
                stderr = self._stderr()
                self._close_pipes()
                raise PulseAudioError(f"capture process exited ({code}):\n{stderr}")
            try:
                event: dict[str, Any] = json.loads(line)
            except json.JSONDecodeError:
                continue
            return event

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Block until the stream delivered its first block (includes Python + PortAudio start)."""
        if self.ready_monotonic is not None:
            return
        event = self._next_event(timeout)
        if event.get("event") != "ready":
            raise PulseAudioError(f"unexpected capture event {event}")
        self.ready_monotonic = float(event["monotonic"])
        self.ready_frames = int(event["frames"])
        self.info.update(event)

    def wait(self, timeout: float | None = None) -> tuple[npt.NDArray[np.int16], int]:
        """Wait for the capture to finish (default limit: its duration + 30 s); return (samples, rate)."""
        if timeout is None:
            timeout = self.seconds + 30.0
        self.wait_ready(timeout)
        event = self._next_event(timeout)
        self.info.update(event)
        self.proc.wait(timeout=timeout)
        stderr = self._stderr()
        self._close_pipes()
        if self.proc.returncode != 0:
            raise PulseAudioError(f"capture failed ({self.proc.returncode}):\n{stderr}")
        data, rate = read_wav(self.out_wav)
        return data.astype(np.int16), rate

    def _close_pipes(self) -> None:
        for reader in self._readers:
            reader.join(timeout=2.0)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None and not pipe.closed:
                pipe.close()

    def kill(self) -> None:
        """Kill the capture if still running and release its pipes (idempotent)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._close_pipes()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.kill()


def start_capture(
    server: PulseServer,
    out_wav: Path,
    seconds: float,
    *,
    source: str | None = None,
    device: str = PORTAUDIO_DEVICE,
    samplerate: int = CAPTURE_RATE,
    channels: int = 1,
) -> CaptureProcess:
    """Record ``seconds`` (after the stream is ready) from ``source`` via sounddevice.

    Runs ``sounddevice.InputStream(device="pulse", samplerate, channels,
    dtype="int16")`` in a fresh interpreter with ``server.env(source=...)``.
    Call :meth:`CaptureProcess.wait_ready` before playing anything.
    """
    return CaptureProcess(
        server,
        out_wav,
        seconds,
        source=source,
        device=device,
        samplerate=samplerate,
        channels=channels,
    )


def reinitialise_portaudio(environ: Mapping[str, str] | None = None) -> None:
    """Re-scan PortAudio devices in *this* process after (optionally) updating ``os.environ``.

    Needed when sounddevice was imported before the daemon started: PortAudio
    enumerates ALSA devices once at initialisation. Uses sounddevice's private
    ``_terminate``/``_initialize``; all open streams become invalid.
    """
    import sounddevice

    if environ is not None:
        os.environ.update(environ)
    sounddevice._terminate()
    sounddevice._initialize()
