"""Audio sources: a microphone through sounddevice/PortAudio, or a WAV file.

Following python-sounddevice's rec_unlimited.py, the PortAudio callback only
copies each block into a bounded queue and counts status flags; encoding,
encryption and I/O happen in the consumer. Overflows (PortAudio's and a full
queue's) are counted and reported, never hidden.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import soundfile as sf

from evidence.audio import PCM
from recorder.errors import AudioDeviceError

BLOCK_SECONDS = 0.1
QUEUE_SECONDS = 60  # a minute of audio may pile up behind a slow disk before blocks are lost
# PulseAudio's idle monitor can take ~2 s to deliver a new stream's first block (tests/support/pulse.py).
START_TIMEOUT = 4.0
# Peak (int16 units) at or below which a window counts as digital silence: a live microphone's
# noise floor is well above it, a dead, muted or disconnected input delivers zeros.
SILENCE_PEAK = 2


def peak_of(block: Any) -> int:
    """The block's largest magnitude (int16 -32768 has no int16 absolute value, hence max/min)."""
    if len(block) == 0:
        return 0
    return max(int(block.max()), -int(block.min()))


class Source(Protocol):
    sample_rate: int
    channels: int

    def blocks(self) -> Iterator[PCM]:
        """Blocks of int16 frames, shape (n, channels), until stop() or the end."""

    def stop(self) -> None: ...

    def problems(self) -> dict[str, int]:
        """Counters of lost or damaged input (empty when nothing went wrong)."""


@dataclass
class DeviceSource:
    sample_rate: int = 16000
    channels: int = 1
    device: str | int | None = None
    overflows: int = 0
    dropped_blocks: int = 0
    peak: int = 0  # loudest sample heard since start(), before arm()
    _queue: queue.Queue[PCM] = field(init=False)
    _stopped: bool = False
    _armed: bool = True
    _stream: Any = None
    _flowing: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._queue = queue.Queue(maxsize=int(QUEUE_SECONDS / BLOCK_SECONDS))

    def _callback(self, indata: Any, _frames: int, _time: Any, status: Any) -> None:
        self._flowing.set()
        if not self._armed:
            # Started but not armed: nobody has consented yet, so the audio is measured and dropped.
            self.peak = max(self.peak, peak_of(indata))
            return
        if status.input_overflow:
            self.overflows += 1
        try:
            self._queue.put_nowait(indata.copy())
        except queue.Full:
            self.dropped_blocks += 1

    def _describe(self) -> str:
        device = "the default input" if self.device is None else f"input device {self.device!r}"
        return f"{device} at {self.sample_rate} Hz, {self.channels} channel(s)"

    def check(self) -> None:
        """Fail before anything is shown or spooled when the device cannot record as asked."""
        try:
            import sounddevice as sd  # imported here: PortAudio scans devices on import

            sd.check_input_settings(
                device=self.device, channels=self.channels, samplerate=self.sample_rate, dtype="int16"
            )
        except Exception as exc:  # OSError (no PortAudio), sd.PortAudioError, ValueError (no such device)
            raise AudioDeviceError(
                f"{self._describe()}: {exc} (see --input-device, or record a file with --input)"
            ) from None

    def _open(self) -> Any:
        try:
            import sounddevice as sd

            return sd.InputStream(
                samplerate=self.sample_rate,
                channels=self.channels,
                dtype="int16",
                device=self.device,
                blocksize=int(self.sample_rate * BLOCK_SECONDS),
                callback=self._callback,
            )
        except Exception as exc:  # as in check(): the device went away or is busy
            raise AudioDeviceError(f"{self._describe()}: {exc}") from None

    def start(self, timeout: float | None = None) -> None:
        """Open the stream and wait for its first block, before any consent is recorded.

        A device that cannot capture then fails here, so no consent record and no recording
        exist for it. Until arm() the audio is only measured (self.peak) and dropped.
        """
        self._armed = False
        stream = self._open()
        try:
            stream.start()
        except Exception as exc:
            stream.close()
            raise AudioDeviceError(f"{self._describe()}: {exc}") from None
        timeout = START_TIMEOUT if timeout is None else timeout
        if not self._flowing.wait(timeout):
            stream.close()
            raise AudioDeviceError(f"{self._describe()}: no audio arrived within {timeout:.0f} s")
        self._stream = stream

    def arm(self) -> None:
        """Consent is recorded: from now on every block goes to the recording."""
        self._armed = True

    def close(self) -> None:
        """Close a started stream that will not record (the customer objected, staff cancelled)."""
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.close()

    def blocks(self) -> Iterator[PCM]:
        stream, self._stream = self._stream, None
        if stream is None:
            stream = self._open()
            try:
                stream.start()
            except Exception as exc:
                stream.close()
                raise AudioDeviceError(f"{self._describe()}: {exc}") from None
        self.arm()
        try:
            while not self._stopped:
                try:
                    yield self._queue.get(timeout=0.2)
                except queue.Empty:
                    continue
        finally:
            try:
                stream.stop()  # lets PortAudio deliver what it holds; the callback has ended after this
            finally:
                stream.close()
        while not self._queue.empty():  # what PortAudio delivered before the stream closed
            yield self._queue.get_nowait()

    def stop(self) -> None:
        self._stopped = True

    def problems(self) -> dict[str, int]:
        return {
            k: v for k, v in {"input_overflows": self.overflows, "dropped_blocks": self.dropped_blocks}.items() if v
        }


def listen(device: str | int | None, sample_rate: int = 16000, channels: int = 1, window: float = 1.0) -> int:
    """Open the input for `window` seconds of audio and return the peak heard; nothing is kept.

    AudioDeviceError when the device is missing or delivers nothing (the readiness check).
    """
    source = DeviceSource(sample_rate=sample_rate, channels=channels, device=device)
    source.check()
    source.start()
    try:
        time.sleep(window)
    finally:
        source.close()
    return source.peak


@dataclass
class FileSource:
    """Records from a file (phone gateways, tests). --realtime paces it like a live line."""

    path: Path
    realtime: bool = False
    sample_rate: int = field(init=False)
    channels: int = field(init=False)
    _stopped: bool = False

    def __post_init__(self) -> None:
        try:
            info = sf.info(str(self.path))
        except (sf.LibsndfileError, RuntimeError) as exc:
            raise ValueError(f"cannot read {self.path} as audio: {exc}") from exc
        self.sample_rate, self.channels = int(info.samplerate), int(info.channels)

    def blocks(self) -> Iterator[PCM]:
        frames = int(self.sample_rate * BLOCK_SECONDS)
        start = time.monotonic()
        done = 0
        for block in sf.blocks(str(self.path), blocksize=frames, dtype="int16", always_2d=True):
            if self._stopped:
                return
            if self.realtime:
                delay = start + done / self.sample_rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            done += len(block)
            yield np.ascontiguousarray(block)

    def stop(self) -> None:
        self._stopped = True

    def problems(self) -> dict[str, int]:
        return {}
