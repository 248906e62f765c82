"""Soak: many simulated devices recording in real time against one service, for minutes, on loopback.

One real `countersign server run` (uvicorn) on 127.0.0.1 with a fresh data directory (SQLite +
files; `--backend postgres`: a fresh database on the local PostgreSQL, dropped at the end),
development mode, per-device quotas raised through the environment. N devices are enrolled over
HTTP (the admin creates each, the device enrols with its own Ed25519 key) and each gets a real
recorder home (recorder.home.DeviceHome) and spool (recorder.spool.Spool) in a temporary folder.

Every device records continuously in real time: every --segment-seconds it seals one segment with
the recorder's own LiveRecording (the writer, the spool files, fsync and rename; only the FLAC
encoding is skipped: a pool of speech-like FLAC segments is encoded once, up front, so that the CPU
goes to the service) and a recording closes with a final segment after --recording-seconds, when
the next one starts. Devices start staggered over the first segment, so the service is offered a
steady devices / segment-seconds uploads per second.

Each device's uploader does what recorder.uploader does, written for asyncio so that hundreds of
devices fit in one process on a few OS threads (one event loop, spool file work in a pool of 8
threads): oldest recording first, open it on the server (then mark it opened), PUT its unsent
segments in order and mark each sent only after the server acknowledged it; a transport error,
5xx or 429 backs off (0.5 s doubling to 10 s) and retries; a refusal (other 4xx) stops that
recording, whose evidence stays in the spool; a recording's folder is removed once all of it is
acknowledged. Each device has its own keep-alive HTTP connection (httpx.AsyncClient), as a real one.

--slow devices (spread evenly) have a throttled uplink: the body goes out in 2 KB chunks paced to
--slow-kbps, so each upload stays open for seconds. At the default 256 kbit/s a ~100 KB segment
takes ~3 s, within its 5 s (the audio itself is ~160 kbit/s of FLAC: a slower uplink can never
keep up, whatever the service does).

After --minutes the devices close their recordings and stop recording; the uploaders get up to
--drain-seconds to empty the spools, then whatever is left in them is counted from the files.

Printed: a header (code revision, load average, cores), a progress line every --progress-seconds,
and at the end errors by kind (goal 0), upload latency p50/p95/p99 (all, and the slow devices
apart) and the delay from spooled to acknowledged, uploads/s achieved vs offered, server RSS at
the end of warm-up, at the end and the peak (goal flat), spool contents at the end (goal 0), the
service's CPU seconds. Everything stays on loopback; a watchdog ends the run at a hard wall-clock
cap, and the server is killed on exit, Ctrl-C or if this process dies.

    .venv/bin/python -m bench.soak                             # 500 devices, 20 slow, 10 minutes
    .venv/bin/python -m bench.soak --minutes 1 --devices 50    # a quick run
    .venv/bin/python -m bench.soak --minutes 2 --devices 100 --backend postgres
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import math
import os
import resource
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, deque
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
import nacl.signing  # noqa: E402
import numpy as np  # noqa: E402

from bench._audio import speech_like  # noqa: E402
from bench._meta import load_average, revision  # noqa: E402
from bench.ingest import PG_ADMIN_URL, Server, clean_env, free_port, init_countersign, postgres_cpu  # noqa: E402
from consent.catalogue import builtin_notices, pick  # noqa: E402
from consent.records import ConsentRecord  # noqa: E402
from evidence import audio, wire  # noqa: E402
from recorder.home import DeviceHome  # noqa: E402
from recorder.recording import ENVELOPE_OVERHEAD, LiveRecording  # noqa: E402
from recorder.spool import Spool, SpooledRecording  # noqa: E402

RATE = 16000
POOL = 24  # distinct FLAC plaintexts, cycled through the segments
CHUNK = 2048  # bytes per write of a slow uploader
TIMEOUT = httpx.Timeout(30.0, connect=5.0)  # the recorder's (recorder/client.py)
MAX_BACKOFF = 10.0  # the recorder's (recorder/uploader.py)
# Per-device limits meant for strangers and runaway devices, lifted as the test suite does; a device
# whose uploads lag holds several open recordings, and the service must not mark them interrupted.
SERVICE_ENV = {
    "COUNTERSIGN_MAX_OPEN_RECORDINGS": "1000000",
    "COUNTERSIGN_AUTH_FAILURES_PER_MINUTE": "1000000",
    "COUNTERSIGN_DEVICE_BYTES_PER_DAY": str(1024**4),
    "COUNTERSIGN_INTERRUPTED_AFTER_SECONDS": str(7 * 24 * 3600),
}
PR_SET_PDEATHSIG = 1


# --------------------------------------------------------------------------- the service


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the benchmark process dies, however it dies (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class SoakServer(Server):
    """bench.ingest's Server, started so that it cannot outlive this process."""

    def start(self, probe: str) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                env=clean_env(self.env),
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                preexec_fn=_die_with_parent,  # only a prctl: nothing that could deadlock after fork
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log.read_text(errors='replace')[-2000:]}")
            try:
                if httpx.get(self.url + probe, timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not start: {self.log.read_text(errors='replace')[-2000:]}")

    def pids(self) -> list[int]:
        """The server process and, with --workers > 1, its worker processes."""
        assert self.proc is not None
        out = [self.proc.pid]
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
                children = (task / "children").read_text().split()
                out.extend(int(c) for c in children)
        return out

    def rss_bytes(self) -> int:
        """Resident memory of the server and its workers (VmRSS)."""
        total = 0
        for pid in self.pids():
            with contextlib.suppress(OSError, StopIteration, ValueError):
                status = Path(f"/proc/{pid}/status").read_text()
                total += int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1]) * 1024
        return total

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s: uvicorn's graceful shutdown waits for hung requests forever."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()


# --------------------------------------------------------------------------- devices


class SoakRecording(LiveRecording):
    """recorder.recording.LiveRecording fed FLAC encoded once, up front: its add() minus audio.encode."""

    def add_flac(self, plaintext: bytes, final: bool) -> int:
        sealed = self._writer.prepare(plaintext, final)
        statement = sealed.statement
        self.spooled.write_segment(
            sealed.index,
            sealed.envelope,
            {
                "final": final,
                "ciphertext_sha256": statement.ciphertext_sha256.hex(),
                "plaintext_sha256": statement.plaintext_sha256.hex(),
                "prev_hash": statement.prev_hash.hex(),
                "signature": sealed.signed.signature.hex(),
            },
        )
        self._writer.accept(sealed)
        self.spool.account(len(sealed.envelope) + ENVELOPE_OVERHEAD)
        if final:
            self.close()
        return len(sealed.envelope)

    def add_next(self, plaintext: bytes, final: bool) -> tuple[int, bool, bool]:
        """One segment, closing the recording early if the spool is nearly full (recorder.runner does):
        (its size, whether it was final, whether the spool was full)."""
        full = not final and not self.room_for_next()
        return self.add_flac(plaintext, final or full), final or full, full


@dataclass
class SimDevice:
    index: int
    slow: bool
    device_id: str
    token: str
    home: DeviceHome
    spool: Spool
    queue: deque[SpooledRecording] = field(default_factory=deque)  # oldest first, not yet cleared
    closed: set[str] = field(default_factory=set)  # recordings whose final segment is spooled
    spooled_at: dict[tuple[str, int], float] = field(default_factory=dict)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    recording_done: bool = False
    last_done: float = 0.0  # loop time its last request ended


@dataclass
class Stats:
    ok: int = 0
    ok_load: int = 0  # acknowledged before the load phase ended
    errors: Counter[str] = field(default_factory=Counter)
    latency: list[tuple[float, float, bool]] = field(default_factory=list)  # (done at, seconds, slow)
    delay: list[tuple[float, float, bool]] = field(default_factory=list)  # spooled -> acknowledged
    produced: int = 0
    produced_bytes: int = 0
    acked_bytes: int = 0
    spool_full: int = 0
    opened: int = 0
    cleared: int = 0
    late_max: float = 0.0  # how far behind schedule a device's segment was spooled (the generator's lag)
    rss: list[tuple[float, int]] = field(default_factory=list)

    def error(self, kind: str) -> None:
        self.errors[kind] += 1


def consent_record() -> ConsentRecord:
    now = datetime.now(UTC)
    return ConsentRecord.for_notice(
        pick(list(builtin_notices()), "en"),
        method="displayed",
        presented_at=now,
        decided_at=now,
        outcome="given",
        staff_code="soak",
    )


async def enrol_all(url: str, admin: str, count: int, slow: set[int], homes: Path, spool_mb: int) -> list[SimDevice]:
    """Create and enrol `count` devices over HTTP (8 at a time), each with a real recorder home."""
    auth = {"Authorization": f"Bearer {admin}"}
    devices: list[SimDevice | None] = [None] * count
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        (await client.post("/v1/sites", json={"id": "soak"}, headers=auth)).raise_for_status()
        todo = deque(range(count))

        async def worker() -> None:
            while todo:
                i = todo.popleft()
                created = await client.post("/v1/devices", json={"name": f"soak-{i}", "site": "soak"}, headers=auth)
                created.raise_for_status()
                key = nacl.signing.SigningKey.generate()
                reply = await client.post(
                    wire.ENROL,
                    json={"code": created.json()["enrolment_code"], "public_key": bytes(key.verify_key).hex()},
                )
                reply.raise_for_status()
                body = reply.json()
                home = DeviceHome(homes / f"device-{i:04d}")
                config = {
                    "server": url,
                    "device_id": body["device_id"],
                    "site": body["site"],
                    "service_public_key": body["service_public_key"],
                }
                keys = {k["key_id"]: k["public_key"] for k in body["evidence_keys"]}
                await asyncio.to_thread(home.save, config, bytes(key), body["token"], keys, body["notices"])
                spool = Spool(home.spool_dir, spool_mb * 1024 * 1024)
                devices[i] = SimDevice(i, i in slow, body["device_id"], body["token"], home, spool)

        await asyncio.gather(*(worker() for _ in range(8)))
    return [d for d in devices if d is not None]


# --------------------------------------------------------------------------- the run


class Refused(Exception):
    """A 4xx other than 429: the recorder stops this recording and keeps its evidence."""


class Transient(Exception):
    """No answer, 5xx or 429: the recorder backs off and tries again."""


async def throttled(body: bytes, bytes_per_second: float) -> AsyncIterator[bytes]:
    """The body in CHUNK-byte pieces, paced to a slow uplink."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    for offset in range(0, len(body), CHUNK):
        piece = body[offset : offset + CHUNK]
        yield piece
        ahead = start + (offset + len(piece)) / bytes_per_second - loop.time()
        if ahead > 0:
            await asyncio.sleep(ahead)


@dataclass
class Run:
    args: argparse.Namespace
    url: str
    devices: list[SimDevice]
    plaintexts: list[bytes]
    stats: Stats
    t0: float  # loop time the load starts
    stop_recording: float  # loop time the devices stop recording
    warm: float  # loop time the warm-up ends
    ssl_context: ssl.SSLContext
    drained: asyncio.Event = field(default_factory=asyncio.Event)
    abort: bool = False

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    async def record(self, dev: SimDevice) -> None:
        """Spool one segment every segment-seconds, in real time, until the load phase ends."""
        seg = self.args.segment_seconds
        per_recording = max(1, round(self.args.recording_seconds / seg))
        due = self.t0 + seg * dev.index / len(self.devices)  # staggered: a steady offered rate
        live: SoakRecording | None = None
        n = dev.index
        try:
            while due < self.stop_recording and not self.abort:
                await asyncio.sleep(max(0.0, due - self.now()))
                self.stats.late_max = max(self.stats.late_max, self.now() - due)
                if live is None:
                    live = await asyncio.to_thread(SoakRecording, dev.home, dev.spool, consent_record(), RATE, 1, seg)
                    dev.queue.append(live.spooled)
                last = live.index == per_recording - 1 or due + seg >= self.stop_recording
                plaintext = self.plaintexts[n % len(self.plaintexts)]
                n += 1
                index = live.index
                size, final, full = await asyncio.to_thread(live.add_next, plaintext, last)
                self.stats.spool_full += full
                dev.spooled_at[(live.spooled.id, index)] = self.now()
                self.stats.produced += 1
                self.stats.produced_bytes += size
                if final:
                    dev.closed.add(live.spooled.id)
                    live = None
                dev.wake.set()
                due += seg
        finally:
            if live is not None:  # aborted mid-recording: release its lock
                live.close()
            dev.recording_done = True
            dev.wake.set()

    async def _send(
        self, dev: SimDevice, client: httpx.AsyncClient, method: str, path: str, **kwargs: Any
    ) -> httpx.Response:
        try:
            reply = await client.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            # uvicorn closes a connection idle for 5 s (its keep-alive timeout), about one segment's gap.
            idle = self.now() - dev.last_done if dev.last_done else 0.0
            why = " (connection idle 4-6 s: the keep-alive race)" if 4.0 <= idle < 6.0 else ""
            self.stats.error(f"transport: {type(exc).__name__} on {method}{why}")
            raise Transient from exc
        finally:
            dev.last_done = self.now()
        if reply.status_code >= 500 or reply.status_code == 429:
            self.stats.error(f"HTTP {reply.status_code} {method}: {reply.text[:80]}")
            raise Transient
        if reply.status_code >= 400:
            self.stats.error(f"refused {reply.status_code} {method}: {reply.text[:80]}")
            raise Refused
        return reply

    async def send_pending(self, dev: SimDevice, client: httpx.AsyncClient, rec: SpooledRecording) -> None:
        """recorder.uploader.send_pending: open the recording if need be, then its unsent segments in order."""
        if not rec.opened:
            meta = await asyncio.to_thread(rec.meta)
            body = {k: meta[k] for k in ("header", "header_signature", "sealed_keys")}
            await self._send(dev, client, "POST", wire.RECORDINGS, json=body)
            await asyncio.to_thread(rec.mark_opened)
            self.stats.opened += 1
        for index in await asyncio.to_thread(rec.unsent):
            envelope, statement = await asyncio.to_thread(rec.segment, index)
            headers = {
                "Content-Type": wire.SEGMENT_CONTENT_TYPE,
                **wire.upload_headers(
                    statement["final"], statement["plaintext_sha256"], statement["prev_hash"], statement["signature"]
                ),
            }
            content: bytes | AsyncIterator[bytes] = envelope
            if dev.slow:
                headers["Content-Length"] = str(len(envelope))
                content = throttled(envelope, self.args.slow_kbps * 1000 / 8)
            start = self.now()
            await self._send(dev, client, "PUT", wire.segment_path(rec.id, index), content=content, headers=headers)
            done = self.now()
            await asyncio.to_thread(rec.mark_sent, index)
            self.stats.ok += 1
            self.stats.acked_bytes += len(envelope)
            if done <= self.stop_recording:
                self.stats.ok_load += 1
            self.stats.latency.append((done, done - start, dev.slow))
            spooled = dev.spooled_at.pop((rec.id, index), None)
            if spooled is not None:
                self.stats.delay.append((done, done - spooled, dev.slow))

    async def upload(self, dev: SimDevice) -> None:
        """recorder.uploader.UploadThread + finish, for every recording of one device, oldest first."""
        backoff = 0.5
        async with httpx.AsyncClient(
            base_url=self.url,
            headers={"Authorization": f"Bearer {dev.token}"},
            timeout=TIMEOUT,
            verify=self.ssl_context,
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        ) as client:
            while not self.abort:
                if not dev.queue:
                    if dev.recording_done:
                        return
                    dev.wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(dev.wake.wait(), 1.0)
                    continue
                rec = dev.queue[0]
                closed = rec.id in dev.closed  # read before sending: segments may still come otherwise
                dev.wake.clear()
                try:
                    await self.send_pending(dev, client, rec)
                    backoff = 0.5
                except Transient:
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, MAX_BACKOFF)
                    continue
                except Refused:
                    dev.queue.popleft()  # its evidence stays in the spool, as on a device
                    continue
                if closed:
                    await asyncio.to_thread(Spool.remove, rec)
                    dev.queue.popleft()
                    self.stats.cleared += 1
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(dev.wake.wait(), 1.0)


def percentiles(values: list[float]) -> str:
    if not values:
        return "n/a"
    p50, p95, p99 = np.percentile(values, [50, 95, 99]) * 1000
    return f"p50 {p50:7.1f} ms  p95 {p95:7.1f} ms  p99 {p99:7.1f} ms  (n={len(values)})"


def scan_spools(devices: list[SimDevice]) -> tuple[int, int, int, int]:
    """From the files: (unsent segments, their bytes, recordings still spooled, bytes of all spool files)."""
    segments = size = recordings = total = 0
    for dev in devices:
        for rec in dev.spool.recordings():
            recordings += 1
            total += rec.size()
            for index in rec.unsent():
                segments += 1
                size += (rec.folder / f"{index:06d}.seg").stat().st_size
    return segments, size, recordings, total


SEGMENT_ROUTE = 'route="/v1/recordings/{recording_id}/segments/{index}"'


def server_upload_buckets(text: str) -> dict[float, float]:
    """The service's own latency histogram of segment PUTs answered 2xx (GET /metrics): le -> count."""
    buckets: dict[float, float] = {}
    for line in text.splitlines():
        ours = line.startswith("countersign_http_request_duration_seconds_bucket{") and SEGMENT_ROUTE in line
        if ours and 'method="PUT"' in line and 'status="2xx"' in line:
            le = line.split('le="', 1)[1].split('"', 1)[0]
            buckets[math.inf if le == "+Inf" else float(le)] = float(line.rsplit(" ", 1)[1])
    return buckets


def bucket_p95(before: dict[float, float], after: dict[float, float]) -> str:
    """The upper bound of the bucket holding the window's 95th percentile, as the service measured it."""
    deltas = sorted((le, after[le] - before.get(le, 0.0)) for le in after)
    total = deltas[-1][1] if deltas else 0.0
    for le, count in deltas:
        if total and count >= 0.95 * total:
            return "≤ " + ("inf" if le == math.inf else f"{le * 1000:.0f} ms")
    return "n/a"


async def monitor(run: Run, server: SoakServer, end: float) -> None:
    """Sample the server's RSS every second; print a progress line every progress-seconds.

    Each line also says what the service itself measured for the window's uploads (its /metrics
    histogram, loopback needs no token) and how late this process's event loop woke (its longest
    oversleep of the 1 s tick): a high p95 with a low service p95 and a late loop is the devices'
    process falling behind, not the service.
    """
    stats, every = run.stats, run.args.progress_seconds
    next_line = run.t0 + every
    lag = 0.0
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as scraper:

        async def scrape() -> dict[float, float]:
            try:
                return server_upload_buckets((await scraper.get("/metrics")).text)
            except httpx.HTTPError:
                return {}

        seen = await scrape()
        while run.now() < end and not run.drained.is_set():
            tick = run.now()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(run.drained.wait(), 1.0)
            now = run.now()
            lag = max(lag, now - tick - 1.0)
            stats.rss.append((now, server.rss_bytes()))
            if server.proc is not None and server.proc.poll() is not None:
                print(f"  !! the server exited ({server.proc.returncode}); stopping", flush=True)
                run.abort = True
                return
            if now >= next_line:
                window = [(s, slow) for t, s, slow in stats.latency if t > now - every]
                normal = [s for s, slow in window if not slow]
                p95 = f"{np.percentile([s for s, _ in window], 95) * 1000:7.1f} ms" if window else "    n/a   "
                p95 += f" (normal {np.percentile(normal, 95) * 1000:6.1f})" if normal else " (normal    n/a)"
                current = await scrape()
                waiting = stats.produced - stats.ok
                print(
                    f"  {now - run.t0:6.0f} s  uploads ok {stats.ok:7d}  err {sum(stats.errors.values()):5d}"
                    f"  {len(window) / every:6.1f}/s  p95 {p95}  service p95 {bucket_p95(seen, current):>9}"
                    f"  loop late {lag * 1000:5.0f} ms  server RSS {stats.rss[-1][1] / 2**20:7.1f} MB"
                    f"  spooled {waiting:6d} segments ({(stats.produced_bytes - stats.acked_bytes) / 1e6:7.1f} MB)"
                    f"  load {load_average()}",
                    flush=True,
                )
                seen, lag = current, 0.0
                next_line += every


async def soak(args: argparse.Namespace, server: SoakServer, admin: str, homes: Path) -> tuple[Run, dict[str, Any]]:
    loop = asyncio.get_running_loop()
    loop.set_default_executor(ThreadPoolExecutor(max_workers=8, thread_name_prefix="spool"))
    slow = {math.floor(i * args.devices / args.slow) for i in range(args.slow)} if args.slow else set()
    t = time.perf_counter()
    devices = await enrol_all(server.url, admin, args.devices, slow, homes, args.spool_mb)
    print(f"  enrolled {len(devices)} devices over HTTP in {time.perf_counter() - t:.1f} s", flush=True)

    frames = int(args.segment_seconds * RATE)
    pcm, what = speech_like(POOL * args.segment_seconds, RATE, kind=args.audio)
    plaintexts = [audio.encode(pcm[i * frames : (i + 1) * frames], RATE) for i in range(POOL)]
    mean = sum(map(len, plaintexts)) / POOL
    print(
        f"  segments: {args.segment_seconds:g} s mono {RATE} Hz FLAC from {what}, {POOL} encoded once,"
        f" mean {mean / 1000:.1f} KB ({mean * 8 / args.segment_seconds / 1000:.0f} kbit/s of audio); a slow"
        f" uplink at {args.slow_kbps:g} kbit/s takes {mean * 8 / (args.slow_kbps * 1000):.1f} s per segment",
        flush=True,
    )
    del pcm

    stats = Stats()
    t0 = loop.time() + 1.0
    load = args.minutes * 60
    run = Run(
        args,
        server.url,
        devices,
        plaintexts,
        stats,
        t0,
        t0 + load,
        t0 + min(args.warmup_seconds, load / 4),
        ssl.create_default_context(),
    )
    print(
        f"  load: {len(devices)} devices ({len(slow)} slow), {len(devices) / args.segment_seconds:.1f} uploads/s"
        f" offered for {args.minutes:g} min, then up to {args.drain_seconds:g} s to drain",
        flush=True,
    )
    recorders = [asyncio.create_task(run.record(d)) for d in devices]
    uploaders = [asyncio.create_task(run.upload(d)) for d in devices]
    end = t0 + load + args.drain_seconds
    watcher = asyncio.create_task(monitor(run, server, end))

    await asyncio.sleep(max(0.0, run.warm - loop.time()))
    marks: dict[str, Any] = {"rss_warm": server.rss_bytes(), "cpu_warm": server.cpu_seconds()}
    marks["pg_warm"] = postgres_cpu(args.database) if args.database else {}
    marks["client_warm"] = time.process_time()
    marks["ok_warm"] = stats.ok
    await asyncio.gather(*recorders)
    marks["rss_load_end"] = server.rss_bytes()
    marks["load_end"] = loop.time()
    drain_started = loop.time()
    pending = [u for u in uploaders if not u.done()]
    if pending:
        _done, pending_set = await asyncio.wait(pending, timeout=max(0.0, end - loop.time()))
        pending = list(pending_set)
    marks["drain_seconds"] = loop.time() - drain_started
    marks["drain_timed_out"] = bool(pending)
    run.abort = True
    for task in pending:
        task.cancel()
    await asyncio.gather(*uploaders, return_exceptions=True)
    run.drained.set()
    await watcher
    marks["rss_end"] = server.rss_bytes()
    marks["cpu_end"] = server.cpu_seconds()
    marks["pg_end"] = postgres_cpu(args.database) if args.database else {}
    marks["client_end"] = time.process_time()
    marks["end"] = loop.time()
    marks["spools"] = await asyncio.to_thread(scan_spools, devices)
    return run, marks


def report(args: argparse.Namespace, run: Run, marks: dict[str, Any], server: SoakServer, cpu_start: float) -> bool:
    """Print the figures; True if every goal was met."""
    stats, n_slow = run.stats, sum(d.slow for d in run.devices)
    after = [(s, slow) for t, s, slow in stats.latency if t >= run.warm]
    delays = [(s, slow) for t, s, slow in stats.delay if t >= run.warm]
    errors = sum(stats.errors.values())
    print("\nErrors by kind (goal 0; every transient one was retried, as a device would):")
    for kind, count in stats.errors.most_common():
        print(f"  {count:7d}  {kind}")
    if not stats.errors:
        print("        0")
    if stats.spool_full:
        print(f"  {stats.spool_full:7d}  spool full: a recording closed early (--spool-mb {args.spool_mb})")
    logged = server.exceptions()
    if logged:
        print("  the server logged:")
        for line in logged[:5]:
            print(f"    {line}")

    print(f"\nUpload latency (PUT to 201, uploads acknowledged after the {run.warm - run.t0:.0f} s warm-up):")
    print(f"  all devices     {percentiles([s for s, _ in after])}")
    print(f"  normal devices  {percentiles([s for s, slow in after if not slow])}")
    if n_slow:
        print(f"  slow devices    {percentiles([s for s, slow in after if slow])}  ({args.slow_kbps:g} kbit/s)")
    print("Delay from spooled to acknowledged (what a device's spool holds, in time):")
    print(f"  normal devices  {percentiles([s for s, slow in delays if not slow])}")
    if n_slow:
        print(f"  slow devices    {percentiles([s for s, slow in delays if slow])}")

    offered = len(run.devices) / args.segment_seconds
    load_seconds = marks["load_end"] - run.warm
    achieved = (stats.ok_load - marks["ok_warm"]) / load_seconds if load_seconds > 0 else float("nan")
    print(
        f"\nThroughput: offered {offered:.1f} uploads/s; acknowledged {achieved:.1f}/s between warm-up and the end"
        f" of recording ({achieved / offered:.0%}); {stats.produced} segments spooled, {stats.ok} acknowledged"
        f" in all ({stats.ok / max(1, stats.produced):.1%}), {stats.opened} recordings opened, {stats.cleared}"
        " cleared from the spools"
    )
    if stats.late_max > 1.0:
        print(f"  NOTE: the generator fell up to {stats.late_max:.1f} s behind its schedule (client-bound)")

    rss = [b for _, b in stats.rss]
    warm, end_rss, peak = marks["rss_warm"], marks["rss_end"], max(rss, default=0)
    print(
        f"\nServer RSS (goal flat): after warm-up {warm / 2**20:.1f} MB, end of recording"
        f" {marks['rss_load_end'] / 2**20:.1f} MB, end {end_rss / 2**20:.1f} MB (x{end_rss / warm:.2f}),"
        f" peak {peak / 2**20:.1f} MB (x{peak / warm:.2f})"
    )

    segments, size, recordings, total = marks["spools"]
    drain = "timed out" if marks["drain_timed_out"] else "drained"
    print(
        f"\nSpools at the end (goal 0), after {marks['drain_seconds']:.1f} s of drain ({drain}):"
        f" {segments} unsent segments, {size / 1e6:.1f} MB, in {recordings} recordings"
        f" ({total / 1e6:.1f} MB of spool files)"
    )
    slow_left = [d for d in run.devices if d.slow and any(True for _ in d.spool.recordings())]
    if slow_left:
        print(f"  {len(slow_left)} of them are slow devices")

    cpu = marks["cpu_end"] - cpu_start
    load_cpu = marks["cpu_end"] - marks["cpu_warm"]
    wall = marks["end"] - run.warm
    print(
        f"\nService CPU: {cpu:.1f} s in all (enrolment included); {load_cpu:.1f} s from warm-up to the end"
        f" = {load_cpu / wall:.2f} cores, {load_cpu * 1000 / max(1, stats.ok - marks['ok_warm']):.1f} ms per upload"
    )
    if args.database:
        pg = sum(v - marks["pg_warm"].get(k, 0.0) for k, v in marks["pg_end"].items())
        print(f"  PostgreSQL backends: {pg:.1f} s from warm-up to the end (a lower bound)")
    client = marks["client_end"] - marks["client_warm"]
    print(f"  this process (all devices): {client:.1f} s = {client / wall:.2f} cores")
    return not errors and not stats.spool_full and segments == 0 and achieved >= 0.95 * offered


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=500, help="simulated devices (default 500)")
    parser.add_argument("--slow", type=int, default=20, help="of them with a throttled uplink (default 20)")
    parser.add_argument("--slow-kbps", type=float, default=256.0, help="the slow uplink, kbit/s (default 256)")
    parser.add_argument("--minutes", type=float, default=10.0, help="minutes of recording (default 10)")
    parser.add_argument("--segment-seconds", type=float, default=5.0, help="audio per segment (default 5)")
    parser.add_argument("--recording-seconds", type=float, default=60.0, help="one recording's length (default 60)")
    parser.add_argument("--drain-seconds", type=float, default=60.0, help="most wait for the spools to empty (60)")
    parser.add_argument("--warmup-seconds", type=float, default=30.0, help="excluded from figures (default 30)")
    parser.add_argument("--progress-seconds", type=float, default=30.0, help="between progress lines (default 30)")
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite", help="the database")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes (default 1)")
    parser.add_argument(
        "--unbounded-pool",
        action="store_true",
        help="diagnostic: run the service with the database pool's overflow unbounded (bench/soak_server.py)",
    )
    parser.add_argument("--spool-mb", type=int, default=200, help="each device's spool limit (default 200)")
    parser.add_argument("--audio", choices=["auto", "espeak", "noise"], default="auto", help="test audio source")
    parser.add_argument(
        "--spool-dir",
        type=Path,
        default=Path("/dev/shm") if Path("/dev/shm").is_dir() else None,
        help="parent of the device homes (default /dev/shm: tmpfs, so that 500 devices' fsyncs, each on its own"
        " disk in reality, do not compete with the server's on this one)",
    )
    parser.add_argument("--workdir", type=Path, default=None, help="parent of the server's data dir (default /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the data dir, homes and server log")
    args = parser.parse_args()
    if args.devices < 1 or not 0 <= args.slow <= args.devices or args.minutes <= 0:
        parser.error("need --devices >= 1, 0 <= --slow <= --devices, --minutes > 0")
    if args.unbounded_pool and args.workers != 1:
        parser.error("--unbounded-pool patches one server process: use --workers 1")
    started, load_at_start = time.perf_counter(), load_average()

    print("Countersign soak: devices recording in real time against one service on loopback")
    print(
        f"  code: {revision()}; load average now {load_at_start}; {os.cpu_count()} CPUs shared by the service,"
        " the devices (this process) and the database"
    )
    # Sockets, spool files and recording locks: a few per device, on both sides.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, 4 * args.devices + 256))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))

    # The hard cap: enrolment, the load, the drain and a margin; then everything is killed.
    cap = 180 + args.devices * 0.2 + args.minutes * 60 + args.drain_seconds + 120
    server_ref: list[SoakServer] = []

    def watchdog() -> None:
        print(f"\n  !! hard wall-clock cap of {cap:.0f} s reached: killing the server and exiting", flush=True)
        for s in server_ref:
            s.kill()
        os._exit(3)

    timer = threading.Timer(cap, watchdog)
    timer.daemon = True
    timer.start()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with SIGINT ignored (nohup, &)

    work = Path(tempfile.mkdtemp(prefix="countersign-soak-", dir=args.workdir))
    homes = Path(tempfile.mkdtemp(prefix="countersign-soak-homes-", dir=args.spool_dir))
    env = dict(SERVICE_ENV)
    args.database = ""
    ok = False
    try:
        if args.backend == "postgres":
            import psycopg

            args.database = f"bench_soak_{os.getpid()}"
            with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{args.database}"')
            env["COUNTERSIGN_DATABASE_URL"] = f"postgresql+psycopg://root@127.0.0.1:5432/{args.database}"
        data = work / "data"
        admin = init_countersign(data, env)
        port = free_port()
        module = "bench.soak_server" if args.unbounded_pool else "countersign"
        argv = [sys.executable, "-m", module, "server", "run", "--data", str(data), "--host", "127.0.0.1"]
        argv += ["--port", str(port), "--workers", str(args.workers)]
        server = SoakServer("countersign", argv, port, work / "countersign.log", env, args.workers)
        server_ref.append(server)
        server.start("/healthz")
        cpu_start = server.cpu_seconds()
        store = f"PostgreSQL database {args.database}" if args.database else "SQLite (WAL, synchronous=FULL)"
        if args.unbounded_pool:
            store += " (DIAGNOSTIC: database pool overflow unbounded, bench/soak_server.py)"
        print(
            f"  service: {server.url}, {args.workers} uvicorn worker(s), {store} + files under {data};"
            f" device homes and spools under {homes}"
        )
        run, marks = asyncio.run(soak(args, server, admin, homes))
        ok = report(args, run, marks, server, cpu_start)
    finally:
        for s in server_ref:
            s.stop()
        if args.database:
            import psycopg

            with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')
        if args.keep:
            print(f"\n  kept {work} and {homes}")
        else:
            shutil.rmtree(work, ignore_errors=True)
            shutil.rmtree(homes, ignore_errors=True)
        timer.cancel()
    print(
        f"\n{'all goals met' if ok else 'GOALS NOT MET'}; run time {time.perf_counter() - started:.0f} s;"
        f" load average {load_average()} (at start {load_at_start})"
    )


if __name__ == "__main__":
    main()
