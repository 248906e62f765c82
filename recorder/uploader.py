"""Sending spooled evidence: while recording (a thread) and afterwards (sync).

Segments go in order, each retried until the server acknowledges it; a
transient failure (no network, server down, 5xx) backs off and tries again,
a refusal (4xx) stops that recording's upload and is reported, leaving its
evidence in the spool. Nothing is dropped silently.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from recorder.client import DeviceClient
from recorder.errors import ServerRefused, ServerUnreachable
from recorder.spool import Spool, SpooledRecording

Report = Callable[[str], None]


def send_pending(client: DeviceClient, recording: SpooledRecording) -> int:
    """Send whatever the server does not have yet; return how many segments went."""
    meta = recording.meta()
    if not recording.opened:
        client.open_recording(
            {"header": meta["header"], "header_signature": meta["header_signature"], "sealed_keys": meta["sealed_keys"]}
        )
        recording.mark_opened()
    sent = 0
    for index in recording.unsent():
        envelope, statement = recording.segment(index)
        client.put_segment(recording.id, index, statement, envelope)
        recording.mark_sent(index)
        sent += 1
    meta = recording.meta()  # re-read: staff may have flagged an incident meanwhile
    incident = meta.get("incident")
    if incident and not meta.get("incident_sent"):
        client.flag_incident(recording.id, incident)
        recording.update_meta(incident_sent=True)
    return sent


def finish(client: DeviceClient, spool: Spool, recording: SpooledRecording) -> str:
    """Close a recording on the server and clear it from the spool once all of it has arrived."""
    send_pending(client, recording)  # anything left, including a late incident flag
    meta = recording.meta()
    outcome = "objection record"
    if meta["header"]["consent"]["outcome"] == "given":
        if recording.has_final():
            outcome = "complete"
        else:
            client.interrupt(recording.id)
            outcome = "interrupted"
    spool.remove(recording)
    return outcome


@dataclass
class UploadThread:
    """Uploads one live recording's segments as they appear in the spool."""

    client: DeviceClient
    recording: SpooledRecording
    report: Report
    max_backoff: float = 10.0
    error: Exception | None = None
    sent: int = 0
    _wake: threading.Event = field(default_factory=threading.Event)
    _closing: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"upload-{self.recording.id[:8]}", daemon=True)
        self._thread.start()

    def notify(self) -> None:
        self._wake.set()

    def close(self, timeout: float) -> bool:
        """No more segments will come; wait up to timeout for the rest to go. True if all went."""
        self._closing.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        return not self.recording.unsent() and self.recording.opened and self.error is None

    def _run(self) -> None:
        backoff = 0.5
        announced_offline = False
        while True:
            self._wake.clear()
            try:
                self.sent += send_pending(self.client, self.recording)
                backoff = 0.5
                if announced_offline:
                    self.report("server reachable again; spooled segments uploaded")
                    announced_offline = False
            except ServerUnreachable as exc:
                if not announced_offline:
                    self.report(f"server unreachable, segments wait in the spool ({exc})")
                    announced_offline = True
                if self._closing.is_set():
                    return  # sync takes over; the evidence stays spooled
                self._wake.wait(backoff)
                backoff = min(backoff * 2, self.max_backoff)
                continue
            except ServerRefused as exc:
                self.error = exc
                self.report(f"upload refused, evidence kept in the spool: {exc}")
                return
            if self._closing.is_set() and not self.recording.unsent():
                return
            self._wake.wait(1.0)
