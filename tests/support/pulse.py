"""A private PulseAudio daemon with a null sink, for tests of the real audio path.

Typical use, with :mod:`tests.support.sounds`, :mod:`tests.support.capture_process`
and :mod:`tests.support.similarity` (see ``tests/e2e/test_audio_harness.py``)::

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
PortAudio device ``"pulse"`` (why a fresh process: :mod:`tests.support.capture_process`).

Gotchas verified on this machine (PulseAudio 16.1, PortAudio via ALSA, root, no bus):

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
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

__all__ = [
    "CAPTURE_RATE",
    "MONITOR_SOURCE",
    "SINK_NAME",
    "PulseAudioError",
    "PulseServer",
    "require_program",
    "start_pulseaudio",
]

SINK_NAME = "counter"
"""Name of the null sink the harness creates; play into it."""

MONITOR_SOURCE = f"{SINK_NAME}.monitor"
"""The sink's monitor source; record from it (``PULSE_SOURCE``)."""

CAPTURE_RATE = 16000
"""Default sample rate for speech WAVs, the null sink and captures."""

_PULSE_VARS = (
    "PULSE_SERVER",
    "PULSE_SOURCE",
    "PULSE_SINK",
    "PULSE_COOKIE",
    "PULSE_RUNTIME_PATH",
    "PULSE_STATE_PATH",
)


class PulseAudioError(RuntimeError):
    """The private PulseAudio daemon could not be started or used."""


def require_program(binary: str) -> str:
    """The path of ``binary`` on PATH; PulseAudioError if it is not installed."""
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
        cmd = [require_program("pactl"), f"--server={self.server_address}", *args]
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
        require_program("pulseaudio")
        require_program("pactl")
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
            require_program("pulseaudio"),
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
