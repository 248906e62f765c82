"""The counter agent's state machine: idle -> notice -> recording -> stopped (-> idle).

It reuses the CLI's parts: DeviceSource (started, and heard, before any consent record
exists), LiveRecording, recorder.runner.run and UploadThread for the live recording, and a
SyncLoop for everything else in the spool. The web page only reads snapshot() and calls
the transition methods; every transition checks the state it starts from, so a double tap
or a stale page cannot start two recordings or stop one that is not running.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from consent.catalogue import Notice, pick
from consent.records import ConsentRecord
from recorder import prompt
from recorder.capture import SILENCE_PEAK, DeviceSource
from recorder.client import DeviceClient, NotFound
from recorder.errors import NoticeAudioError, RecorderError, ServerRefused, ServerUnreachable
from recorder.home import DeviceHome
from recorder.kiosk import readiness
from recorder.kiosk.alerts import HelpAlert
from recorder.kiosk.readiness import FAIL, Check
from recorder.kiosk.sync import SyncLoop
from recorder.notice_audio import refresh_notices
from recorder.recording import LiveRecording, record_objection
from recorder.runner import Controls, RunSummary, run
from recorder.spool import Spool
from recorder.uploader import UploadThread

IDLE, NOTICE, RECORDING, STOPPED = "idle", "notice", "recording", "stopped"
LANGUAGES = ("ja", "en")
NOTICE_REFRESH_SECONDS = 60.0  # notices and their readings, fetched while idle and the server answers
# Used only while the service cannot be asked for its site's list (GET DEVICE_SETTINGS).
FALLBACK_CATEGORIES = [
    {"code": "harassment", "ja": "カスタマーハラスメント", "en": "Customer harassment"},
    {"code": "threat", "ja": "脅迫・威圧", "en": "Threat or intimidation"},
    {"code": "violence", "ja": "暴力", "en": "Violence"},
    {"code": "other", "ja": "その他", "en": "Other"},
]


class Refused(Exception):
    """A transition that is not possible now; its ja/en text is shown on the page."""

    def __init__(self, ja: str, en: str) -> None:
        super().__init__(en)
        self.ja, self.en = ja, en


@dataclass
class AgentConfig:
    home: Path
    input_device: str | int | None = None
    output_device: str | int | None = None
    sample_rate: int = 16000
    channels: int = 1
    segment_seconds: float = 5.0
    spool_max_bytes: int = 1024 * 1024 * 1024
    staff_code: str = "counter"
    readiness_seconds: float = 10.0  # server, key and spool checks while idle
    microphone_seconds: float = 15.0  # the input is opened for a short window this often while idle
    microphone_window: float = 1.0
    upload_wait: float = 10.0  # after Stop, how long the live upload may finish before the sync loop takes over


@dataclass
class Agent:
    config: AgentConfig
    report: Callable[[str], None] = print
    state: str = IDLE
    checks: dict[str, Check] = field(default_factory=dict)
    checked_at: str | None = None
    message: dict[str, str] | None = None
    categories: list[dict[str, str]] = field(default_factory=lambda: list(FALLBACK_CATEGORIES))
    incident_alerts: bool = False
    alerts: dict[str, HelpAlert] = field(default_factory=dict)  # kind -> the latest alert of that kind
    last: dict[str, Any] | None = None
    skew_seconds: float | None = None
    # How begin() gets its input; tests put a scripted source here.
    source_factory: Callable[[AgentConfig], DeviceSource] | None = None
    _lock: threading.RLock = field(default_factory=threading.RLock)
    _mic_lock: threading.Lock = field(default_factory=threading.Lock)
    _recheck: threading.Event = field(default_factory=threading.Event)
    _stopping: threading.Event = field(default_factory=threading.Event)
    _source: DeviceSource | None = None
    _notice: Notice | None = None
    _presented_at: datetime | None = None
    _spoken: str = "no"  # no | playing | done | failed
    _live: LiveRecording | None = None
    _controls: Controls | None = None
    _uploader: UploadThread | None = None
    _started_at: float = 0.0
    _incident: str | None = None
    _notices_at: float = -NOTICE_REFRESH_SECONDS

    def __post_init__(self) -> None:
        self.home = DeviceHome(self.config.home)
        self.device_config = self.home.config()  # NotEnrolled: the CLI prints it and exits
        self.client = DeviceClient.for_home(self.home, self.device_config)
        self.sync = SyncLoop(self.client, self.spool, self.report)

    # ------------------------------------------------------------------ lifecycle

    def spool(self) -> Spool:
        return Spool(self.home.spool_dir, self.config.spool_max_bytes)

    def start(self) -> None:
        self.sync.start()
        threading.Thread(target=self._readiness_loop, name="kiosk-readiness", daemon=True).start()

    def shutdown(self) -> None:
        """SIGTERM: a running recording is closed cleanly (final segment), then uploads stop."""
        self._stopping.set()
        self._recheck.set()
        with self._lock:
            if self.state == RECORDING:
                self._request_stop("agent shutting down")
            elif self.state == NOTICE:
                self._abandon_notice()
        thread = getattr(self, "_run_thread", None)
        if thread is not None:
            thread.join(30)
        for alert in self.alerts.values():
            alert.cancel()
        self.sync.stop()
        self.client.close()

    # ------------------------------------------------------------------ readiness

    def recheck(self) -> None:
        self._recheck.set()

    def _readiness_loop(self) -> None:
        next_mic = 0.0
        while not self._stopping.is_set():
            if self.state in (IDLE, STOPPED):
                now = time.monotonic()
                self.refresh_checks(microphone=now >= next_mic or self._recheck.is_set())
                if now >= next_mic:
                    next_mic = now + self.config.microphone_seconds
            else:
                self._heartbeat_only()
            self._recheck.clear()
            self._recheck.wait(self.config.readiness_seconds if self.state == IDLE else 3.0)

    def refresh_checks(self, microphone: bool = True) -> None:
        cfg = self.config
        found: dict[str, Check] = {}
        if microphone:
            with self._mic_lock:
                if self.state not in (IDLE, STOPPED):
                    return  # Start won the race: the input is in use now
                found["microphone"] = readiness.microphone(
                    cfg.input_device, cfg.sample_rate, cfg.channels, cfg.microphone_window
                )
        notices = self._notices()
        has_audio = any(prompt.notice_audio(cfg.home, n) is not None for n in notices)
        found["speaker"] = readiness.speaker(cfg.output_device, has_audio)
        server, reply = readiness.server(self.client, self.spool())
        found["server"] = server
        self.sync.note_online(server.state == readiness.OK)
        if reply is not None and isinstance(reply.get("skew_seconds"), int | float):
            self.skew_seconds = float(reply["skew_seconds"])
        if server.state == readiness.OK:
            self._refresh_settings()
            if time.monotonic() - self._notices_at >= NOTICE_REFRESH_SECONDS:
                # A new notice version or reading an admin provisioned reaches the counter here.
                refresh_notices(self.home, self.client, self.report)
                self._notices_at = time.monotonic()
        found["key"] = readiness.evidence_key(self.home, self.client)
        found["spool"] = readiness.spool_space(self.spool(), cfg.sample_rate, cfg.channels)
        with self._lock:
            self.checks.update(found)
            self.checked_at = datetime.now(UTC).isoformat()

    def _heartbeat_only(self) -> None:
        """While recording: only whether the server answers (the page's offline warning)."""
        server, _ = readiness.server(self.client, self.spool())
        self.sync.note_online(server.state == readiness.OK)
        with self._lock:
            self.checks["server"] = server

    def _refresh_settings(self) -> None:
        try:
            settings = self.client.device_settings(timeout=readiness.CHECK_TIMEOUT)
        except NotFound:
            return  # a service from before site settings: the fallback list stays
        except (ServerUnreachable, ServerRefused) as exc:
            self.report(f"cannot read the site's settings: {exc}")
            return
        listed = settings.get("incident_categories")
        if isinstance(listed, list):
            categories = [
                {"code": str(c["code"]), "ja": str(c.get("ja") or c["code"]), "en": str(c.get("en") or c["code"])}
                for c in listed
                if isinstance(c, dict) and c.get("code")
            ]
            if categories:
                self.categories = categories
        self.incident_alerts = bool(settings.get("incident_alerts", False))

    @property
    def ready(self) -> bool:
        return all(name in self.checks for name in ("microphone", "key", "spool")) and not any(
            c.state == FAIL for c in self.checks.values()
        )

    def _notices(self) -> list[Notice]:
        try:
            return self.home.notices()
        except RecorderError:
            return []

    # ------------------------------------------------------------------ transitions

    def begin(self, language: str) -> None:
        """Start: open the input (it must deliver audio), then show and speak the notice."""
        if language not in LANGUAGES:
            raise Refused("その言語には対応していません。", f"No notice language {language!r}.")
        with self._lock:
            if self.state == NOTICE:  # the customer's language changed: present the notice again
                self._present(language)
                return
            if self.state not in (IDLE, STOPPED):
                raise Refused("録音中です。", "A recording is running.")
            if not self.ready:
                failing = [c for c in self.checks.values() if c.state == FAIL]
                raise Refused(
                    " ".join(c.ja for c in failing) or "準備の確認中です。",
                    " ".join(c.en for c in failing) or "Still checking readiness.",
                )
            with self._mic_lock:
                cfg = self.config
                source = (
                    self.source_factory(cfg)
                    if self.source_factory is not None
                    else DeviceSource(cfg.sample_rate, cfg.channels, cfg.input_device)
                )
                try:
                    source.check()
                    source.start()
                except RecorderError as exc:
                    self._mic_failed(exc)
                    raise Refused(self.message["ja"], self.message["en"]) from exc  # type: ignore[index]
            self._source = source
            self.message = None
            self.last = None
            self.state = NOTICE
            self._present(language)

    def _mic_failed(self, exc: RecorderError) -> None:
        self.checks["microphone"] = Check(
            "microphone",
            FAIL,
            f"マイクで録音を開始できませんでした。({exc.detail})",
            f"The microphone would not start recording. ({exc.detail})",
        )
        self.message = {"ja": self.checks["microphone"].ja, "en": self.checks["microphone"].en, "level": "error"}
        self._recheck.set()  # check the input again now: Start reopens as soon as it hears the room

    def _present(self, language: str) -> None:
        try:
            notice = pick(self._notices(), language)
        except LookupError as exc:
            self._abandon_notice()
            raise Refused("この言語の告知文がありません。", f"No consent notice in {language}.") from exc
        if self._spoken == "playing":
            self._stop_playback()  # the previous language's reading
        self._notice = notice
        self._presented_at = datetime.now(UTC)
        audio = prompt.notice_audio(self.config.home, notice)
        self._spoken = "no"
        if audio is not None and self.checks.get("speaker", Check("speaker", "ok", "", "")).state == "ok":
            self._spoken = "playing"
            threading.Thread(target=self._speak, args=(audio, notice), daemon=True).start()

    def _speak(self, audio: Path, notice: Notice) -> None:
        try:
            prompt.speak(audio, self.config.output_device)
            outcome = "done"
        except NoticeAudioError as exc:
            self.report(f"notice audio: {exc}")
            outcome = "failed"
        with self._lock:
            if self._notice is notice:  # not re-presented or decided meanwhile
                self._spoken = outcome

    def decide(self, outcome: str) -> None:
        """Staff tap 'notice given, start' or 'customer objects'."""
        with self._lock:
            if self.state != NOTICE or self._notice is None or self._source is None:
                raise Refused("告知が表示されていません。", "No notice is being shown.")
            if outcome == "given":
                self._start_recording()
            elif outcome == "objected":
                self._objected()
            else:
                raise Refused("不明な操作です。", f"Unknown outcome {outcome!r}.")

    def _consent(self, outcome: str) -> ConsentRecord:
        assert self._notice is not None and self._presented_at is not None
        # Spoken only if the whole reading played before the decision; a cut-off reading is not claimed.
        method = "displayed+spoken" if self._spoken == "done" else "displayed"
        return ConsentRecord.for_notice(
            self._notice,
            method=method,
            presented_at=self._presented_at,
            decided_at=datetime.now(UTC),
            outcome=outcome,
            staff_code=self.config.staff_code,
        )

    def _start_recording(self) -> None:
        source = self._source
        assert source is not None
        if source.peak <= SILENCE_PEAK:
            # The input opened but heard only digital silence while the notice was shown:
            # no consent record, no recording (it would be evidence of nothing).
            self._abandon_notice()
            self._mic_failed(RecorderError("only silence was heard while the notice was shown"))
            raise Refused(self.message["ja"], self.message["en"])  # type: ignore[index]
        try:
            live = LiveRecording(
                self.home, self.spool(), self._consent("given"), source.sample_rate, source.channels,
                self.config.segment_seconds,
            )  # fmt: skip
        except RecorderError as exc:
            self._abandon_notice()
            raise Refused(f"録音を開始できません。({exc})", f"Cannot start recording. ({exc})") from exc
        self._live, self._controls = live, Controls()
        self._uploader = UploadThread(self.client, live.spooled, self._upload_report)
        self.sync.busy.add(str(live.id))
        self._uploader.start()
        self._started_at = time.monotonic()
        self._incident = None
        self.state = RECORDING
        self._notice = None
        self._run_thread = threading.Thread(target=self._record, name="kiosk-record", daemon=True)
        self._run_thread.start()
        self.report(f"recording {live.id}")

    def _upload_report(self, message: str) -> None:
        self.report(message)
        if message.startswith("server unreachable"):
            self.sync.note_online(False)
        elif message.startswith("server reachable"):
            self.sync.note_online(True)

    def _record(self) -> None:
        source, live, uploader, controls = self._source, self._live, self._uploader, self._controls
        assert source is not None and live is not None and uploader is not None and controls is not None
        summary: RunSummary | None = None
        error: str | None = None
        try:
            summary = run(source, live, uploader, controls, None, lambda _m: None)
        except Exception as exc:  # the input went away mid-recording: the spool keeps what came
            error = str(exc)
            self.report(f"capture failed: {exc}")
            if not live.closed:
                live.close()  # closed without a final segment: uploaded as interrupted
        all_sent = uploader.close(self.config.upload_wait)
        self.sync.busy.discard(str(live.id))
        self.sync.wake()  # finish() on the server, or keep it for when the server returns
        with self._lock:
            self.last = {
                "outcome": "interrupted" if error else "recorded",
                "id": str(live.id),
                "segments": summary.segments if summary else live.index,
                "seconds": round(summary.seconds, 1) if summary else None,
                "all_sent": all_sent,
                "error": error,
                "spool_full": bool(summary and summary.spool_full),
            }
            self._source = self._live = self._uploader = self._controls = None
            self.state = STOPPED
        self._recheck.set()

    def _objected(self) -> None:
        consent = self._consent("objected")
        self._abandon_notice()
        spooled = record_objection(self.home, self.spool(), consent)
        self.last = {"outcome": "objected", "id": spooled.id}
        self.state = STOPPED
        self.sync.wake()
        self.report(f"objection logged: {spooled.id}")

    def cancel(self) -> None:
        """Back from the notice without a decision: nothing is recorded, nothing logged."""
        with self._lock:
            if self.state != NOTICE:
                raise Refused("告知が表示されていません。", "No notice is being shown.")
            self._abandon_notice()
            self.state = IDLE

    def _abandon_notice(self) -> None:
        if self._source is not None:
            self._source.close()
        self._source = None
        self._notice = None
        if self._spoken == "playing":
            self._stop_playback()
        self._spoken = "no"
        if self.state == NOTICE:
            self.state = IDLE

    @staticmethod
    def _stop_playback() -> None:
        try:
            import sounddevice as sd

            sd.stop()
        except Exception:  # nothing to silence if PortAudio is not there
            return

    def stop(self) -> None:
        with self._lock:
            if self.state != RECORDING:
                raise Refused("録音していません。", "Not recording.")
            self._request_stop("stopped by staff")

    def _request_stop(self, reason: str) -> None:
        if self._controls is not None and self._source is not None:
            self._controls.request_stop(reason)
            self._source.stop()

    def done(self) -> None:
        """Next customer: the stopped screen goes back to idle."""
        with self._lock:
            if self.state == STOPPED:
                self.state = IDLE
                self.last = None
                for kind, alert in list(self.alerts.items()):
                    if alert.state in ("acknowledged", "unavailable", "failed"):
                        del self.alerts[kind]

    def incident(self, category: str) -> None:
        with self._lock:
            if self.state != RECORDING or self._controls is None or self._live is None:
                raise Refused("録音中のみ登録できます。", "Only a running recording can be flagged.")
            if category not in {c["code"] for c in self.categories}:
                raise Refused("その区分はありません。", f"No incident category {category!r}.")
            self._controls.incident = category  # the runner flags it at the next segment
            self._live.flag_incident(category)  # and in the spool now, so a crash keeps it
            self._incident = category
            self.sync.wake()
            recording_id = str(self._live.id)
        if self.incident_alerts:
            self._raise("incident", recording_id, category)

    def call_help(self) -> None:
        with self._lock:
            recording_id = str(self._live.id) if self._live is not None else None
        self._raise("help", recording_id, self._incident)

    def _raise(self, kind: str, recording_id: str | None, category: str | None) -> None:
        with self._lock:
            current = self.alerts.get(kind)
            if current is not None and current.state in ("sending", "open", "escalated"):
                return  # one open alert per kind: pressing again must not page everyone twice
            # A help call while an incident alert is open is still its own alert: staff asked for someone.
            self.alerts[kind] = alert = HelpAlert(self.client, kind, recording_id, category, self.report)
            alert.start()

    @property
    def alert(self) -> HelpAlert | None:
        """The alert the page shows: a call for help before an incident's alert."""
        return self.alerts.get("help") or self.alerts.get("incident")

    # ------------------------------------------------------------------ the page's view

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            recording = None
            if self.state == RECORDING and self._live is not None:
                spooled = self._live.spooled
                segments = len(spooled.segments())
                unsent = len(spooled.unsent())
                recording = {
                    "id": str(self._live.id),
                    "elapsed": round(time.monotonic() - self._started_at, 1),
                    "segments": segments,
                    "sent": segments - unsent,
                    "waiting": unsent,
                    "incident": self._incident,
                }
            notice = None
            if self.state == NOTICE and self._notice is not None:
                notice = {
                    "language": self._notice.language,
                    "title": self._notice.title,
                    "text": self._notice.text,
                    "spoken": self._spoken,
                }
            return {
                "state": self.state,
                "ready": self.ready,
                "checks": [c.to_dict() for c in self.checks.values()],
                "checked_at": self.checked_at,
                "message": self.message,
                "device": {"id": self.device_config.get("device_id"), "site": self.device_config.get("site")},
                "notice": notice,
                "recording": recording,
                "upload": {
                    "online": self.sync.online,
                    "waiting_segments": self.sync.waiting_segments + (recording["waiting"] if recording else 0),  # type: ignore[operator]
                    "waiting_recordings": self.sync.waiting_recordings,
                },
                "categories": self.categories,
                "alert": self.alert.to_dict() if self.alert is not None else None,
                "last": self.last,
            }
