"""Ingest throughput: segment uploads per second through Countersign's full path, against a bare baseline.

Countersign runs as a real server (`python -m countersign server run`, uvicorn, one worker) on
127.0.0.1. N simulated devices each open one recording and upload its chain of signed, encrypted
FLAC segments in order, one keep-alive connection per device (httpx, one thread per device). Every
upload goes through the whole path: bearer-token auth, Ed25519 verification, hash chain check,
blob store write with fsync, SQLite commit (WAL, synchronous=FULL), access-log row, uvicorn access log.

The baseline, measured in the same run, is a bare ASGI app (bench/baseline_app.py) served by the same
uvicorn with the same options: it receives the same bodies and headers, writes each body to a file
with fsync (in a worker thread) and answers 201.

A device stops at its first refused upload (its chain is broken from there on): such rows are
marked "(errors)" and the server's logged exceptions are printed.

Envelopes, statements and signatures are all computed before the clock starts, so the client does
little more than HTTP. The client still shares the machine's cores with the server: its CPU per
upload is printed so that the figures can be read with that in mind.

    .venv/bin/python bench/ingest.py                     # devices 1,4,16; 10 s per measurement
    .venv/bin/python bench/ingest.py --devices 64 --seconds 60
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
from consent.catalogue import builtin_notices, pick  # noqa: E402
from consent.records import ConsentRecord  # noqa: E402
from evidence import FORMAT_VERSION, audio  # noqa: E402
from evidence.chain import SegmentStatement, header_hash, sign_header, sign_statement  # noqa: E402
from evidence.envelope import HEADER_BYTES, TAG_BYTES, new_data_key, seal_segment  # noqa: E402

RATE = 16000
POOL = 24  # distinct FLAC plaintexts, cycled through the segments
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def clean_env() -> dict[str, str]:
    """The environment tests give the CLI: no inherited COUNTERSIGN_*, development mode."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COUNTERSIGN_")}
    env.update({"COUNTERSIGN_ENV": "development", "PYTHONUNBUFFERED": "1"})
    return env


class Server:
    """A server subprocess on a loopback port, stopped by stop() (SIGTERM, then SIGKILL)."""

    def __init__(self, name: str, argv: list[str], port: int, log: Path) -> None:
        self.name, self.argv, self.port, self.log = name, argv, port, log
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, probe: str) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.argv, env=clean_env(), stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(self.url + probe, timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not start: {self.log.read_text()[-2000:]}")

    def cpu_seconds(self) -> float:
        """utime + stime of the server process (uvicorn with one worker serves in this process)."""
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

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
                self.proc.wait(timeout=15)
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


def init_countersign(data: Path) -> str:
    """`countersign server init`, as an operator would; returns the admin token."""
    done = subprocess.run(
        [sys.executable, "-m", "countersign", "server", "init", "--data", str(data)],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    if done.returncode != 0:
        raise RuntimeError(f"countersign server init failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    out = done.stdout
    return next(line.split()[-1] for line in out.splitlines() if line.startswith("admin token"))


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
                "/v1/enrol",
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
    id: uuid.UUID
    header: dict[str, Any]
    data_key: bytes
    create_body: dict[str, Any]


def new_recording(device: Device, segment_seconds: float) -> Recording:
    """A recording header like recorder.recording.LiveRecording builds: consent given, FLAC, sealed key."""
    rid = uuid.uuid4()
    now = datetime.now(UTC)
    consent = ConsentRecord.for_notice(
        pick(list(builtin_notices()), "en"),
        method="displayed",
        presented_at=now,
        decided_at=now,
        outcome="given",
        staff_code="bench",
    )
    header = {
        "version": FORMAT_VERSION,
        "recording_id": str(rid),
        "device_id": device.id,
        "started_at": now.isoformat(),
        "consent": consent.to_dict(),
        "sample_rate": RATE,
        "channels": 1,
        "segment_seconds": segment_seconds,
        "codec": "flac",
    }
    key = new_data_key()
    sealed = [
        {"key_id": kid, "sealed": bytes(nacl.public.SealedBox(nacl.public.PublicKey(pk)).encrypt(key)).hex()}
        for kid, pk in device.evidence_keys.items()
    ]
    body = {"header": header, "header_signature": sign_header(device.key, header).hex(), "sealed_keys": sealed}
    return Recording(device, rid, header, key, body)


def build_chain(rec: Recording, count: int, plaintexts: list[tuple[bytes, bytes]]) -> list[Upload]:
    """`count` chained segments, sealed and signed exactly as the recorder does (none final)."""
    uploads = []
    prev = header_hash(rec.header)
    auth = {"Authorization": f"Bearer {rec.device.token}", "Content-Type": "application/octet-stream"}
    for i in range(count):
        plaintext, plaintext_sha256 = plaintexts[i % len(plaintexts)]
        envelope = seal_segment(rec.data_key, rec.id, i, False, plaintext)
        st = SegmentStatement(rec.id, i, False, hashlib.sha256(envelope).digest(), plaintext_sha256, prev)
        headers = {
            **auth,
            "X-Segment-Final": "0",
            "X-Plaintext-Sha256": plaintext_sha256.hex(),
            "X-Prev-Hash": prev.hex(),
            "X-Signature": sign_statement(rec.device.key, st).hex(),
        }
        uploads.append(Upload(f"/v1/recordings/{rec.id}/segments/{i}", headers, envelope))
        prev = st.link_hash()
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

    @property
    def rate(self) -> float:
        return self.uploads / self.seconds if self.seconds else 0.0

    @property
    def mb_per_s(self) -> float:
        return self.bytes_sent / self.seconds / 1e6 if self.seconds else 0.0


def _device_thread(
    url: str,
    uploads: list[Upload],
    cycle: bool,
    warmup: int,
    ready: threading.Barrier,
    go: threading.Event,
    clock: dict[str, float],
    out: DeviceRun,
) -> None:
    """Send `warmup` uploads, wait for the start, then upload until the deadline (or the chain runs out)."""
    with httpx.Client(base_url=url, timeout=60) as client:

        def send(k: int) -> int:
            """Upload number k; its size, or -1 if it was refused (the chain is then broken)."""
            up = uploads[k % len(uploads)] if cycle else uploads[k]
            path = f"{up.path.rsplit('/', 1)[0]}/{k}" if cycle else up.path
            try:
                reply = client.put(path, content=up.body, headers=up.headers)
            except httpx.HTTPError as exc:
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


def measure(server: Server, name: str, per_device: list[list[Upload]], cycle: bool, warmup: int, seconds: float):
    n = len(per_device)
    runs = [DeviceRun() for _ in range(n)]
    ready, go = threading.Barrier(n + 1), threading.Event()
    clock: dict[str, float] = {}
    threads = [
        threading.Thread(
            target=_device_thread, args=(server.url, ups, cycle, warmup, ready, go, clock, run), daemon=True
        )
        for ups, run in zip(per_device, runs, strict=True)
    ]
    for t in threads:
        t.start()
    ready.wait()
    cpu0, client0 = server.cpu_seconds(), time.process_time()
    t0 = time.perf_counter()
    clock["deadline"] = t0 + seconds
    go.set()
    for t in threads:
        t.join(timeout=seconds + 120)
    cpu1, client1 = server.cpu_seconds(), time.process_time()
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
    )


def open_recordings(url: str, recs: list[Recording]) -> None:
    with httpx.Client(base_url=url, timeout=30) as client:
        for rec in recs:
            reply = client.post(
                "/v1/recordings",
                json=rec.create_body,
                headers={"Authorization": f"Bearer {rec.device.token}"},
            )
            if reply.status_code != 201:
                raise RuntimeError(f"opening recording refused: {reply.status_code} {reply.text}")


# --------------------------------------------------------------------------- main


def parse_devices(text: str) -> list[int]:
    values = [int(x) for x in text.split(",") if x.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("--devices wants positive integers, e.g. 1,4,16")
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=parse_devices, default=[1, 4, 16], help="concurrent devices (default 1,4,16)")
    parser.add_argument("--seconds", type=float, default=10.0, help="timed seconds per measurement (default 10)")
    parser.add_argument("--segment-seconds", type=float, default=5.0, help="audio per segment (default 5)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed uploads per device first (default 3)")
    parser.add_argument("--counters", type=int, default=10_000, help="reference deployment size (default 10000)")
    parser.add_argument(
        "--max-precompute-mb", type=int, default=1500, help="memory cap for precomputed envelopes (default 1500)"
    )
    parser.add_argument("--audio", choices=["auto", "espeak", "noise"], default="auto", help="test audio source")
    parser.add_argument("--workdir", type=Path, default=None, help="parent of the temporary data dirs (default /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the data dirs and server logs")
    args = parser.parse_args()
    started, load_at_start = time.perf_counter(), load_average()

    reference = args.counters / args.segment_seconds
    print("Countersign ingest benchmark: segment uploads/s through the full path vs. a bare fsync baseline")
    print(
        f"  loopback 127.0.0.1, uvicorn 1 worker each, devices {','.join(map(str, args.devices))}, "
        f"{args.seconds:g} s timed per measurement (+{args.warmup} warm-up uploads per device), "
        f"{os.cpu_count()} CPUs shared by client and server"
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
    servers: list[Server] = []
    results: list[tuple[Measurement, Measurement]] = []
    try:
        admin = init_countersign(work / "server")
        cs_port, base_port = free_port(), free_port()
        data = str(work / "server")
        cs = Server(
            "countersign",
            [sys.executable, "-m", "countersign", "server", "run", "--data", data, "--port", str(cs_port)],
            cs_port,
            work / "countersign.log",
        )
        base = Server(
            "baseline",
            [sys.executable, "-m", "bench.baseline_app", "--dir", str(work / "baseline"), "--port", str(base_port)],
            base_port,
            work / "baseline.log",
        )
        for server, probe in ((cs, "/healthz"), (base, "/")):
            servers.append(server)
            server.start(probe)
        devices = enrol_devices(cs.url, admin, max(args.devices))
        print(f"  servers up ({cs.url} countersign, {base.url} baseline); {len(devices)} devices enrolled")
        floor = fsync_ms(work / "probe", int(envelope_bytes))
        print(f"  disk: write+fsync of one envelope-sized file takes {floor:.1f} ms (median of 20)")
        print()

        for n in args.devices:
            # Baseline: the same bodies and headers (a real chain), cycled; it checks nothing.
            pool = build_chain(new_recording(devices[0], args.segment_seconds), POOL, plaintexts)
            b = measure(base, "baseline", [pool] * n, True, args.warmup, args.seconds)
            print(f"  n={n:<3} baseline     {b.rate:8.1f} uploads/s  p50 {b.p50_ms:6.1f} ms  p95 {b.p95_ms:6.1f} ms")

            # Countersign: one fresh recording per device, its whole chain signed in advance. The
            # baseline's rate bounds Countersign's, so that many segments (+30%) are enough.
            want = math.ceil(b.rate * 1.3 * args.seconds / n) + args.warmup + 10
            cap = int(args.max_precompute_mb * 1e6 / (n * envelope_bytes))
            per_device = max(args.warmup + 1, min(want, cap))
            recs = [new_recording(d, args.segment_seconds) for d in devices[:n]]
            open_recordings(cs.url, recs)
            t = time.perf_counter()
            chains = [build_chain(rec, per_device, plaintexts) for rec in recs]
            prep = time.perf_counter() - t
            c = measure(cs, "countersign", chains, False, args.warmup, args.seconds)
            del chains
            print(
                f"  n={n:<3} countersign  {c.rate:8.1f} uploads/s  p50 {c.p50_ms:6.1f} ms  p95 {c.p95_ms:6.1f} ms"
                f"  ({n}x{per_device} segments precomputed in {prep:.1f} s)"
            )
            for m, server in ((b, base), (c, cs)):
                for err in m.errors[:3]:
                    print(f"    ERROR {m.server}: {err}")
                if m.errors:
                    print(f"    ERROR {m.server}: {len(m.errors)} uploads failed; the server logged:")
                    for line in server.exceptions()[:3]:
                        print(f"      {line}")
                if m.exhausted:
                    print(f"    NOTE {m.server}: a device ran out of precomputed segments; raise --max-precompute-mb")
            results.append((b, c))
    finally:
        for server in servers:
            server.stop()
        if args.keep:
            print(f"\n  kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    print()
    print(
        "devices  server       uploads  uploads/s    MB/s   p50 ms   p95 ms  srv CPU ms/up  srv cores"
        "  client CPU ms/up  ratio cs/base"
    )
    for b, c in results:
        for m in (b, c):
            ratio = ""
            if m is c:
                ratio = f"{'failed':>13}" if c.errors or b.errors else f"{c.rate / b.rate:12.2f}x" if b.rate else ""
            print(
                f"{m.devices:7d}  {m.server:<11} {m.uploads:8d} {m.rate:10.1f} {m.mb_per_s:7.1f} {m.p50_ms:8.1f} "
                f"{m.p95_ms:8.1f} {m.server_cpu_ms:14.2f} {m.server_cores:10.2f} {m.client_cpu_ms:17.2f}  {ratio}"
                f"{'  (errors)' if m.errors else ''}{'  (ran out of segments)' if m.exhausted else ''}"
            )

    usable = [c for _, c in results if not c.errors] or [c for _, c in results]
    best = max(usable, key=lambda m: m.rate)
    print()
    print(
        f"Reference load: {args.counters} counters x one {args.segment_seconds:g} s segment each = "
        f"{reference:,.0f} uploads/s."
    )
    if best.rate:
        print(
            f"  at the best measured Countersign rate ({best.rate:.1f} uploads/s per 1-worker process, "
            f"{best.devices} devices): {math.ceil(reference / best.rate)} server processes"
        )
        print(
            f"  at the measured server CPU ({best.server_cpu_ms:.2f} ms per upload): "
            f"{reference * best.server_cpu_ms / 1000:.1f} cores of server CPU, if nothing else limits"
        )
        print(
            "  (one SQLite database takes one writer at a time, so processes sharing it do not add commits;"
            " a process count above 1 assumes the database scales with them)"
        )
    print(f"\nrun time {time.perf_counter() - started:.1f} s; load average {load_average()} (at start {load_at_start})")


if __name__ == "__main__":
    main()
