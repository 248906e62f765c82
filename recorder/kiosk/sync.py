"""The agent's background upload: what waits in the spool goes as soon as the server answers.

`recorder sync` by hand is no longer needed at a kiosk: this loop does what it does (send
what is unsent, close the recording on the server, clear it from the spool) every few
seconds, and at once when woken (a recording stopped, an objection was logged). The live
recording is skipped while its UploadThread owns it, and any recording whose lock another
process holds (a `recorder record` running beside the agent).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from recorder.client import DeviceClient
from recorder.errors import ServerRefused, ServerUnreachable
from recorder.spool import Spool
from recorder.uploader import finish, send_pending

SYNC_INTERVAL = 3.0  # seconds between attempts while something waits or the server is away


@dataclass
class SyncLoop:
    client: DeviceClient
    spool: Callable[[], Spool]  # a fresh Spool each pass: its byte count must see removals
    report: Callable[[str], None]
    interval: float = SYNC_INTERVAL
    busy: set[str] = field(default_factory=set)  # recording ids an UploadThread owns now
    online: bool | None = None  # None until the first attempt
    waiting_segments: int = 0
    waiting_recordings: int = 0
    refused: dict[str, str] = field(default_factory=dict)  # id -> why the server refused it
    last_sent: dict[str, str] = field(default_factory=dict)  # id -> outcome of its finish()
    _wake: threading.Event = field(default_factory=threading.Event)
    _stopping: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="kiosk-sync", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def note_online(self, online: bool) -> None:
        """Another part of the agent talked to the server (readiness, the live upload)."""
        if online and self.online is False:
            self._wake.set()  # the server is back: send what waits now, not at the next tick
        self.online = online

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            self.pass_once()
            self._wake.wait(self.interval)

    def pass_once(self) -> None:
        spool = self.spool()
        segments = recordings = 0
        for spooled in list(spool.recordings()):
            if spooled.id in self.busy or spooled.id in self.refused:
                segments += len(spooled.unsent())
                recordings += 1
                continue
            lock = spooled.lock()
            if lock is None:  # being recorded
                segments += len(spooled.unsent())
                recordings += 1
                continue
            try:
                send_pending(self.client, spooled)
                self.last_sent[spooled.id] = finish(self.client, spool, spooled)
                self.report(f"{spooled.id}: uploaded ({self.last_sent[spooled.id]})")
                self.online = True
            except ServerUnreachable:
                self.online = False
                segments += len(spooled.unsent())
                recordings += 1
            except ServerRefused as exc:
                self.refused[spooled.id] = exc.detail
                self.report(f"{spooled.id}: refused, kept in the spool: {exc}")
                segments += len(spooled.unsent())
                recordings += 1
            finally:
                lock.close()
        self.waiting_segments, self.waiting_recordings = segments, recordings


def wait_until(condition: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(step)
    return True
