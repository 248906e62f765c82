"""Ingest throughput: segment uploads per second through Countersign's full path, against a bare baseline.

Countersign runs as a real server (`python -m countersign server run --workers W`, uvicorn) on
127.0.0.1. N simulated devices each open one recording and upload its chain of signed, encrypted
FLAC segments in order, one keep-alive connection per device (bench/raw_http.py's lean client, or
httpx with --client httpx; one thread per device). Every
upload goes through the whole path: bearer-token auth, Ed25519 verification, hash chain check,
blob store write, database commit, access-log row, uvicorn access log.

Backends (--backends, one or both):

- sqlite-fs (default): the embedded shape, SQLite (WAL, synchronous=FULL) and the filesystem blob
  store (write + fsync) in one data directory.
- postgres-s3: the scale-out shape, a fresh PostgreSQL database (dropped at the end) and an S3 bucket
  with object lock on moto's S3 server, which runs as a separate process on loopback. moto is an
  in-memory Python emulator competing for the same cores: its cost is not S3's (it writes nothing
  to disk, and it is slower per request than S3 in CPU). Its CPU per upload, and that of the
  database's PostgreSQL backends, are measured from /proc and printed.

The baseline, measured in the same run with the same number of uvicorn workers, is a bare ASGI app
(bench/baseline_app.py): it receives the same bodies and headers, writes each body to a file with
fsync (in a worker thread) and answers 201.

A device stops at its first refused upload (its chain is broken from there on): such rows are
marked "(errors)" and the server's logged exceptions are printed.

Envelopes, statements and signatures are all computed before the clock starts, so the client does
little more than HTTP. The client still shares the machine's cores with the server: its CPU per
upload is printed so that the figures can be read with that in mind. With httpx it was ~1 ms per
upload, as much as the baseline server's own; the raw client's is ~0.1 ms.

    .venv/bin/python bench/ingest.py                     # sqlite-fs, 1 worker, devices 1,4,16; 10 s each
    .venv/bin/python bench/ingest.py --devices 64 --seconds 60
    .venv/bin/python bench/ingest.py --backends sqlite-fs,postgres-s3 --workers 1,2,4 --devices 4,16
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
import nacl.public  # noqa: E402
import nacl.signing  # noqa: E402
import numpy as np  # noqa: E402

from bench._audio import speech_like  # noqa: E402
from bench._meta import load_average, revision  # noqa: E402
from bench.raw_http import RawClient, RawHTTPError  # noqa: E402
from consent.catalogue import builtin_notices, pick  # noqa: E402
from consent.records import ConsentRecord  # noqa: E402
from evidence import audio, wire  # noqa: E402
from evidence.envelope import HEADER_BYTES, TAG_BYTES  # noqa: E402
from evidence.writer import RecordingWriter  # noqa: E402

RATE = 16000
POOL = 24  # distinct FLAC plaintexts, cycled through the segments
CLK_TCK = os.sysconf("SC_CLK_TCK")
BACKENDS = ("sqlite-fs", "postgres-s3")
PG_ADMIN_URL = "postgresql://root@127.0.0.1:5432/test"
OPEN_RECORDINGS = 10_000  # COUNTERSIGN_MAX_OPEN_RECORDINGS for the bench's servers (see Backend.server)


# --------------------------------------------------------------------------- servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment tests give the CLI: no inherited COUNTERSIGN_* or AWS_*, development mode, + extra."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COUNTERSIGN_", "AWS_"))}
    env.update({"COUNTERSIGN_ENV": "development", "PYTHONUNBUFFERED": "1"})
    env.update(extra or {})
    return env


def _proc_cpu(pid: int) -> float:
    """utime + stime of one process in seconds (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _parents() -> dict[int, int]:
    """pid -> parent pid for every process we can see."""
    out: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                out[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    return out


def tree_cpu(root: int) -> float:
    """CPU seconds of a process and its live descendants (uvicorn's supervisor and its workers)."""
    parents = _parents()
    pids, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, pp in parents.items() if pp == parent and pid not in pids]
        pids.update(children)
        frontier.extend(children)
    return sum(_proc_cpu(pid) for pid in pids)


def postgres_cpu(database: str) -> dict[int, float]:
    """CPU seconds of each PostgreSQL backend connected to one database ("postgres: user db host ...")."""
    out: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if title.startswith("postgres: ") and f" {database} " in title:
            out[int(entry.name)] = _proc_cpu(int(entry.name))
    return out


def cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU spent between two per-process snapshots by the processes alive at the end (the CPU of a
    process that exited in between is lost, so with connection churn this is a lower bound)."""
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


class Server:
    """A server subprocess on a loopback port, stopped by stop() (SIGTERM, then SIGKILL).

    start() waits until `workers` uvicorn workers have logged their start-up (0: until the probe answers).
    """

    def __init__(
        self,
        name: str,
        argv: list[str],
        port: int,
        log: Path,
        env: dict[str, str] | None = None,
        workers: int = 1,
    ) -> None:
        self.name, self.argv, self.port, self.log = name, argv, port, log
        self.env, self.workers = env or {}, workers
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, probe: str) -> None:
        offset = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv, env=clean_env(self.env), stdout=log, stderr=subprocess.STDOUT, cwd=REPO
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log.read_text(errors='replace')[-2000:]}")
            started = self.log.read_bytes()[offset:].count(b"Application startup complete")
            try:
                if httpx.get(self.url + probe, timeout=1).status_code == 200 and started >= self.workers:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not start: {self.log.read_text(errors='replace')[-2000:]}")

    def cpu_seconds(self) -> float:
        """utime + stime of the server process and its workers."""
        assert self.proc is not None
        return tree_cpu(self.proc.pid) if self.workers > 1 else _proc_cpu(self.proc.pid)

    def exceptions(self) -> list[str]:
        """Distinct exception lines the server logged (uvicorn prints tracebacks into its log)."""
        seen: dict[str, None] = {}
        for line in self.log.read_text(errors="replace").splitlines():
            if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Exit)\b.*:", line):
                seen.setdefault(line.strip()[:300], None)
        return list(seen)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None


def fsync_ms(folder: Path, size: int, count: int = 20) -> float:
    """Median time to write and fsync one segment-sized file here: the disk's floor under every upload."""
    folder.mkdir(parents=True, exist_ok=True)
    body, times = os.urandom(size), []
    for i in range(count):
        start = time.perf_counter()
        fd = os.open(folder / f"probe-{i}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.write(fd, body)
        os.fsync(fd)
        os.close(fd)
        times.append(time.perf_counter() - start)
    shutil.rmtree(folder)
    return float(np.median(times) * 1000)


def init_countersign(data: Path, env: dict[str, str] | None = None) -> str:
    """`countersign server init`, as an operator would (same environment as the server); the admin token."""
    done = subprocess.run(
        [sys.executable, "-m", "countersign", "server", "init", "--data", str(data)],
        env=clean_env(env),
        capture_output=True,
        text=True,
        timeout=180,
        cwd=REPO,
    )
    if done.returncode != 0:
        raise RuntimeError(f"countersign server init failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    out = done.stdout
    return next(line.split()[-1] for line in out.splitlines() if line.startswith("admin token"))


class Backend:
    """Where one Countersign instance keeps its data: env for `server init`/`run`, set-up and tear-down."""

    def __init__(self, name: str, work: Path) -> None:
        self.name, self.work = name, work / name
        self.data = self.work / "data"
        self.env: dict[str, str] = {}
        self.database = ""
        self.moto: Server | None = None
        self.admin = ""
        self.devices: list[Device] = []

    def describe(self) -> str:
        if self.name == "sqlite-fs":
            return f"SQLite (WAL, synchronous=FULL) + filesystem store under {self.data}"
        assert self.moto is not None
        return (
            f"PostgreSQL database {self.database} + moto S3 {self.moto.url} bucket {self.env['COUNTERSIGN_S3_BUCKET']}"
        )

    def setup(self) -> None:
        self.work.mkdir(parents=True)
        if self.name == "postgres-s3":
            import boto3
            import psycopg
            from botocore.config import Config

            self.database = f"bench_ingest_{os.getpid()}"
            with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{self.database}"')
            port = free_port()
            self.moto = Server(
                "moto",
                [sys.executable, "-c", "from moto.server import main; main()", "-H", "127.0.0.1", "-p", str(port)],
                port,
                self.work / "moto.log",
                workers=0,
            )
            self.moto.start("/moto-api/")
            bucket = "countersign-bench"
            s3 = boto3.session.Session().client(
                "s3",
                endpoint_url=self.moto.url,
                region_name="us-east-1",
                aws_access_key_id="testing",
                aws_secret_access_key="testing",
                config=Config(s3={"addressing_style": "path"}),
            )
            s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
            missing = str(self.work / "no-aws-config")
            self.env = {
                "COUNTERSIGN_DATABASE_URL": f"postgresql+psycopg://root@127.0.0.1:5432/{self.database}",
                "COUNTERSIGN_STORE": "s3",
                "COUNTERSIGN_S3_ENDPOINT_URL": self.moto.url,
                "COUNTERSIGN_S3_BUCKET": bucket,
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_CONFIG_FILE": missing,
                "AWS_SHARED_CREDENTIALS_FILE": missing,
                "AWS_EC2_METADATA_DISABLED": "true",
            }
        self.admin = init_countersign(self.data, self.env)

    def server(self, workers: int) -> Server:
        port = free_port()
        argv = [sys.executable, "-m", "countersign", "server", "run", "--data", str(self.data), "--port", str(port)]
        argv += ["--workers", str(workers)]
        # The bench reuses its devices across measurements and worker counts, and leaves each recording
        # open (a fresh one per measurement): the per-device open-recording quota (default 4) would
        # refuse the fifth with 429. The quota is not what is measured, so it is raised here.
        env = {**self.env, "COUNTERSIGN_MAX_OPEN_RECORDINGS": str(OPEN_RECORDINGS)}
        return Server(f"countersign {self.name}", argv, port, self.work / "countersign.log", env, workers)

    def monitors(self) -> dict[str, Callable[[], dict[int, float]]]:
        """Per-process CPU snapshots taken around each measurement besides the server's own."""
        if self.moto is None:
            return {}
        moto, database = self.moto, self.database

        def moto_cpu() -> dict[int, float]:
            assert moto.proc is not None
            return {moto.proc.pid: moto.cpu_seconds()}

        return {"moto": moto_cpu, "postgres": lambda: postgres_cpu(database)}

    def exceptions(self) -> list[str]:
        log = self.work / "countersign.log"
        seen: dict[str, None] = {}
        if log.exists():
            for line in log.read_text(errors="replace").splitlines():
                if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Exit)\b.*:", line):
                    seen.setdefault(line.strip()[:300], None)
        return list(seen)

    def teardown(self) -> None:
        if self.moto is not None:
            self.moto.stop()
        if self.database:
            import psycopg

            try:
                with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
            except psycopg.Error as exc:
                print(f"  WARNING: could not drop database {self.database}: {exc}")


# --------------------------------------------------------------------------- devices and segments


@dataclass
class Device:
    id: str
    token: str
    key: nacl.signing.SigningKey
    evidence_keys: dict[str, bytes]


@dataclass
class Upload:
    path: str
    headers: dict[str, str]
    body: bytes


def enrol_devices(url: str, admin: str, count: int) -> list[Device]:
    auth = {"Authorization": f"Bearer {admin}"}
    devices = []
    with httpx.Client(base_url=url, timeout=30) as client:
        client.post("/v1/sites", json={"id": "bench"}, headers=auth).raise_for_status()
        for i in range(count):
            created = client.post("/v1/devices", json={"name": f"bench-{i}", "site": "bench"}, headers=auth)
            created.raise_for_status()
            key = nacl.signing.SigningKey.generate()
            reply = client.post(
                wire.ENROL,
                json={"code": created.json()["enrolment_code"], "public_key": bytes(key.verify_key).hex()},
            )
            reply.raise_for_status()
            body = reply.json()
            keys = {k["key_id"]: bytes.fromhex(k["public_key"]) for k in body["evidence_keys"]}
            devices.append(Device(body["device_id"], body["token"], key, keys))
    return devices


@dataclass
class Recording:
    device: Device
    writer: RecordingWriter

    @property
    def id(self) -> uuid.UUID:
        return self.writer.id

    @property
    def create_body(self) -> dict[str, Any]:
        return self.writer.create_body()


def new_recording(device: Device, segment_seconds: float) -> Recording:
    """A recording as recorder.recording.LiveRecording makes it (the same writer): consent given, FLAC."""
    now = datetime.now(UTC)
    consent = ConsentRecord.for_notice(
        pick(list(builtin_notices()), "en"),
        method="displayed",
        presented_at=now,
        decided_at=now,
        outcome="given",
        staff_code="bench",
    )
    writer = RecordingWriter.start(
        device.key,
        device.id,
        consent.to_dict(),
        device.evidence_keys,
        sample_rate=RATE,
        channels=1,
        segment_seconds=segment_seconds,
        started_at=now,
    )
    return Recording(device, writer)


def build_chain(rec: Recording, count: int, plaintexts: list[tuple[bytes, bytes]]) -> list[Upload]:
    """`count` chained segments, sealed and signed by the recorder's writer (none final)."""
    uploads = []
    auth = {"Authorization": f"Bearer {rec.device.token}", "Content-Type": wire.SEGMENT_CONTENT_TYPE}
    for i in range(count):
        plaintext, _ = plaintexts[i % len(plaintexts)]
        sealed = rec.writer.seal(plaintext, final=False)
        uploads.append(Upload(wire.segment_path(rec.id, i), {**auth, **sealed.upload_headers()}, sealed.envelope))
    return uploads


# --------------------------------------------------------------------------- load


@dataclass
class DeviceRun:
    latencies: list[float] = field(default_factory=list)
    bytes_sent: int = 0
    last_done: float = 0.0
    exhausted: bool = False
    errors: list[str] = field(default_factory=list)


@dataclass
class Measurement:
    server: str
    devices: int
    uploads: int
    seconds: float
    bytes_sent: int
    p50_ms: float
    p95_ms: float
    server_cpu_ms: float  # per upload
    client_cpu_ms: float  # per upload
    server_cores: float  # server CPU seconds per wall second during the measurement
    exhausted: bool
    errors: list[str]
    other_cpu_ms: dict[str, float] = field(default_factory=dict)  # per upload: moto, postgres

    @property
    def rate(self) -> float:
        return self.uploads / self.seconds if self.seconds else 0.0

    @property
    def mb_per_s(self) -> float:
        return self.bytes_sent / self.seconds / 1e6 if self.seconds else 0.0


CLIENTS = ("httpx", "raw")  # --client: httpx, or bench.raw_http's lean keep-alive client


def _device_thread(
    url: str,
    client_kind: str,
    uploads: list[Upload],
    cycle: bool,
    warmup: int,
    ready: threading.Barrier,
    go: threading.Event,
    clock: dict[str, float],
    out: DeviceRun,
) -> None:
    """Send `warmup` uploads, wait for the start, then upload until the deadline (or the chain runs out)."""
    with httpx.Client(base_url=url, timeout=60) if client_kind == "httpx" else RawClient(url, 60) as client:

        def send(k: int) -> int:
            """Upload number k; its size, or -1 if it was refused (the chain is then broken)."""
            up = uploads[k % len(uploads)] if cycle else uploads[k]
            path = f"{up.path.rsplit('/', 1)[0]}/{k}" if cycle else up.path
            try:
                reply = client.put(path, content=up.body, headers=up.headers)
            except (httpx.HTTPError, RawHTTPError) as exc:
                out.errors.append(f"{path}: {exc!r}")
                return -1
            if reply.status_code != 201:
                out.errors.append(f"{path}: {reply.status_code} {reply.text[:200]}")
                return -1
            return len(up.body)

        try:
            ok = all(send(k) >= 0 for k in range(warmup))
        finally:
            ready.wait()
        go.wait()
        deadline, k = clock["deadline"], warmup
        while ok and time.perf_counter() < deadline:
            if not cycle and k >= len(uploads):
                out.exhausted = True
                break
            start = time.perf_counter()
            size = send(k)
            if size < 0:
                break
            out.last_done = time.perf_counter()
            out.latencies.append(out.last_done - start)
            out.bytes_sent += size
            k += 1


def measure(
    server: Server,
    name: str,
    per_device: list[list[Upload]],
    cycle: bool,
    warmup: int,
    seconds: float,
    monitors: dict[str, Callable[[], dict[int, float]]] | None,
    client: str,
) -> Measurement:
    n, monitors = len(per_device), monitors or {}
    runs = [DeviceRun() for _ in range(n)]
    ready, go = threading.Barrier(n + 1), threading.Event()
    clock: dict[str, float] = {}
    threads = [
        threading.Thread(
            target=_device_thread, args=(server.url, client, ups, cycle, warmup, ready, go, clock, run), daemon=True
        )
        for ups, run in zip(per_device, runs, strict=True)
    ]
    for t in threads:
        t.start()
    ready.wait()
    cpu0, client0 = server.cpu_seconds(), time.process_time()
    others0 = {k: read() for k, read in monitors.items()}
    t0 = time.perf_counter()
    clock["deadline"] = t0 + seconds
    go.set()
    for t in threads:
        t.join(timeout=seconds + 120)
    cpu1, client1 = server.cpu_seconds(), time.process_time()
    others1 = {k: read() for k, read in monitors.items()}
    latencies = [x for r in runs for x in r.latencies]
    uploads = len(latencies)
    ends = [r.last_done for r in runs if r.latencies]
    elapsed = max(ends) - t0 if ends else 0.0
    p50, p95 = np.percentile(latencies, [50, 95]) * 1000 if latencies else (float("nan"), float("nan"))
    return Measurement(
        server=name,
        devices=n,
        uploads=uploads,
        seconds=elapsed,
        bytes_sent=sum(r.bytes_sent for r in runs),
        p50_ms=float(p50),
        p95_ms=float(p95),
        server_cpu_ms=(cpu1 - cpu0) * 1000 / uploads if uploads else float("nan"),
        client_cpu_ms=(client1 - client0) * 1000 / uploads if uploads else float("nan"),
        server_cores=(cpu1 - cpu0) / elapsed if elapsed > 0 else float("nan"),
        exhausted=any(r.exhausted for r in runs),
        errors=[e for r in runs for e in r.errors],
        other_cpu_ms={
            k: cpu_delta(others0[k], others1[k]) * 1000 / uploads if uploads else float("nan") for k in monitors
        },
    )


def open_recordings(url: str, recs: list[Recording]) -> None:
    with httpx.Client(base_url=url, timeout=30) as client:
        for rec in recs:
            reply = client.post(
                wire.RECORDINGS,
                json=rec.create_body,
                headers={"Authorization": f"Bearer {rec.device.token}"},
            )
            if reply.status_code != 201:
                raise RuntimeError(f"opening recording refused: {reply.status_code} {reply.text}")


def statements_per_upload(work: Path, uploads: int = 5) -> tuple[float, float, list[str]]:
    """SQL statements and commits per segment upload, counted in process (SQLAlchemy engine events)
    on a fresh SQLite service: (statements, commits, the statements of one upload)."""
    from fastapi.testclient import TestClient

    from api.app import create_app
    from api.bootstrap import init_data_dir
    from api.core.db import StatementCounter
    from api.core.settings import Settings
    from tests.support.world import build_world

    settings = Settings(data_dir=work / "statement-count", env="development")
    init = init_data_dir(settings)
    app = create_app(settings)
    with TestClient(app) as client:
        world = build_world(client, init.admin_token)
        device = world.device
        rec = device.new_recording()
        device.add_segments(rec, uploads + 1, final=False)
        client.post(wire.RECORDINGS, json=rec.create_body(), headers=device.auth).raise_for_status()

        def put(index: int) -> None:
            seg = rec.segments[index]
            path = wire.segment_path(rec.id, index)
            client.put(path, content=seg.envelope, headers=device.segment_headers(seg)).raise_for_status()

        put(0)  # the first upload of a recording is the same, but keep the count to the steady state
        one: list[str] = []
        with StatementCounter(app.state.services.engine) as counter:
            for index in range(1, uploads + 1):
                put(index)
                one = one or list(counter.statements)
    return len(counter.statements) / uploads, counter.commits / uploads, one


# --------------------------------------------------------------------------- main


def parse_ints(text: str) -> list[int]:
    values = [int(x) for x in text.split(",") if x.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("want positive integers, e.g. 1,4,16")
    return values


parse_devices = parse_ints  # the old name


def parse_backends(text: str) -> list[str]:
    values = [x.strip() for x in text.split(",") if x.strip()]
    unknown = [v for v in values if v not in BACKENDS]
    if not values or unknown:
        raise argparse.ArgumentTypeError(f"backends are {', '.join(BACKENDS)} (comma-separated), not {text!r}")
    return list(dict.fromkeys(values))


@dataclass
class Row:
    backend: str
    workers: int
    baseline: Measurement
    countersign: Measurement

    @property
    def ratio(self) -> str:
        b, c = self.baseline, self.countersign
        if c.errors or b.errors:
            return "failed"
        return f"{c.rate / b.rate:.2f}x" if b.rate else ""


def report_errors(m: Measurement, exceptions: Callable[[], list[str]]) -> None:
    for err in m.errors[:3]:
        print(f"    ERROR {m.server}: {err}")
    if m.errors:
        print(f"    ERROR {m.server}: {len(m.errors)} uploads failed; the server logged:")
        for line in exceptions()[:3]:
            print(f"      {line}")
    if m.exhausted:
        print(f"    NOTE {m.server}: a device ran out of precomputed segments; raise --max-precompute-mb")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=parse_ints, default=[1, 4, 16], help="concurrent devices (default 1,4,16)")
    parser.add_argument(
        "--backends",
        "--backend",
        type=parse_backends,
        default=["sqlite-fs"],
        help=f"comma-separated, of {', '.join(BACKENDS)} (default sqlite-fs)",
    )
    parser.add_argument(
        "--workers", type=parse_ints, default=[1], help="uvicorn worker processes, e.g. 1,2,4 (default 1)"
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="timed seconds per measurement (default 10)")
    parser.add_argument("--segment-seconds", type=float, default=5.0, help="audio per segment (default 5)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed uploads per device first (default 3)")
    parser.add_argument("--counters", type=int, default=10_000, help="reference deployment size (default 10000)")
    parser.add_argument(
        "--max-precompute-mb", type=int, default=1500, help="memory cap for precomputed envelopes (default 1500)"
    )
    parser.add_argument("--audio", choices=["auto", "espeak", "noise"], default="auto", help="test audio source")
    parser.add_argument(
        "--client",
        choices=CLIENTS,
        default="raw",
        help="the devices' HTTP client: raw (default), a lean keep-alive client (bench/raw_http.py) that leaves"
        " the servers more of the shared cores, or httpx (the figures before 2026-12-06)",
    )
    parser.add_argument("--workdir", type=Path, default=None, help="parent of the temporary data dirs (default /tmp)")
    parser.add_argument(
        "--keep", action="store_true", help="keep the data dirs and server logs (databases are dropped)"
    )
    args = parser.parse_args()
    started, load_at_start = time.perf_counter(), load_average()

    reference = args.counters / args.segment_seconds
    print("Countersign ingest benchmark: segment uploads/s through the full path vs. a bare fsync baseline")
    print(
        f"  loopback 127.0.0.1, backends {','.join(args.backends)}, uvicorn workers "
        f"{','.join(map(str, args.workers))} (baseline: the same count), devices {','.join(map(str, args.devices))}, "
        f"{args.seconds:g} s timed per measurement (+{args.warmup} warm-up uploads per device), "
        f"{os.cpu_count()} CPUs shared by client ({args.client}), servers, moto and PostgreSQL"
    )
    print(f"  code: {revision()}; load average now {load_at_start}")

    frames = int(args.segment_seconds * RATE)
    pcm, what = speech_like(POOL * args.segment_seconds, RATE, kind=args.audio)
    plaintexts = []
    for i in range(POOL):
        flac = audio.encode(pcm[i * frames : (i + 1) * frames], RATE)
        plaintexts.append((flac, hashlib.sha256(flac).digest()))
    mean_flac = sum(len(p) for p, _ in plaintexts) / POOL
    envelope_bytes = mean_flac + HEADER_BYTES + TAG_BYTES
    print(
        f"  segments: {args.segment_seconds:g} s mono {RATE} Hz FLAC from {what}, "
        f"mean {mean_flac / 1000:.1f} KB plaintext, {envelope_bytes / 1000:.1f} KB envelope"
    )

    work = Path(tempfile.mkdtemp(prefix="countersign-bench-ingest-", dir=args.workdir))
    backends = [Backend(name, work) for name in args.backends]
    # The baseline checks nothing, so its chain may come from a device no server knows.
    nobody = Device(
        "baseline",
        "unused",
        nacl.signing.SigningKey.generate(),
        {"k": bytes(nacl.public.PrivateKey.generate().public_key)},
    )
    running: list[Server] = []
    rows: list[Row] = []
    try:
        for backend in backends:
            t = time.perf_counter()
            backend.setup()
            print(f"  {backend.name}: {backend.describe()} (set up + server init in {time.perf_counter() - t:.1f} s)")
        stmts, commits, one = statements_per_upload(work)
        print(f"  SQL per upload (in process, SQLite): {stmts:.1f} statements, {commits:.1f} commits:")
        for line in one:
            print(f"    {line[:110]}")
        floor = fsync_ms(work / "probe", int(envelope_bytes))
        print(f"  disk: write+fsync of one envelope-sized file takes {floor:.1f} ms (median of 20)")

        for workers in args.workers:
            port = free_port()
            argv = [sys.executable, "-m", "bench.baseline_app", "--dir", str(work / "baseline"), "--port", str(port)]
            base = Server("baseline", [*argv, "--workers", str(workers)], port, work / "baseline.log", workers=workers)
            running.append(base)
            base.start("/")
            baselines: dict[int, Measurement] = {}
            for backend in backends:
                cs = backend.server(workers)
                running.append(cs)
                cs.start("/healthz")
                if not backend.devices:
                    backend.devices = enrol_devices(cs.url, backend.admin, max(args.devices))
                print(
                    f"\n  {backend.name}, {workers} worker(s): servers up ({cs.url} countersign, {base.url} baseline)"
                )
                for n in args.devices:
                    b = baselines.get(n)
                    if b is None:
                        # Baseline: the same bodies and headers (a real chain), cycled; it checks nothing.
                        pool = build_chain(new_recording(nobody, args.segment_seconds), POOL, plaintexts)
                        b = baselines[n] = measure(
                            base, "baseline", [pool] * n, True, args.warmup, args.seconds, None, args.client
                        )
                        print(
                            f"  w={workers} n={n:<3} baseline     {b.rate:8.1f} uploads/s  p50 {b.p50_ms:6.1f} ms"
                            f"  p95 {b.p95_ms:6.1f} ms"
                        )
                        report_errors(b, base.exceptions)

                    # Countersign: one fresh recording per device, its whole chain signed in advance. The
                    # baseline's rate bounds Countersign's, so that many segments (+30%) are enough.
                    want = math.ceil(b.rate * 1.3 * args.seconds / n) + args.warmup + 10
                    cap = int(args.max_precompute_mb * 1e6 / (n * envelope_bytes))
                    per_device = max(args.warmup + 1, min(want, cap))
                    recs = [new_recording(d, args.segment_seconds) for d in backend.devices[:n]]
                    open_recordings(cs.url, recs)
                    t = time.perf_counter()
                    chains = [build_chain(rec, per_device, plaintexts) for rec in recs]
                    prep = time.perf_counter() - t
                    c = measure(
                        cs, backend.name, chains, False, args.warmup, args.seconds, backend.monitors(), args.client
                    )
                    del chains
                    others = "".join(f"  {k} CPU {v:.2f} ms/upload" for k, v in c.other_cpu_ms.items())
                    print(
                        f"  w={workers} n={n:<3} {backend.name:<12} {c.rate:8.1f} uploads/s  p50 {c.p50_ms:6.1f} ms"
                        f"  p95 {c.p95_ms:6.1f} ms  server CPU {c.server_cpu_ms:.2f} ms/upload{others}"
                        f"  ({n}x{per_device} segments precomputed in {prep:.1f} s)"
                    )
                    report_errors(c, cs.exceptions)
                    rows.append(Row(backend.name, workers, b, c))
                cs.stop()
                running.remove(cs)
            base.stop()
            running.remove(base)
    finally:
        for server in running:
            server.stop()
        for backend in backends:
            backend.teardown()
        if args.keep:
            print(f"\n  kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    print()
    print(
        "backend      workers devices  uploads  uploads/s    MB/s   p50 ms   p95 ms | baseline/s  p50 ms   p95 ms"
        " | ratio cs/base"
    )
    for r in rows:
        b, c = r.baseline, r.countersign
        print(
            f"{r.backend:<12} {r.workers:7d} {c.devices:7d} {c.uploads:8d} {c.rate:10.1f} {c.mb_per_s:7.1f} "
            f"{c.p50_ms:8.1f} {c.p95_ms:8.1f} | {b.rate:10.1f} {b.p50_ms:7.1f} {b.p95_ms:8.1f} | {r.ratio:>13}"
            f"{'  (errors)' if c.errors or b.errors else ''}{'  (ran out of segments)' if c.exhausted else ''}"
        )
    print()
    print(
        "CPU per upload (ms)  backend      workers devices   server  srv cores  moto  postgres  client"
        " | baseline server  client"
    )
    for r in rows:
        b, c = r.baseline, r.countersign
        moto, pg = c.other_cpu_ms.get("moto", float("nan")), c.other_cpu_ms.get("postgres", float("nan"))
        print(
            f"{'':20} {r.backend:<12} {r.workers:7d} {c.devices:7d} {c.server_cpu_ms:8.2f} {c.server_cores:10.2f}"
            f" {moto:5.2f} {pg:9.2f} {c.client_cpu_ms:7.2f} | {b.server_cpu_ms:15.2f} {b.client_cpu_ms:7.2f}"
        )
    if any("moto" in r.countersign.other_cpu_ms for r in rows):
        print(
            "  moto is an in-memory Python S3 emulator on the same cores: its CPU is part of what the postgres-s3"
            " figures pay for, and none of it is what S3 (or MinIO) would cost this process"
        )
        print(
            "  postgres = the database's backends alive at the end of a measurement: a lower bound when the"
            " connection pool opens and closes overflow connections (more concurrent requests than pool_size)"
        )

    print()
    print(
        f"Reference load: {args.counters} counters x one {args.segment_seconds:g} s segment each = "
        f"{reference:,.0f} uploads/s."
    )
    for name in args.backends:
        mine = [r.countersign for r in rows if r.backend == name]
        usable = [c for c in mine if not c.errors] or mine
        if not usable:
            continue
        best = max(usable, key=lambda m: m.rate)
        workers = next(r.workers for r in rows if r.countersign is best)
        if best.rate:
            print(
                f"  {name}: best {best.rate:.1f} uploads/s ({workers} worker(s), {best.devices} devices, on this"
                f" {os.cpu_count()}-CPU machine, client included): {math.ceil(reference / best.rate)} such machines;"
                f" at {best.server_cpu_ms:.2f} ms server CPU per upload, {reference * best.server_cpu_ms / 1000:.1f}"
                " cores of API CPU if nothing else limits"
            )
    if "sqlite-fs" in args.backends:
        print(
            "  (one SQLite database takes one writer at a time, so workers sharing it do not add commits;"
            " scaling out assumes postgres-s3)"
        )
    print(f"\nrun time {time.perf_counter() - started:.1f} s; load average {load_average()} (at start {load_at_start})")


if __name__ == "__main__":
    main()
