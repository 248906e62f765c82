"""Verified retrieval of a long recording: time to first byte, throughput and memory, streamed vs in memory.

A fresh data directory (SQLite, filesystem store) receives one recording of 5-second
segments of 16 kHz mono speech-like audio (bench/_audio.py: ~130 KB of FLAC a segment,
like recorded speech), uploaded through the real API by a simulated device, as a
recorder does (real envelopes, signatures, anchors). Then, through a real server
(`python -m countersign server run`, uvicorn) on 127.0.0.1, for FLAC and WAV:

* an httpx streaming read (POST /v1/evidence/{id}/audio): time to the first byte of the
  body, throughput (bytes of the response / total time), and the server process's
  resident memory before the read and at its peak during it (VmHWM after resetting it
  through /proc/PID/clear_refs, cross-checked by sampling VmRSS every 5 ms);
* `countersign evidence get` (the officer's CLI) in a subprocess: wall time and its
  peak RSS (wait4's ru_maxrss).

The baseline, in the same run on the same recording (unless --no-baseline), is the
previous read: the same route answering with api.retrieval.read_audio, which verifies,
decrypts and joins the whole recording in memory before the first byte. It runs in a
second server (`python -m bench.retrieval --serve-baseline`, same uvicorn options) on
the same data directory, one server at a time. Every output is decoded and compared
sample for sample with what the device recorded.

    .venv/bin/python -m bench.retrieval                      # 60 minutes (~2 min set-up)
    .venv/bin/python -m bench.retrieval --minutes 10 --no-baseline
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402
from fastapi import Request, Response  # noqa: E402

from api.core.audit import record_event  # noqa: E402
from api.core.deps import OfficerDep, ServicesDep, SessionDep, live, recording_in_scope  # noqa: E402
from api.core.settings import Settings  # noqa: E402
from api.retrieval import read_audio  # noqa: E402
from api.schemas import AudioRequest  # noqa: E402
from bench._audio import speech_like  # noqa: E402
from bench._meta import load_average, revision  # noqa: E402
from evidence import audio  # noqa: E402
from evidence.audit_actions import Action  # noqa: E402
from evidence.chain import header_hash  # noqa: E402

RATE = 16000
SEGMENT_SECONDS = 5.0
PURPOSE = "benchmark: a verified read of a long recording"
ENV = {
    **{k: v for k, v in os.environ.items() if not k.startswith("COUNTERSIGN_")},
    "COUNTERSIGN_ENV": "development",
    "COUNTERSIGN_DEVICE_BYTES_PER_DAY": str(64 * 1024**3),
    "PYTHONUNBUFFERED": "1",
}


# --------------------------------------------------------------------------- the baseline server


def old_get_audio(
    recording_id: uuid.UUID,
    body: AudioRequest,
    request: Request,
    officer: OfficerDep,
    session: SessionDep,
    services: ServicesDep,
) -> Response:
    """The read as it was: audit, then verify, decrypt, decode and encode everything in memory, then answer."""
    recording = live(recording_in_scope(request, services, session, officer, recording_id))
    target = f"recording:{recording.id}"
    seq = record_event(
        session, actor=officer.actor, action=Action.EVIDENCE_READ, target=target, purpose=body.purpose
    ).seq
    session.commit()
    data, frames = read_audio(session, services.store, services.keys, recording, body.format)
    headers = {"X-Countersign-Access-Log": str(seq), "X-Countersign-Frames": str(frames)}
    return Response(content=data, media_type=audio.media_type(body.format), headers=headers)


def serve_baseline(data: Path, port: int) -> None:
    import uvicorn
    from fastapi.routing import APIRoute

    from api.app import create_app

    app = create_app(Settings(data_dir=data, env="development"))
    app.router.routes.insert(0, APIRoute("/v1/evidence/{recording_id}/audio", old_get_audio, methods=["POST"]))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="info")  # as `countersign server run`


# --------------------------------------------------------------------------- servers and memory


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Server:
    def __init__(self, argv: list[str], log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        with log.open("ab") as out:
            self.proc = subprocess.Popen([*argv, "--port", str(self.port)], env=ENV, stdout=out, stderr=out, cwd=REPO)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError("server did not start")

    def status_kb(self, field: str) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise KeyError(field)

    def reset_peak(self) -> bool:
        try:
            Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")  # resets VmHWM to the current RSS
            return True
        except OSError:
            return False

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


class Sampler(threading.Thread):
    """VmRSS of the server every 5 ms, keeping the peak."""

    def __init__(self, server: Server) -> None:
        super().__init__(daemon=True)
        self.server, self.peak, self.done = server, 0, threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self.peak = max(self.peak, self.server.status_kb("VmRSS"))
            time.sleep(0.005)


# --------------------------------------------------------------------------- set-up


def build(server: Server, data: Path, admin: str, minutes: float) -> tuple[str, str, np.ndarray, int]:
    """Site, officer, device; one recording of `minutes` uploaded. (recording id, officer token, pcm, bytes)."""
    from tests.client.conftest import add_user, enrol

    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {admin}"}, timeout=60) as api:
        assert api.post("/v1/sites", json={"id": "north", "name": "North Office"}).status_code == 201
        officer = add_user(api, "olivia", "officer", ["north"], data)
        dev = enrol(api, "counter-n1", "north")
    pcm, _what = speech_like(minutes * 60, RATE, seed=1)
    per = int(SEGMENT_SECONDS * RATE)
    count = -(-len(pcm) // per)
    rec = dev.new_recording()
    ciphertext = 0
    with httpx.Client(base_url=server.url, headers=dev.auth, timeout=60) as http:
        assert http.post("/v1/recordings", json=rec.create_body()).status_code == 201
        prev = header_hash(rec.header)
        for i in range(count):
            seg = dev.make_segment(rec, i, i == count - 1, pcm[i * per : (i + 1) * per], prev)
            reply = http.put(
                f"/v1/recordings/{rec.id}/segments/{i}", content=seg.envelope, headers=dev.segment_headers(seg)
            )
            assert reply.status_code == 201, reply.text
            prev, ciphertext = bytes.fromhex(seg.headers["X-Link"]), ciphertext + len(seg.envelope)
    return str(rec.id), officer, pcm, ciphertext


# --------------------------------------------------------------------------- measuring


def read_once(
    server: Server, rid: str, token: str, fmt: str, out: Path, client: httpx.Client | None = None
) -> dict[str, float]:
    """One streamed read with httpx, written to `out`; timings and server memory.

    By default a new client is made per read, inside the timing (building one, its TLS context
    mostly, took ~0.1 s on a loaded 2-core machine); a `client` made beforehand keeps that out."""
    before = server.status_kb("VmRSS")
    exact_peak = server.reset_peak()
    sampler = Sampler(server)
    sampler.start()
    size, first = 0, None
    start = time.perf_counter()
    auth = {"Authorization": f"Bearer {token}"}
    with (
        httpx.Client(headers=auth, timeout=300) if client is None else contextlib.nullcontext(client) as http,
        http.stream(
            "POST", f"{server.url}/v1/evidence/{rid}/audio", json={"purpose": PURPOSE, "format": fmt}, headers=auth
        ) as r,
        out.open("wb") as f,
    ):
        assert r.status_code == 200, r.read()[:300]
        for chunk in r.iter_raw():  # as received: iter_bytes(n) would wait for n bytes
            if first is None:
                first = time.perf_counter() - start
            f.write(chunk)
            size += len(chunk)
    total = time.perf_counter() - start
    sampler.done.set()
    sampler.join()
    peak = max(sampler.peak, server.status_kb("VmHWM") if exact_peak else 0)
    return {"ttfb": first or total, "total": total, "bytes": size, "rss0": before / 1024, "peak": peak / 1024}


# The CLI's peak RSS, as the CLI process sees it at exit. Not wait4's ru_maxrss: Linux carries the
# forking parent's resident size over into the child's (through fork and exec), so a child of this
# process would report this process's hundreds of MB whatever it did itself.
_CLI = """import atexit, runpy, sys
report = sys.argv.pop(1)
def peak():
    with open("/proc/self/status") as status, open(report, "w") as out:
        out.write(next(line for line in status if line.startswith("VmHWM:")).split()[1])
atexit.register(peak)
sys.argv[0] = "countersign"
runpy.run_module("countersign", run_name="__main__", alter_sys=True)
"""


def cli_once(server: Server, rid: str, token: str, out: Path) -> dict[str, float]:
    """`countersign evidence get` in a subprocess: wall time and its peak RSS (VmHWM at exit)."""
    out.unlink(missing_ok=True)
    report = out.with_suffix(".rss")
    env = {**ENV, "COUNTERSIGN_SERVER": server.url, "COUNTERSIGN_TOKEN": token}
    argv = [sys.executable, "-c", _CLI, str(report), "evidence", "get", rid, "--purpose", PURPOSE, "-o", str(out)]
    start = time.perf_counter()
    subprocess.run(argv, env=env, cwd=REPO, stdout=subprocess.DEVNULL, check=True)
    return {"wall": time.perf_counter() - start, "maxrss": int(report.read_text()) / 1024}


def check(path: Path, pcm: np.ndarray) -> None:
    got, rate = sf.read(str(path), dtype="int16", always_2d=True)
    assert rate == RATE and np.array_equal(got, pcm), f"{path.name} is not the recorded audio"


def measure(
    kind: str, server: Server, rid: str, token: str, pcm: np.ndarray, tmp: Path, repeat: int
) -> dict[str, dict[str, float]]:
    rows: dict[str, dict[str, float]] = {}
    for fmt in ("flac", "wav"):
        out = tmp / f"{kind}.{fmt}"
        runs = [read_once(server, rid, token, fmt, out) for _ in range(repeat)]
        check(out, pcm)
        best = sorted(runs, key=lambda r: r["total"])[len(runs) // 2]  # the median run by total time
        best["peak"] = max(r["peak"] for r in runs)
        best.update(cli_once(server, rid, token, tmp / f"{kind}-cli.{fmt}"))
        check(tmp / f"{kind}-cli.{fmt}", pcm)
        rows[fmt] = best
        print(line(kind, fmt, best), flush=True)
    return rows


def line(kind: str, fmt: str, r: dict[str, float]) -> str:
    return (
        f"{kind:<9} {fmt:<5} {r['bytes'] / 1e6:>8.1f} MB {r['ttfb'] * 1000:>8.0f} ms {r['total']:>7.2f} s "
        f"{r['bytes'] / 1e6 / r['total']:>7.1f} MB/s {r['rss0']:>6.0f} MB {r['peak']:>6.0f} MB "
        f"{r['peak'] - r['rss0']:>+7.0f} MB {r['wall']:>6.2f} s {r['maxrss']:>6.0f} MB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=60, help="recording length (default 60)")
    parser.add_argument("--repeat", type=int, default=3, help="httpx reads per figure (median; peak memory: max)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the in-memory read")
    parser.add_argument("--serve-baseline", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_baseline:
        serve_baseline(args.data, args.port)
        return

    from api.bootstrap import init_data_dir

    print(f"# retrieval benchmark, {revision()}, load {load_average()}, {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory(prefix="countersign-bench-retrieval-") as tmp_name:
        tmp = Path(tmp_name)
        data = tmp / "server"
        init = init_data_dir(Settings(data_dir=data, env="development"))
        log = tmp / "server.log"
        started = time.perf_counter()
        streamed = Server([sys.executable, "-m", "countersign", "server", "run", "--data", str(data)], log)
        try:
            rid, officer, pcm, ciphertext = build(streamed, data, init.admin_token, args.minutes)
            count = -(-len(pcm) // int(SEGMENT_SECONDS * RATE))
            print(
                f"# {args.minutes:g} min: {count} segments of {SEGMENT_SECONDS:g} s, 16 kHz mono, "
                f"{ciphertext / 1e6:.1f} MB of ciphertext; set-up {time.perf_counter() - started:.0f} s"
            )
            print(
                f"{'read':<9} {'fmt':<5} {'size':>11} {'1st byte':>11} {'total':>9} {'rate':>12} "
                f"{'RSS0':>9} {'peak':>9} {'growth':>10} {'CLI':>8} {'CLI RSS':>9}",
                flush=True,
            )
            new = measure("streamed", streamed, rid, officer, pcm, tmp, args.repeat)
        finally:
            streamed.stop()
        if args.no_baseline:
            return
        argv = [sys.executable, "-m", "bench.retrieval", "--serve-baseline", "--data", str(data)]
        baseline = Server(argv, log)
        try:
            old = measure("in-memory", baseline, rid, officer, pcm, tmp, args.repeat)
        finally:
            baseline.stop()
        for fmt in ("flac", "wav"):
            a, b = old[fmt], new[fmt]
            print(
                f"# {fmt}: first byte {a['ttfb'] / b['ttfb']:.1f}x sooner, throughput "
                f"{(b['bytes'] / b['total']) / (a['bytes'] / a['total']):.2f}x, server growth "
                f"{a['peak'] - a['rss0']:+.0f} -> {b['peak'] - b['rss0']:+.0f} MB, CLI peak "
                f"{a['maxrss']:.0f} -> {b['maxrss']:.0f} MB"
            )


if __name__ == "__main__":
    main()
