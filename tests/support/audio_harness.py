"""Audio test harness: private PulseAudio daemon, espeak speech, capture, similarity.

Typical use (see ``tests/test_audio_harness.py``)::

    with start_pulseaudio() as server:
        wav = speak_to_wav("The quick brown fox", tmp_path / "fox.wav")
        capture = start_capture(server, tmp_path / "cap.wav", seconds=5.0)
        capture.wait_ready()              # stream is flowing before we play
        play_into_sink_and_wait(server, wav)
        captured, rate = capture.wait()
        reference, _ = read_wav(wav)
        score, lag = envelope_similarity(reference, captured, rate)
        assert score >= SIMILARITY_THRESHOLD

To drive a recorder subprocess instead, give it ``server.env(source=MONITOR_SOURCE)``
(a full environment: ``os.environ`` plus the PulseAudio variables) and open the
PortAudio device ``"pulse"``.

Gotchas verified on this machine (PulseAudio 16.1, PortAudio via ALSA, root, no bus):

* PortAudio lists the ALSA ``"pulse"`` (and ``"default"``) device only if the
  PulseAudio server was reachable *when PortAudio was initialised* (Pa_Initialize
  probes every ALSA PCM). With no reachable server the device list is empty and
  sounddevice raises ``ValueError: No input device matching 'pulse'``. So the
  process that opens the stream must get ``PULSE_SERVER`` before it imports /
  initialises sounddevice, or must call ``sounddevice._terminate()`` followed by
  ``sounddevice._initialize()`` afterwards (see :func:`reinitialise_portaudio`).
  A fresh subprocess (:func:`start_capture`) is the most reliable route.
* An idle null sink runs at its maximum latency and renders 2 s ahead; a new
  record stream on its monitor then gets its first data only when that block
  runs out (measured: first callback after up to ~2 s; the audio of that window
  is never delivered, the stream just starts late). The harness keeps a tiny
  ``parec --latency-msec=20`` client on the monitor (``keep_monitor_warm``) and
  suspends/resumes the sink once so the short latency applies immediately: a new
  stream then delivers data within ~0.1-0.3 s of opening. Still, wait until the
  capture (or the recorder under test) is flowing before starting playback.
* Client environment: ``PULSE_SERVER`` alone is enough for the ALSA ``pulse`` /
  ``default`` PCMs (``PULSE_RUNTIME_PATH`` would also do); without
  ``PULSE_COOKIE`` libpulse writes ``~/.config/pulse/cookie`` into the client's
  HOME. ``PULSE_SOURCE`` picks the source (the ALSA plugin opens the default
  source; it is honoured -- ``other.monitor`` recorded silence while
  ``counter.monitor`` had the speech).
* ``--disallow-exit`` makes ``pactl exit`` fail with "Access denied"; the daemon
  is stopped with SIGTERM (it runs as our child process, not daemonised, so
  there are no zombies and no pid-file races).
* The UNIX socket path must stay below ~108 bytes, so the runtime dir is a short
  ``mkdtemp`` under ``/tmp`` rather than a pytest ``tmp_path``.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import wave
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

import numpy as np
import numpy.typing as npt
from scipy import signal as sps

__all__ = [
    "BANDS_HZ",
    "CAPTURE_RATE",
    "HOP_SECONDS",
    "MONITOR_SOURCE",
    "PORTAUDIO_DEVICE",
    "SIMILARITY_THRESHOLD",
    "SINK_NAME",
    "WINDOW_SECONDS",
    "CaptureProcess",
    "PulseAudioError",
    "PulseServer",
    "active_seconds",
    "band_envelopes",
    "contains_speech",
    "envelope_similarity",
    "play_into_sink",
    "play_into_sink_and_wait",
    "read_wav",
    "reinitialise_portaudio",
    "rms_envelope",
    "speak_to_wav",
    "start_capture",
    "start_pulseaudio",
    "white_noise",
    "write_wav",
]

SINK_NAME = "counter"
"""Name of the null sink the harness creates; play into it."""

MONITOR_SOURCE = f"{SINK_NAME}.monitor"
"""The sink's monitor source; record from it (``PULSE_SOURCE``)."""

PORTAUDIO_DEVICE = "pulse"
"""sounddevice/PortAudio device name (ALSA ``pcm.pulse`` from libasound2-plugins)."""

CAPTURE_RATE = 16000
"""Default sample rate for speech WAVs, the null sink and captures."""

HOP_SECONDS = 0.010
"""Hop of the envelopes used by :func:`envelope_similarity` (lag search step)."""

WINDOW_SECONDS = 0.020
"""Window of the envelopes (2-3 pitch periods, so pitch ripple averages out)."""

BANDS_HZ: tuple[tuple[float, float], ...] = ((100.0, 400.0), (400.0, 1000.0), (1000.0, 2000.0), (2000.0, 4000.0))
"""Frequency bands of the envelopes compared by :func:`envelope_similarity`."""

_SUBHOP_PHASES = 4

SIMILARITY_THRESHOLD = 0.80
"""Minimum :func:`envelope_similarity` score meaning "the played audio was captured".

Measured with this harness (espeak-ng voice ``en``, 16 kHz mono, 8 sentences of
2.8-3.9 s each played through the ``counter`` null sink and captured from
``counter.monitor`` with ``sounddevice.InputStream(device="pulse")``; plus 16
more sentences compared offline -- the PulseAudio path is practically transparent,
correlation of raw samples 0.9999999):

=================================================================  =============
reference vs. capture                                              score
=================================================================  =============
same sentence, played + captured through PulseAudio (8)            0.994 - 1.000
  ... plus white noise at 20 / 10 / 3 dB SNR                       >= 0.993 / 0.986 / 0.959
  ... captured at 48 kHz with -26 dB gain / at 8 kHz               >= 0.993 / 0.994
  ... hard-clipped (gain x8)                                       >= 0.900
  ... only the first 60 % of it captured                           1.000
(a) different sentence, played + captured (8 x 7 pairs)            0.22 - 0.38
(a) different sentence, 23 sentences of >= 2.8 s (506 pairs)       max 0.52
(a) different sentence, reference cut to 2.0 s / 1.5 s / 1.0 s     max 0.61 / 0.74 / 0.83
    same text, voice ``en-us`` instead of ``en``                   0.57
(b) white-noise reference vs. speech captures                      <= 0.12
(b) speech reference vs. white noise played + captured             <= 0.28
(b) speech reference vs. noise burst with silence around it        <= 0.30
(c) speech reference vs. silent capture (digital zero)             0.00
(c) speech reference vs. -60 dBFS hiss                             <= 0.12
=================================================================  =============

Genuine captures score >= 0.99 (>= 0.96 even at 3 dB SNR); the worst unrelated
audio with a >= 2 s reference scores 0.61 (different sentences share syllable
rhythm and some phonemes, and the maximum over hundreds of lags inflates chance
correlations). 0.80 sits in the middle of that gap: ~0.19 above the worst
unrelated case and ~0.19 below clean genuine captures, so a resampling, noisy or
clipping recorder still passes while a recorder that captured the wrong thing
fails. References must carry >= 2 s of speech: the 0.6 s word "Yes." matched
unrelated sentences at up to 0.92. Re-measure if you change the envelope
parameters (HOP_SECONDS, WINDOW_SECONDS, BANDS_HZ) or ``min_overlap``.
"""

_PULSE_VARS = (
    "PULSE_SERVER",
    "PULSE_SOURCE",
    "PULSE_SINK",
    "PULSE_COOKIE",
    "PULSE_RUNTIME_PATH",
    "PULSE_STATE_PATH",
)

FloatArray = npt.NDArray[np.float64]


class PulseAudioError(RuntimeError):
    """The private PulseAudio daemon could not be started or used."""


# --------------------------------------------------------------------------- #
# PulseAudio daemon
# --------------------------------------------------------------------------- #


def _require(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        raise PulseAudioError(f"required program {binary!r} not found on PATH")
    return path


@dataclass
class PulseServer:
    """A private PulseAudio daemon with one null sink (default ``counter``).

    Create it with :func:`start_pulseaudio` (already started) or construct it and
    call :meth:`start`; it is a context manager and :meth:`stop` is idempotent.
    Everything (socket, pid file, cookie, state, log) lives in ``directory``
    (default: a fresh ``/tmp/cs-pulse-*``, removed again by :meth:`stop`).
    """

    directory: Path | None = None
    sink_name: str = SINK_NAME
    sink_rate: int = CAPTURE_RATE
    sink_channels: int = 1
    keep_monitor_warm: bool = True
    if_running: Literal["restart", "reuse", "error"] = "restart"
    startup_timeout: float = 10.0

    owns_daemon: bool = field(default=False, init=False)
    _base_dir: Path | None = field(default=None, init=False, repr=False)
    _made_base_dir: bool = field(default=False, init=False, repr=False)
    _daemon: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _keeper: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _loaded_modules: list[str] = field(default_factory=list, init=False, repr=False)

    # -- paths -------------------------------------------------------------- #

    @property
    def base_dir(self) -> Path:
        if self._base_dir is None:
            raise PulseAudioError("PulseServer has not been started")
        return self._base_dir

    @property
    def runtime_path(self) -> Path:
        """``PULSE_RUNTIME_PATH`` of the daemon (socket ``native`` and ``pid``)."""
        return self.base_dir / "runtime"

    @property
    def socket_path(self) -> Path:
        return self.runtime_path / "native"

    @property
    def server_address(self) -> str:
        """Value for ``PULSE_SERVER`` / ``pactl --server``."""
        return f"unix:{self.socket_path}"

    @property
    def cookie_path(self) -> Path:
        return self.base_dir / "cookie"

    @property
    def log_path(self) -> Path:
        return self.base_dir / "pulseaudio.log"

    @property
    def monitor_source(self) -> str:
        return f"{self.sink_name}.monitor"

    # -- environment -------------------------------------------------------- #

    def pulse_vars(self, source: str | None = None, sink: str | None = None) -> dict[str, str]:
        """Only the PulseAudio client variables (no ``os.environ``).

        ``PULSE_SERVER`` is the one that matters: libpulse (and therefore the ALSA
        ``pulse`` plugin used by PortAudio) connects to it. ``PULSE_COOKIE`` keeps
        clients from creating ``~/.config/pulse/cookie`` in the real home (the
        daemon also accepts anonymous clients). ``PULSE_SOURCE`` / ``PULSE_SINK``
        select the default source/sink for clients that do not name a device,
        which is what the ALSA ``pulse`` PCM does.
        """
        result = {
            "PULSE_SERVER": self.server_address,
            "PULSE_COOKIE": str(self.cookie_path),
        }
        if source is not None:
            result["PULSE_SOURCE"] = source
        if sink is not None:
            result["PULSE_SINK"] = sink
        return result

    def env(
        self,
        source: str | None = MONITOR_SOURCE,
        sink: str | None = None,
        *,
        base: Mapping[str, str] | None = None,
    ) -> dict[str, str]:
        """Full environment for a client subprocess (``base`` or ``os.environ`` + PulseAudio).

        Inherited ``PULSE_*`` variables are dropped so a developer's own session
        cannot leak in. ``source`` defaults to this server's monitor when the sink
        has the default name; pass ``source=None`` to leave it unset.
        """
        if source == MONITOR_SOURCE:
            source = self.monitor_source
        environ = dict(os.environ if base is None else base)
        for name in _PULSE_VARS:
            environ.pop(name, None)
        environ.update(self.pulse_vars(source=source, sink=sink))
        return environ

    def _daemon_env(self) -> dict[str, str]:
        base = self.base_dir
        environ = {k: v for k, v in os.environ.items() if k not in _PULSE_VARS}
        for name in ("DISPLAY", "WAYLAND_DISPLAY"):
            environ.pop(name, None)
        environ.update(
            HOME=str(base / "home"),
            XDG_RUNTIME_DIR=str(base),
            XDG_CONFIG_HOME=str(base / "config"),
            PULSE_RUNTIME_PATH=str(self.runtime_path),
            PULSE_STATE_PATH=str(base / "state"),
            # No session bus here; make sure nothing tries to autolaunch one.
            DBUS_SESSION_BUS_ADDRESS="unix:path=/nonexistent/countersign-no-bus",
        )
        return environ

    # -- control ------------------------------------------------------------ #

    def pactl(self, *args: str, timeout: float = 5.0, check: bool = True) -> str:
        """Run ``pactl --server=<ours> ARGS`` and return stdout."""
        cmd = [_require("pactl"), f"--server={self.server_address}", *args]
        proc = subprocess.run(
            cmd,
            env=self.env(source=None),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise PulseAudioError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc.stdout

    def is_answering(self) -> bool:
        """True if ``pactl info`` succeeds on our socket."""
        if not self.socket_path.exists():
            return False
        try:
            self.pactl("info", timeout=2.0, check=True)
        except (PulseAudioError, subprocess.TimeoutExpired):
            return False
        return True

    def sinks(self) -> list[str]:
        return [line.split("\t")[1] for line in self.pactl("list", "short", "sinks").splitlines() if "\t" in line]

    def sources(self) -> list[str]:
        return [line.split("\t")[1] for line in self.pactl("list", "short", "sources").splitlines() if "\t" in line]

    def start(self) -> Self:
        """Start (or attach to) the daemon; returns ``self``. Bounded by ``startup_timeout``."""
        if self._base_dir is not None:
            return self
        _require("pulseaudio")
        _require("pactl")
        if self.directory is not None:
            self._base_dir = Path(self.directory).resolve()
        else:
            # Keep it short: the socket path must fit in sockaddr_un (108 bytes).
            self._base_dir = Path(tempfile.mkdtemp(prefix="cs-pulse-", dir="/tmp"))
            self._made_base_dir = True
        if len(str(self.socket_path)) > 100:
            path = self.socket_path
            self._base_dir = None
            raise PulseAudioError(f"socket path too long for AF_UNIX: {path}")
        for sub in ("home", "config", "state"):
            (self.base_dir / sub).mkdir(parents=True, exist_ok=True)
        self.runtime_path.mkdir(parents=True, exist_ok=True, mode=0o700)
        atexit.register(self.stop)
        try:
            attach = False
            if self.is_answering():
                if self.if_running == "reuse":
                    attach = True
                elif self.if_running == "error":
                    raise PulseAudioError(f"a PulseAudio daemon is already running at {self.socket_path}")
                else:
                    self._kill_existing_daemon()
            if not attach:
                self._spawn_daemon()
            self._ensure_sink()
            if self.keep_monitor_warm:
                self._start_keeper()
        except BaseException:
            self.stop()
            raise
        return self

    def _kill_existing_daemon(self) -> None:
        pid_file = self.runtime_path / "pid"
        try:
            pid = int(pid_file.read_text().strip())
        except (OSError, ValueError) as exc:
            raise PulseAudioError(
                f"a daemon answers at {self.socket_path} but its pid file is unusable: {exc}"
            ) from exc
        for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 3.0)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            deadline = time.monotonic() + wait
            # Poll the socket, not the pid: a daemonised, unreaped pulseaudio
            # lingers as a zombie that os.kill(pid, 0) still reports as alive.
            while time.monotonic() < deadline:
                if not self.is_answering():
                    # After SIGKILL the pid file stays behind, and a zombie pid
                    # would make the new daemon believe it is already running.
                    pid_file.unlink(missing_ok=True)
                    return
                time.sleep(0.05)
        raise PulseAudioError(f"could not stop the existing daemon (pid {pid})")

    def _spawn_daemon(self) -> None:
        sink_args = (
            f"module-null-sink sink_name={self.sink_name} "
            f"rate={self.sink_rate} channels={self.sink_channels} "
            f"sink_properties=device.description=countersign-test-sink"
        )
        cmd = [
            _require("pulseaudio"),
            "--daemonize=no",
            "--system=false",
            "--disallow-exit",
            "--exit-idle-time=-1",
            "--realtime=no",
            "--high-priority=no",
            "--use-pid-file=yes",
            "--fail=yes",
            f"--log-target=file:{self.log_path}",
            "--log-level=notice",
            "-n",
            f"--load={sink_args}",
            f"--load=module-native-protocol-unix auth-anonymous=1 auth-cookie={self.cookie_path}",
            "--load=module-always-sink",
        ]
        self._daemon = subprocess.Popen(
            cmd,
            env=self._daemon_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C aimed at pytest must not kill it mid-test
        )
        self.owns_daemon = True
        deadline = time.monotonic() + self.startup_timeout
        while True:
            code = self._daemon.poll()
            if code is not None:
                raise PulseAudioError(f"pulseaudio exited with status {code} during startup:\n{self._log_tail()}")
            if self.is_answering():
                return
            if time.monotonic() > deadline:
                raise PulseAudioError(
                    f"pulseaudio did not answer `pactl info` within {self.startup_timeout:.1f}s"
                    f" at {self.socket_path}:\n{self._log_tail()}"
                )
            time.sleep(0.02)

    def _ensure_sink(self) -> None:
        if self.sink_name in self.sinks():
            return
        if self.owns_daemon:
            raise PulseAudioError(f"pulseaudio started without sink {self.sink_name!r}:\n{self._log_tail()}")
        # Attached to a foreign daemon (if_running="reuse"): add our sink to it.
        index = self.pactl(
            "load-module",
            "module-null-sink",
            f"sink_name={self.sink_name}",
            f"rate={self.sink_rate}",
            f"channels={self.sink_channels}",
        ).strip()
        self._loaded_modules.append(index)
        if self.sink_name not in self.sinks():
            raise PulseAudioError(f"could not create null sink {self.sink_name!r}")

    def _start_keeper(self) -> None:
        parec = shutil.which("parec")
        if parec is None:
            return
        name = "countersign-harness-keepwarm"
        self._keeper = subprocess.Popen(
            [
                parec,
                f"--device={self.monitor_source}",
                "--latency-msec=20",
                f"--rate={self.sink_rate}",
                f"--channels={self.sink_channels}",
                "--format=s16le",
                "--raw",
                f"--client-name={name}",
            ],
            env=self.env(source=None),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + self.startup_timeout
        while name not in self.pactl("list", "source-outputs"):
            if self._keeper.poll() is not None:
                raise PulseAudioError(f"parec (keep-warm client) exited with {self._keeper.returncode}")
            if time.monotonic() > deadline:
                raise PulseAudioError("parec (keep-warm client) did not connect")
            time.sleep(0.01)
        # The idle null sink had already rendered up to 2 s ahead with its maximum
        # latency; until that block runs out no new record stream gets any data
        # (measured: first callback after ~1.9 s, the audio of that window is simply
        # never delivered). A suspend/resume cycle restarts the sink's clock so the
        # keeper's 20 ms latency applies at once.
        self.pactl("suspend-sink", self.sink_name, "1")
        self.pactl("suspend-sink", self.sink_name, "0")

    def _log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no pulseaudio log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """Stop the keeper and (if we started it) the daemon; remove our temp dir."""
        atexit.unregister(self.stop)
        for proc in (self._keeper, self._daemon):
            if proc is None or proc.poll() is not None:
                continue
            proc.terminate()
            try:
                proc.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5.0)
        self._keeper = None
        if self._daemon is None and self._loaded_modules and self.is_answering():
            for index in self._loaded_modules:
                self.pactl("unload-module", index, check=False)
        self._loaded_modules.clear()
        self._daemon = None
        self.owns_daemon = False
        if self._made_base_dir and self._base_dir is not None:
            shutil.rmtree(self._base_dir, ignore_errors=True)
            self._made_base_dir = False
        self._base_dir = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start_pulseaudio(
    *,
    sink_name: str = SINK_NAME,
    sink_rate: int = CAPTURE_RATE,
    sink_channels: int = 1,
    directory: Path | None = None,
    keep_monitor_warm: bool = True,
    if_running: Literal["restart", "reuse", "error"] = "restart",
    startup_timeout: float = 10.0,
) -> PulseServer:
    """Start a private PulseAudio daemon and return it (already running).

    Use as ``with start_pulseaudio() as server: ...`` or call ``server.stop()``.
    ``directory`` (socket in ``<directory>/runtime/native``, plus pid file, cookie,
    log, HOME/state of the daemon) defaults to a fresh ``/tmp/cs-pulse-*``
    directory that is removed on stop. When a daemon already answers there,
    ``if_running`` chooses: ``"restart"`` (SIGTERM it via its pid file and start
    ours), ``"reuse"`` (attach, add the sink if missing, never kill it) or
    ``"error"``. Startup normally takes ~40 ms; ``startup_timeout`` bounds it.
    """
    server = PulseServer(
        directory=directory,
        sink_name=sink_name,
        sink_rate=sink_rate,
        sink_channels=sink_channels,
        keep_monitor_warm=keep_monitor_warm,
        if_running=if_running,
        startup_timeout=startup_timeout,
    )
    return server.start()


# --------------------------------------------------------------------------- #
# Generating and playing audio
# --------------------------------------------------------------------------- #


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
    cmd = [_require("espeak-ng"), "-v", voice, "-w", str(raw)]
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
                _require("sox"),
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
    cmd = [_require("paplay"), f"--device={device}", "--client-name=countersign-harness", str(wav)]
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


# --------------------------------------------------------------------------- #
# Capturing through sounddevice / PortAudio
# --------------------------------------------------------------------------- #

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


# --------------------------------------------------------------------------- #
# Analysis
# --------------------------------------------------------------------------- #


def _to_mono_float(samples: npt.ArrayLike) -> FloatArray:
    """Mono float64 in [-1, 1] for integer input (full scale = 1.0 for floats)."""
    data = np.asarray(samples)
    if np.issubdtype(data.dtype, np.integer):
        scale = float(np.iinfo(data.dtype).max) + 1.0
        out = data.astype(np.float64) / scale
    else:
        out = data.astype(np.float64)
    if out.ndim == 2:
        out = out.mean(axis=1)
    elif out.ndim != 1:
        raise ValueError(f"expected 1-D or 2-D samples, got shape {data.shape}")
    return out


def rms_envelope(
    samples: npt.ArrayLike,
    rate: int,
    hop_seconds: float = HOP_SECONDS,
    window_seconds: float = WINDOW_SECONDS,
    offset: int = 0,
) -> FloatArray:
    """Sliding RMS of the mono, DC-removed signal: one value per ``hop_seconds``.

    Value ``j`` covers samples ``[offset + j*hop, offset + j*hop + window)``. A
    20 ms window spans 2-3 pitch periods, so the envelope follows syllables, not
    the glottal pulses.
    """
    data = _to_mono_float(samples)
    hop = max(1, round(rate * hop_seconds))
    window = max(1, round(rate * window_seconds))
    if len(data) == 0:
        return np.zeros(0, dtype=np.float64)
    data = data - data.mean()
    energy = np.concatenate(([0.0], np.cumsum(data * data)))
    starts = np.arange(offset, len(data) - window + 1, hop)
    if len(starts) == 0:
        return np.zeros(0, dtype=np.float64)
    mean_square = np.maximum((energy[starts + window] - energy[starts]) / window, 0.0)
    return np.asarray(np.sqrt(mean_square), dtype=np.float64)


def band_envelopes(
    samples: npt.ArrayLike,
    rate: int,
    offset: int = 0,
    bands: tuple[tuple[float, float], ...] = BANDS_HZ,
) -> FloatArray:
    """Per-band amplitude envelopes, shape ``(len(bands), frames)``.

    Hann-windowed 20 ms frames every 10 ms starting at sample ``offset``; each
    value is the square root of the band's spectral energy. Bands without any
    FFT bin below Nyquist come out as zeros (and are ignored by the similarity).
    """
    data = _to_mono_float(samples)
    hop = max(1, round(rate * HOP_SECONDS))
    window = max(2, round(rate * WINDOW_SECONDS))
    starts = np.arange(offset, len(data) - window + 1, hop)
    if len(starts) == 0:
        return np.zeros((len(bands), 0), dtype=np.float64)
    data = data - data.mean()
    frames = np.lib.stride_tricks.sliding_window_view(data, window)[starts] * np.hanning(window)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    freqs = np.fft.rfftfreq(window, 1.0 / rate)
    rows = [np.sqrt(power[:, (freqs >= low) & (freqs < high)].sum(axis=1)) for low, high in bands]
    return np.asarray(rows, dtype=np.float64).reshape(len(bands), len(starts))


def _zscore(values: FloatArray) -> FloatArray | None:
    std = float(values.std()) if len(values) else 0.0
    if len(values) < 2 or std <= 1e-12 * max(1.0, float(np.abs(values).max())):
        return None
    return np.asarray((values - values.mean()) / std, dtype=np.float64)


def _local_ncc_curve(a: FloatArray, b: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Pearson(a[i], b[i + k]) over the overlap for every lag k = -(len(a)-1) .. len(b)-1.

    Returns ``(corr, overlap)``; ``corr`` is 0 where either side is constant.
    """
    n_a, n_b = len(a), len(b)
    lags = np.arange(-(n_a - 1), n_b)
    lo = np.maximum(0, -lags)  # first index of a in the overlap
    hi = np.minimum(n_a, n_b - lags)  # one past the last index of a
    count = (hi - lo).astype(np.float64)
    cum_a = np.concatenate(([0.0], np.cumsum(a)))
    cum_a2 = np.concatenate(([0.0], np.cumsum(a * a)))
    cum_b = np.concatenate(([0.0], np.cumsum(b)))
    cum_b2 = np.concatenate(([0.0], np.cumsum(b * b)))
    sum_a = cum_a[hi] - cum_a[lo]
    sum_a2 = cum_a2[hi] - cum_a2[lo]
    sum_b = cum_b[hi + lags] - cum_b[lo + lags]
    sum_b2 = cum_b2[hi + lags] - cum_b2[lo + lags]
    # correlate(b, a, "full")[k + n_a - 1] == sum_i a[i] * b[i + k]
    sum_ab = sps.correlate(b, a, mode="full", method="auto")
    cov = count * sum_ab - sum_a * sum_b
    var_a = count * sum_a2 - sum_a * sum_a
    var_b = count * sum_b2 - sum_b * sum_b
    floor = 1e-9 * count * count  # inputs are z-scored, so this means "constant"
    ok = (var_a > floor) & (var_b > floor)
    corr = np.where(ok, cov / np.sqrt(np.where(ok, var_a * var_b, 1.0)), 0.0)
    return np.asarray(corr, dtype=np.float64), count


def envelope_similarity(
    reference: npt.ArrayLike,
    captured: npt.ArrayLike,
    rate: int,
    *,
    captured_rate: int | None = None,
    min_overlap: float = 0.5,
) -> tuple[float, int]:
    """How well ``captured`` contains ``reference``: ``(peak correlation, lag in samples)``.

    Method: both signals become amplitude envelopes in four bands (100-400,
    400-1000, 1000-2000, 2000-4000 Hz; 20 ms Hann frames every 10 ms, see
    :func:`band_envelopes`). Envelopes ignore waveform phase, so resampling and
    a different capture rate do not matter (pass ``captured_rate``; >= 8 kHz
    keeps all bands). For every lag, each band's Pearson correlation is computed
    over the *overlapping* frames only (both sides standardised within the
    overlap -- a normalised cross-correlation with local normalisation) and the
    band correlations are averaged. The captured side is evaluated at 4 sub-hop
    phases (2.5 ms apart), keeping the best, so frame misalignment costs < 0.005.
    The score is therefore

    * independent of gain, even per band (each window is standardised),
    * independent of leading/trailing silence or extra audio in the capture
      (frames outside the overlap do not enter the statistics), and
    * independent of the unknown start offset (all lags are searched).

    Four bands instead of one broadband envelope track *which* sounds occur, not
    only the syllable rhythm; that halves chance matches between different
    sentences (see :data:`SIMILARITY_THRESHOLD`). It measures "is this the same
    audio", not "the same words": the same text in another espeak voice scores
    ~0.57.

    Lags whose overlap is shorter than ``min_overlap`` x the shorter envelope are
    ignored: a capture that cut off part of the reference still matches, while
    tiny overlaps cannot produce chance correlations. Digital silence scores 0.
    Use references with >= 2 s of speech: shorter templates find chance matches
    somewhere in a long capture (1 s excerpts reach 0.83 against unrelated
    sentences).

    Returns ``(score, lag)``: ``score`` in [-1, 1] -- compare with
    :data:`SIMILARITY_THRESHOLD` -- and ``lag``, the position in ``captured``
    (captured samples, 2.5 ms resolution) where the reference starts; negative if
    the capture began after the reference did.
    """
    cap_rate = rate if captured_rate is None else captured_rate
    ref_env = band_envelopes(reference, rate)
    ref_z = [_zscore(row) for row in ref_env]
    n_ref = ref_env.shape[1]
    hop = max(1, round(cap_rate * HOP_SECONDS))
    best_score, best_lag, found = 0.0, 0, False
    for phase in range(_SUBHOP_PHASES):
        offset = phase * hop // _SUBHOP_PHASES
        cap_env = band_envelopes(captured, cap_rate, offset=offset)
        n_cap = cap_env.shape[1]
        curves: list[FloatArray] = []
        count: FloatArray | None = None
        for a, row in zip(ref_z, cap_env, strict=True):
            b = _zscore(row)
            if a is None or b is None:
                continue
            curve, count = _local_ncc_curve(a, b)
            curves.append(curve)
        if not curves or count is None:
            continue
        mean_curve = np.mean(curves, axis=0)
        valid = count >= max(2.0, min_overlap * min(n_ref, n_cap))
        if not np.any(valid):
            continue
        mean_curve = np.where(valid, mean_curve, -np.inf)
        index = int(np.argmax(mean_curve))
        score = float(np.clip(mean_curve[index], -1.0, 1.0))
        if not found or score > best_score:
            lag_frames = index - (n_ref - 1)
            best_score, best_lag, found = score, offset + lag_frames * hop, True
    return best_score, best_lag


def _level_dbfs(samples: npt.ArrayLike, rate: int) -> FloatArray:
    env = rms_envelope(samples, rate)
    return np.asarray(20.0 * np.log10(np.maximum(env, 1e-12)), dtype=np.float64)


def active_seconds(samples: npt.ArrayLike, rate: int, threshold_dbfs: float = -45.0) -> float:
    """Seconds (10 ms hops) whose 20 ms RMS exceeds ``threshold_dbfs`` (0 dBFS = full scale)."""
    level = _level_dbfs(samples, rate)
    return float(np.count_nonzero(level > threshold_dbfs)) * HOP_SECONDS


def contains_speech(
    samples: npt.ArrayLike,
    rate: int,
    *,
    threshold_dbfs: float = -45.0,
    min_active_seconds: float = 0.2,
    min_modulation_db: float = 4.0,
) -> bool:
    """Cheap "is there speech-like sound?" check (energy + modulation, not a real VAD).

    True when at least ``min_active_seconds`` of envelope frames are above
    ``threshold_dbfs`` *and* the level of those frames varies (std >=
    ``min_modulation_db`` dB) the way syllables do. Measured: espeak-ng speech
    captured through PulseAudio has a 6-9 dB spread, stationary white noise
    ~0.5 dB, and a silent capture (digital zero) has no active frames.
    """
    level = _level_dbfs(samples, rate)
    active = level[level > threshold_dbfs]
    if len(active) * HOP_SECONDS < min_active_seconds:
        return False
    return float(active.std()) >= min_modulation_db
