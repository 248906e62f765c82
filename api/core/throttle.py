"""Bounding what strangers can make the service write: failures counted per client address.

Each unauthenticated failure (no token, an unknown token, a wrong enrolment code)
would otherwise be one audit entry, forever, at the caller's pace. Per client
address and per minute, the first `burst` failures are logged one by one; past
that the caller gets 429 and the failures are only counted, then written as one
summary entry when that address next fails after its window closed. The counters
live in each process (a few bytes per address); several processes each apply
the limit, which bounds the log all the same.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class _Window:
    started: float
    count: int = 0
    suppressed: int = 0


@dataclass
class Verdict:
    log: bool  # log this failure as its own entry
    limited: bool  # answer 429 instead of the usual refusal
    summary: int  # failures suppressed in the address's previous window, to be summarised now (0: none)
    retry_after: int = 0


@dataclass
class FailureThrottle:
    burst: int = 20
    window_seconds: float = 60.0
    clock: Callable[[], float] = time.monotonic
    max_addresses: int = 100_000  # beyond this, the oldest windows are forgotten (memory stays bounded)
    _windows: dict[str, _Window] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def failure(self, address: str) -> Verdict:
        now = self.clock()
        with self._lock:
            window = self._windows.get(address)
            summary = 0
            if window is None or now - window.started >= self.window_seconds:
                summary = window.suppressed if window is not None else 0
                if window is None and len(self._windows) >= self.max_addresses:
                    self._windows.pop(next(iter(self._windows)))
                window = self._windows[address] = _Window(started=now)
            window.count += 1
            if window.count <= self.burst:
                return Verdict(log=True, limited=False, summary=summary)
            window.suppressed += 1
            retry = max(1, int(window.started + self.window_seconds - now + 0.999))
            return Verdict(log=False, limited=True, summary=summary, retry_after=retry)

    def blocked(self, address: str) -> int:
        """Seconds until `address` may try again (0: it may now); a success does not reset the window."""
        now = self.clock()
        with self._lock:
            window = self._windows.get(address)
            if window is None or now - window.started >= self.window_seconds or window.count < self.burst:
                return 0
            return max(1, int(window.started + self.window_seconds - now + 0.999))
