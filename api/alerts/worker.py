"""The delivery worker: a thread in each service process (and `countersign server deliver` for cron/tests).

It has an engine of its own, so its scans never queue behind (nor count among) the requests'
statements; on SQLite, its short writes meet the requests' at SQLite's own lock. Nothing is
sent inside a transaction: claim (commit), send, record (commit).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from api.alerts import escalation, mail, monitor, outbox, webhook
from api.alerts.config import AlertSettings
from api.core.db import make_engine
from api.core.services import audit_sessions
from api.core.settings import Settings

logger = logging.getLogger(__name__)
SENDERS = 4  # concurrent sends: a slow webhook must not hold back the e-mail


class Worker:
    def __init__(self, settings: Settings, signing_key: object, config: AlertSettings | None = None) -> None:
        self.config = config or AlertSettings()
        self.engine: Engine = make_engine(settings.sqlalchemy_url)
        self.sessions: sessionmaker[Session] = audit_sessions(self.engine, signing_key, settings)  # type: ignore[arg-type]
        self.name = f"{socket.gethostname()[:30]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool = ThreadPoolExecutor(SENDERS, thread_name_prefix="alert-send")
        self._http = webhook.new_client(self.config.alerts_send_timeout_seconds)

    def wake(self) -> None:
        """Something was queued in this process: scan now rather than at the next poll."""
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="alert-worker", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._pool.shutdown(wait=True)
        self._http.close()
        self.engine.dispose()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                busy = self.run_once()
            except Exception:  # a database hiccup must not end the thread: the outbox keeps the work
                logger.exception("alert worker pass failed; retrying")
                busy = 0
            if not busy:
                self._wake.wait(self.config.alerts_poll_seconds)
                self._wake.clear()

    def report_integrity(self, recording_id: str, detail: str) -> None:
        """Queue the notice off the request's thread: the failing read may still hold its transaction."""

        def job() -> None:
            try:
                if monitor.integrity_failure(self.sessions, recording_id, detail):
                    self.wake()
            except Exception:  # the read was refused either way; losing this notice must not break anything
                logger.exception("could not queue the integrity notice for recording %s", recording_id)

        self._pool.submit(job)

    def run_once(self) -> int:
        """One pass: escalations due, device checks, then every delivery due. Returns how much it did."""
        done = escalation.escalate_due(self.sessions)
        done += monitor.check_silent(self.sessions, self.config)
        claimed = outbox.claim(self.sessions, self.name, self.config.alerts_lease_seconds)
        list(self._pool.map(self._deliver, claimed))
        return done + len(claimed)

    def drain(self, max_passes: int = 1000) -> int:
        total = 0
        for _ in range(max_passes):
            did = self.run_once()
            total += did
            if not did:
                break
        return total

    def _deliver(self, item: outbox.Claimed) -> None:
        exists, secret = outbox.contact_of(self.sessions, item.contact_id)
        if not exists:  # removed after this was queued: the administrator no longer wants it told
            outbox.failed(self.sessions, item, self.name, "the contact was removed", self.config, final=True)
            return
        try:
            if item.channel == "email":
                receipt = mail.send(item.id, item.target, item.payload, self.config)
            else:
                receipt = webhook.send(self._http, item.id, item.target, secret, item.payload)
        except Exception as exc:  # any failure of the transport is an attempt to retry, never a crash
            state = outbox.failed(self.sessions, item, self.name, f"{type(exc).__name__}: {exc}", self.config)
            logger.warning(
                "alert delivery %s (%s) failed, now %s: %s", item.id, item.channel, state, type(exc).__name__
            )
            return
        outbox.delivered(self.sessions, item, self.name, receipt)
