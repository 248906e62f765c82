"""Listening to a 1-hour recording in the web console: time to the first audio byte, next to the API's read.

One fresh data directory and one real server (`python -m countersign server run`, uvicorn on
127.0.0.1), seeded once by bench/retrieval.py's `build`: a recording of 5-second segments of
16 kHz mono speech-like audio uploaded through the API by a simulated device (real envelopes,
signatures, anchors). The officer gets console credentials (api.console.accounts.provision, as
`countersign server console-login` does) and signs in as a browser does (GET /console/sign-in
for the login CSRF, POST it with name, password and TOTP code). Then, round-robin for --repeat
rounds, each against the same recording:

* console: POST /console/recordings/{id}/listen with a purpose (the audited grant, committed
  before any byte) then GET /console/recordings/{id}/audio, timed from the POST to the first
  byte of the audio's body; the whole WAV is read (and, once, compared sample for sample);
* console ranges: GET .../audio (under that grant) with `Range: bytes=0-65535` and
  `bytes=-65536` (the last 64 KiB: an <audio> element seeking to the end); the last range's
  server CPU, past the first's, next to a whole read's says whether the end is served
  without decoding the whole hour;
* API (the baseline): POST /v1/evidence/{id}/audio, format wav, with its purpose, by
  bench/retrieval.py's `read_once` (httpx streaming read), with a client made beforehand and
  kept open, as the console's is (by default read_once builds one inside its timing).

For each: first byte p50 and max, total time, the server's CPU seconds for the request
(/proc/PID/stat) and its resident memory (before, and the peak during each read); then the
console/API ratios. `--profile FILE` then records the server with py-spy (raw collapsed
stacks) over a few more console listens and prints where their time went.

    .venv/bin/python -m bench.console_audio                  # 60 minutes (~1 min seeding), 5 rounds: ~3 min
    .venv/bin/python -m bench.console_audio --minutes 5 --repeat 2
    .venv/bin/python -m bench.console_audio --profile /tmp/console.txt
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
import numpy as np  # noqa: E402

from api.console.provision import provision_on_server  # noqa: E402  (api.console.accounts.provision, on the server)
from api.core.settings import Settings  # noqa: E402
from bench._meta import load_average, revision  # noqa: E402
from bench.retrieval import PURPOSE, RATE, SEGMENT_SECONDS, Sampler, Server, build, check, read_once  # noqa: E402
from tests.console.support import PASSWORD, csrf_of  # noqa: E402

OFFICER = "olivia"  # the officer bench.retrieval.build adds
TAIL = 64 * 1024
PY_SPY = REPO / ".venv" / "bin" / "py-spy"
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(server: Server) -> float:
    """The server process's user + system CPU so far (all its threads)."""
    fields = Path(f"/proc/{server.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def sign_in(server: Server, data: Path) -> httpx.Client:
    """Console credentials for the officer, then a browser-like client signed in (session cookie in its jar)."""
    import pyotp

    done = provision_on_server(Settings(data_dir=data, env="development"), OFFICER, PASSWORD)
    http = httpx.Client(base_url=server.url, follow_redirects=False, timeout=300)
    form = http.get("/console/sign-in")
    assert form.status_code == 200, form.text[:300]
    fields = {"csrf": csrf_of(form.text), "name": OFFICER, "password": PASSWORD, "code": pyotp.TOTP(done.secret).now()}
    reply = http.post("/console/sign-in", data=fields)
    assert reply.status_code == 303, reply.text[:300]
    return http


def console_read(
    server: Server, http: httpx.Client, rid: str, csrf: str | None, out: Path | None, ranged: str | None = None
) -> dict[str, float]:
    """With `csrf`: POST the purpose, then GET the audio; else only the GET (under the grant). Timed from the start."""
    cpu0, before, exact_peak = cpu_seconds(server), server.status_kb("VmRSS"), server.reset_peak()
    sampler = Sampler(server)
    sampler.start()
    size, first, grant = 0, None, 0.0
    start = time.perf_counter()
    if csrf is not None:
        reply = http.post(f"/console/recordings/{rid}/listen", data={"csrf": csrf, "purpose": PURPOSE})
        assert reply.status_code == 303 and reply.headers["location"].endswith("/player"), reply.text[:300]
        grant = time.perf_counter() - start
    headers = {"Range": ranged} if ranged else {}
    with http.stream("GET", f"/console/recordings/{rid}/audio", headers=headers) as r:
        assert r.status_code == (206 if ranged else 200), r.read()[:300]
        with out.open("wb") if out is not None else open(os.devnull, "wb") as f:
            for chunk in r.iter_raw():
                if first is None:
                    first = time.perf_counter() - start
                f.write(chunk)
                size += len(chunk)
    total = time.perf_counter() - start
    sampler.done.set()
    sampler.join()
    peak = max(sampler.peak, server.status_kb("VmHWM") if exact_peak else 0)
    return {
        "ttfb": first or total,
        "grant": grant,
        "total": total,
        "bytes": size,
        "cpu": cpu_seconds(server) - cpu0,
        "rss0": before / 1024,
        "peak": peak / 1024,
    }


def api_read(server: Server, api: httpx.Client, rid: str, token: str, out: Path) -> dict[str, float]:
    cpu0 = cpu_seconds(server)
    row = read_once(server, rid, token, "wav", out, api)
    row["cpu"] = cpu_seconds(server) - cpu0
    return row


def run_line(kind: str, i: int, r: dict[str, float]) -> str:
    return (
        f"  {kind:<14} #{i + 1} first byte {r['ttfb'] * 1000:7.0f} ms, total {r['total']:6.2f} s, "
        f"{r['bytes'] / 1e6:7.2f} MB, server CPU {r['cpu']:5.2f} s, RSS {r['rss0']:4.0f} -> peak {r['peak']:4.0f} MB"
    )


def summary(kind: str, runs: list[dict[str, float]]) -> dict[str, float]:
    ttfb = [r["ttfb"] for r in runs]
    row = {
        "p50": statistics.median(ttfb),
        "max": max(ttfb),
        "grant": statistics.median(r["grant"] for r in runs) if "grant" in runs[0] else 0.0,
        "total": statistics.median(r["total"] for r in runs),
        "cpu": statistics.median(r["cpu"] for r in runs),
        "growth": max(r["peak"] - r["rss0"] for r in runs),
        "bytes": runs[0]["bytes"],
    }
    grant = f"{row['grant'] * 1000:>8.0f} ms" if row["grant"] else f"{'-':>11}"
    print(
        f"{kind:<24} {row['p50'] * 1000:>8.0f} ms {row['max'] * 1000:>8.0f} ms {grant} {row['total']:>7.2f} s "
        f"{row['bytes'] / 1e6:>8.2f} MB {row['cpu']:>7.2f} s {row['growth']:>+7.0f} MB"
    )
    return row


# --------------------------------------------------------------------------- profile

# Where a console listen's time goes: each sample in the first bucket whose frames it passes through.
# The third field: the work is done before the audio's first byte.
BUCKETS = (
    ("prepare_audio: hash pass thread", ("_HashPass",), True),
    ("prepare_audio: the other checks", ("prepare_audio (",), True),
    ("purpose POST: the grant (audit, commit)", ("grant (api/console/listen.py",), True),
    ("purpose POST: the rest", ("listen_purpose (",), True),
    ("audio GET: session, scope, grant lookup", ("audio_file (",), True),
    ("streaming: decrypt", ("_open (api/retrieval.py",), False),
    ("streaming: FLAC decode", ("_decoded (api/retrieval.py",), False),
    ("streaming: WAV bytes, slicing", ("pcm_bytes (", "sliced ("), False),
)


def profile(server: Server, http: httpx.Client, rid: str, csrf: str, out: Path, rounds: int) -> None:
    """py-spy record (raw collapsed stacks, all threads, not idle) over `rounds` console listens; a summary."""
    pid = str(server.proc.pid)
    spy = subprocess.Popen(
        [str(PY_SPY), "record", "--format", "raw", "--rate", "200", "--threads", "-o", str(out), "--pid", pid],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1.0)  # attached
    for _ in range(rounds):
        console_read(server, http, rid, csrf, None)
    spy.send_signal(signal.SIGINT)
    spy.wait(timeout=60)
    stacks: Counter[str] = Counter()
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if count.isdigit():
            stacks[stack] += int(count)
    buckets: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    for stack, n in stacks.items():
        name = next((b for b, needles, _ in BUCKETS if any(x in stack for x in needles)), "")
        if name:
            buckets[name] += n
            leaves[stack.rsplit(";", 1)[-1]] += n
    busy = sum(buckets.values())
    print(f"# py-spy over {rounds} console listens: {sum(stacks.values())} samples, {busy} in the console's reads")
    for name, _needles, _early in BUCKETS:
        print(f"#   {name:<40} {buckets[name]:>6} samples {100 * buckets[name] / max(busy, 1):>5.1f}%")
    before = sum(buckets[name] for name, _needles, early in BUCKETS if early)
    print(f"#   before the 1st byte, all threads: {before} samples {100 * before / max(busy, 1):.1f}%")
    hottest = "; ".join(f"{f} {100 * n / max(busy, 1):.0f}%" for f, n in leaves.most_common(8))
    print(f"#   hottest leaf frames: {hottest}")


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=60, help="recording length (default 60)")
    parser.add_argument("--repeat", type=int, default=5, help="rounds (p50 and max over them; default 5)")
    parser.add_argument("--profile", type=Path, help="then py-spy the server over console listens, raw stacks here")
    parser.add_argument("--profile-rounds", type=int, default=3, help=argparse.SUPPRESS)
    args = parser.parse_args()

    from api.bootstrap import init_data_dir

    print(f"# console audio benchmark, {revision()}, load {load_average()}, {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory(prefix="countersign-bench-console-") as tmp_name:
        tmp = Path(tmp_name)
        data = tmp / "server"
        init = init_data_dir(Settings(data_dir=data, env="development"))
        server = Server([sys.executable, "-m", "countersign", "server", "run", "--data", str(data)], tmp / "server.log")
        try:
            started = time.perf_counter()
            rid, token, pcm, ciphertext = build(server, data, init.admin_token, args.minutes)
            seeded = time.perf_counter() - started
            count = -(-len(pcm) // int(SEGMENT_SECONDS * RATE))
            started = time.perf_counter()
            http = sign_in(server, data)
            signed = time.perf_counter() - started
            csrf = csrf_of(http.get(f"/console/recordings/{rid}").text)  # the listen form's token, from its page
            print(
                f"# {args.minutes:g} min: {count} segments of {SEGMENT_SECONDS:g} s, 16 kHz mono, "
                f"{ciphertext / 1e6:.1f} MB of ciphertext; seeding {seeded:.0f} s, console credentials + "
                f"sign-in {signed:.2f} s",
                flush=True,
            )
            api_client = httpx.Client(timeout=300)  # kept open, as the console's: no client set-up in the timings
            rss0 = server.status_kb("VmRSS") / 1024
            runs: dict[str, list[dict[str, float]]] = {"api": [], "console": [], "head": [], "tail": []}
            full = tmp / "console.wav"
            for i in range(args.repeat):
                for kind in runs:
                    if kind == "api":
                        row = api_read(server, api_client, rid, token, tmp / "api.wav")
                    elif kind == "console":
                        row = console_read(server, http, rid, csrf, full)
                    elif kind == "head":
                        row = console_read(server, http, rid, None, tmp / "head.bin", ranged=f"bytes=0-{TAIL - 1}")
                    else:
                        row = console_read(server, http, rid, None, tmp / "tail.bin", ranged=f"bytes=-{TAIL}")
                    runs[kind].append(row)
                    print(run_line(kind, i, row), flush=True)
            rss1 = server.status_kb("VmRSS") / 1024
            check(full, pcm)
            check(tmp / "api.wav", pcm)
            whole = full.read_bytes()
            assert (tmp / "tail.bin").read_bytes() == whole[-TAIL:], "the range is not the file's last 64 KiB"
            assert (tmp / "head.bin").read_bytes() == whole[:TAIL], "the range is not the file's first 64 KiB"
            assert np.array_equal(np.frombuffer(whole[-TAIL:], "<i2"), pcm.reshape(-1)[-TAIL // 2 :])
            print(
                f"{'read (WAV)':<24} {'1st p50':>11} {'1st max':>11} {'grant p50':>11} {'total':>9} "
                f"{'size':>11} {'srv CPU':>9} {'RSS +':>10}"
            )
            api = summary("API (baseline)", runs["api"])
            con = summary("console listen + audio", runs["console"])
            head = summary("console first 64 KiB", runs["head"])
            tail = summary("console last 64 KiB", runs["tail"])
            print(
                f"# console/API first byte: p50 {con['p50'] / api['p50']:.2f}x, max {con['max'] / api['max']:.2f}x "
                f"(the grant: {con['grant'] / con['p50']:.0%} of it); total {con['total'] / api['total']:.2f}x"
            )
            # Past the checks every read pays (the first 64 KiB's cost), the share of a whole read's work the end costs.
            share = (tail["cpu"] - head["cpu"]) / max(con["cpu"] - head["cpu"], 1e-9)
            print(
                f"# last 64 KiB: first byte {tail['p50'] / head['p50']:.2f}x the first 64 KiB's, "
                f"{tail['p50'] / api['p50']:.2f}x the API's whole-file first byte; server CPU {tail['cpu']:.2f} s vs "
                f"{head['cpu']:.2f} s for the first 64 KiB and {con['cpu']:.2f} s for the whole file: the end costs "
                f"{share:.0%} of a whole read's streaming work, "
                + ("it decodes the whole recording before the range" if share > 0.5 else "it seeks")
            )
            print(f"# server RSS {rss0:.0f} MB before the reads, {rss1:.0f} MB after; load {load_average()}")
            if args.profile:
                profile(server, http, rid, csrf, args.profile, args.profile_rounds)
            http.close()
            api_client.close()
        finally:
            server.stop()


if __name__ == "__main__":
    main()
