"""Call for help from the kiosk: raise the alert, keep trying until it is sent, then poll it.

The page shows the state within a poll of the service's answer: sending (retrying while the
server is away: staff are told it has not gone yet), open, escalated (to a later tier),
acknowledged with the supervisor's message, or unavailable (the service has no help alerts).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from recorder.client import DeviceClient, NotFound
from recorder.errors import ServerRefused, ServerUnreachable

POLL_SECONDS = 2.0
RETRY_SECONDS = 2.0


@dataclass
class HelpAlert:
    client: DeviceClient
    kind: str
    recording_id: str | None
    category: str | None
    report: Callable[[str], None]
    state: str = "sending"
    view: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        threading.Thread(target=self._run, name=f"alert-{self.kind}", daemon=True).start()

    def cancel(self) -> None:
        self._stop.set()

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "state": self.state,
            "tier": self.view.get("tier"),
            "acknowledged_by": self.view.get("acknowledged_by"),
            "message": self.view.get("message"),
            "error": self.error,
        }

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.view = self.client.raise_alert(self.kind, self.recording_id, self.category)
                self.state = str(self.view.get("state", "open"))
                self.report(f"{self.kind} alert raised: {self.view.get('id')}")
                break
            except NotFound:
                self.state = "unavailable"
                return
            except ServerUnreachable as exc:
                self.error = exc.detail
                self._stop.wait(RETRY_SECONDS)  # still "sending": the page says it has not gone yet
            except ServerRefused as exc:
                self.state, self.error = "failed", exc.detail
                self.report(f"{self.kind} alert refused: {exc}")
                return
        alert_id = str(self.view.get("id", ""))
        while alert_id and self.state != "acknowledged" and not self._stop.wait(POLL_SECONDS):
            try:
                self.view = self.client.alert(alert_id)
                self.state = str(self.view.get("state", self.state))
                self.error = None
            except (ServerUnreachable, ServerRefused) as exc:
                self.error = exc.detail  # keep polling: the acknowledgment may come later
