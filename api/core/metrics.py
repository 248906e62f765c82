"""Operational metrics in the Prometheus text format: what GET /metrics (api/metrics.py) serves.

Two kinds, and where each comes from:

- **Counted in the process** (prometheus_client): request latency by route template, segment
  uploads by outcome and their bytes (api.metrics.RequestMetrics), purge results (retention.job).
  Each process counts its own; with several processes (``countersign server run --workers N``,
  uvicorn or gunicorn workers) set PROMETHEUS_MULTIPROC_DIR to a directory they share, and the
  scrape adds up every process's files (prometheus_client's multiprocess mode). ``server run
  --workers N`` makes one itself when the variable is unset. A retention job run with the same
  variable (and write access to that directory) shows its purge results there too.
- **Read from the database at scrape time**: the audit log's entry count and the age of its newest
  signed checkpoint, open recordings, devices seen recently, the last retention run. These are the
  same whichever process answers, so they never need the multiprocess directory; each is a cheap
  indexed query (devices: one index probe per enabled device, ix_recordings_device_activity).

No label carries an id, a path or anything a client chose: route labels are templates, methods
outside the usual few are "other", so the number of series stays bounded whatever is sent.
/metrics reveals operational data (volumes, activity, timings), never evidence or metadata of a
recording; who may read it is api.metrics.MetricsAccess.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from api.core.models import AccessLog, AuditCheckpoint, AuditHead, Device, Recording, utcnow
from api.core.settings import SettingsError, looks_like_placeholder
from evidence.audit_actions import Action

log = logging.getLogger(__name__)

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4  # the text format every Prometheus server reads
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
MIN_TOKEN_LENGTH = 24

# --------------------------------------------------------------------------- counted in the process

if os.environ.get(MULTIPROC_ENV):  # multiprocess mode: each metric below opens its file there at once
    os.makedirs(os.environ[MULTIPROC_ENV], exist_ok=True)

# Up to 30 s: an evidence read that decrypts and transcodes a long recording takes seconds.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
REQUEST_SECONDS = Histogram(
    "countersign_http_request_duration_seconds",
    "Time from a request's arrival to the end of its answer, by route template, method and status class.",
    ["route", "method", "status"],
    buckets=LATENCY_BUCKETS,
)
SEGMENT_OUTCOMES = ("stored", "repeat", "refused", "failed")
SEGMENT_UPLOADS = Counter(
    "countersign_segment_uploads",
    "Segment uploads by outcome: stored (201), repeat (200: already stored, byte for byte),"
    " refused (4xx), failed (5xx).",
    ["outcome"],
)
SEGMENT_BYTES = Counter("countersign_segment_bytes", "Bytes of segment bodies stored (201 answers only).")
PURGE_OUTCOMES = ("purged", "held", "error")
PURGE_RESULTS = Counter(
    "countersign_purge_results",
    "Recordings the retention job handled, by outcome: purged; held (due, kept by a legal hold); error.",
    ["outcome"],
)
RETENTION_RUNS = Counter("countersign_retention_runs", "Retention job runs (not dry runs), by result.", ["result"])

for _outcome in SEGMENT_OUTCOMES:  # every series exists from the start, so rate() sees the first one
    SEGMENT_UPLOADS.labels(_outcome)
for _outcome in PURGE_OUTCOMES:
    PURGE_RESULTS.labels(_outcome)
for _result in ("ok", "errors"):
    RETENTION_RUNS.labels(_result)


def record_purge_run(purged: int, held: int, errors: int) -> None:
    """Called by retention.job.run with its summary's counts (a real run, not a dry one)."""
    PURGE_RESULTS.labels("purged").inc(purged)
    PURGE_RESULTS.labels("held").inc(held)
    PURGE_RESULTS.labels("error").inc(errors)
    RETENTION_RUNS.labels("errors" if errors else "ok").inc()


# --------------------------------------------------------------------------- read at scrape time

DEVICE_WINDOWS = (("5m", timedelta(minutes=5)), ("1h", timedelta(hours=1)), ("24h", timedelta(hours=24)))


def _age(now: datetime, then: datetime | None) -> float | None:
    return None if then is None else max(0.0, (now - then).total_seconds())


class DatabaseCollector:
    """The gauges (and the audit counter) that come from the database, computed at each scrape."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def describe(self) -> list[Metric]:
        return []  # nothing to check for clashes: avoids a query when registered

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("countersign_database_up", "1 if the scrape could read the database, else 0.")
        try:
            families = list(self._read())
        except Exception:  # the database is down or slow: say so, and still serve the process counters
            log.warning("metrics: could not read the database", exc_info=True)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _read(self) -> Iterator[Metric]:
        now = utcnow()
        with self.sessions() as session:
            head = session.get(AuditHead, 1)
            newest = session.scalar(select(AuditCheckpoint.at).order_by(AuditCheckpoint.seq.desc()).limit(1))
            open_recordings = session.scalar(select(func.count()).where(Recording.status == "open")) or 0
            last_run = session.scalar(select(func.max(AccessLog.at)).where(AccessLog.action == Action.RETENTION_RUN))
            devices = self._devices(session, now)

        entries = CounterMetricFamily(
            "countersign_audit_entries", "Entries appended to the audit log (its last sequence number)."
        )
        entries.add_metric([], head.seq if head else 0)
        yield entries
        unsigned = GaugeMetricFamily(
            "countersign_audit_unsigned_entries", "Audit entries appended since the newest signed checkpoint."
        )
        unsigned.add_metric([], (head.seq - head.checkpoint_seq) if head else 0)
        yield unsigned
        age = _age(now, newest)
        if age is not None:  # absent until the first checkpoint is signed
            checkpoint = GaugeMetricFamily(
                "countersign_audit_checkpoint_age_seconds", "Seconds since the newest signed audit checkpoint."
            )
            checkpoint.add_metric([], age)
            yield checkpoint

        recordings = GaugeMetricFamily("countersign_open_recordings", "Recordings with status open (being uploaded).")
        recordings.add_metric([], open_recordings)
        yield recordings

        enabled, seen, oldest = devices
        gauge = GaugeMetricFamily("countersign_devices_enabled", "Enrolled devices that are not disabled.")
        gauge.add_metric([], enabled)
        yield gauge
        gauge = GaugeMetricFamily(
            "countersign_devices_seen",
            "Enabled devices whose last contact (newest recording activity) is within the window.",
            labels=["within"],
        )
        for (label, _), count in zip(DEVICE_WINDOWS, seen, strict=True):
            gauge.add_metric([label], count)
        yield gauge
        age = _age(now, oldest)
        if age is not None:
            gauge = GaugeMetricFamily(
                "countersign_device_oldest_contact_age_seconds",
                "Seconds since the quietest enabled device's last contact (its enrolment if it never recorded).",
            )
            gauge.add_metric([], age)
            yield gauge

        age = _age(now, last_run)
        if age is not None:
            gauge = GaugeMetricFamily(
                "countersign_retention_last_run_age_seconds", "Seconds since a retention run last completed."
            )
            gauge.add_metric([], age)
            yield gauge

    @staticmethod
    def _devices(session: Session, now: datetime) -> tuple[int, list[int], datetime | None]:
        """(enabled devices, how many were seen in each window, the oldest last contact)."""
        newest = (
            select(func.max(Recording.last_activity_at))
            .where(Recording.device_id == Device.id)
            .correlate(Device)
            .scalar_subquery()
        )
        contact = (
            select(func.coalesce(newest, Device.enrolled_at).label("at"))
            .where(Device.disabled.is_(False), Device.enrolled_at.is_not(None))
            .subquery()
        )
        columns: list[Any] = [func.count()]
        columns += [func.count().filter(contact.c.at >= now - window) for _, window in DEVICE_WINDOWS]
        columns.append(func.min(contact.c.at))
        row = session.execute(select(*columns).select_from(contact)).one()
        oldest = row[-1]
        if isinstance(oldest, str):  # SQLite: min() over the subquery's column comes back as text
            oldest = datetime.fromisoformat(oldest)
        if oldest is not None and oldest.tzinfo is None:
            oldest = oldest.replace(tzinfo=now.tzinfo)
        return int(row[0]), [int(n) for n in row[1:-1]], oldest


# --------------------------------------------------------------------------- the exposition


class _ThisProcess:
    """prometheus_client's default registry (our counters, plus process_* and python_* of this process)."""

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def exposition(sessions: sessionmaker[Session]) -> bytes:
    """The whole text page: every process's counters (or this one's), then the database's gauges."""
    registry = CollectorRegistry(auto_describe=False)
    if multiprocess_dir():
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry.register(_ThisProcess())
    registry.register(DatabaseCollector(sessions))
    return generate_latest(registry)


def prepare_multiprocess_dir(path: str) -> None:
    """Before the workers start: the directory exists and holds no files of an earlier run
    (prometheus_client would add a previous run's counts to this one's)."""
    os.makedirs(path, exist_ok=True)
    for name in os.listdir(path):
        if name.endswith(".db"):
            os.remove(os.path.join(path, name))


# --------------------------------------------------------------------------- who may scrape


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class MetricsAccess:
    """With a token: only "Authorization: Bearer <token>" (compared in constant time with a SHA-256
    digest; the token itself is not kept). Without one: loopback clients only."""

    def __init__(self, token: str | None) -> None:
        if token is not None and (len(token) < MIN_TOKEN_LENGTH or looks_like_placeholder(token)):
            raise SettingsError(
                f"COUNTERSIGN_METRICS_TOKEN must be a random secret of at least {MIN_TOKEN_LENGTH} characters"
                " (e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))'), or unset for loopback-only"
            )
        self.digest = token_digest(token) if token is not None else None

    def token_ok(self, authorization: str | None) -> bool:
        assert self.digest is not None
        scheme, _, given = (authorization or "").partition(" ")
        # Compared whatever the scheme, so a refusal costs the same as an acceptance.
        match = hmac.compare_digest(token_digest(given.strip()), self.digest)
        return match and scheme.lower() == "bearer"
