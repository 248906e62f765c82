"""Kiosk agent CPU: `countersign recorder serve` idle (readiness checks, the page polling) and recording.

Starts a real service (`countersign server init` + `server run` on loopback), enrols a device,
starts a private PulseAudio with a null sink playing quiet room noise (tests/support/pulse.py),
and runs the agent on the sink's monitor. A client polls /api/state once a second, as the page
does. CPU is the agent process's utime+stime from /proc over each window (children included:
there are none), as a share of one core.

    .venv/bin/python bench/kiosk.py                  # 30 s idle, 30 s recording
    .venv/bin/python bench/kiosk.py --seconds 120
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import httpx  # noqa: E402

from bench._meta import load_average, revision  # noqa: E402
from tests.support.pulse import MONITOR_SOURCE, start_pulseaudio  # noqa: E402
from tests.support.sounds import play_into_sink, white_noise, write_wav  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def countersign(*args: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "countersign", *args], env=env, cwd=REPO, capture_output=True, text=True, check=True
    )
    return done.stdout


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def measure(pid: int, seconds: float) -> float:
    start_cpu, start = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return (cpu_seconds(pid) - start_cpu) / (time.monotonic() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each window")
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith("COUNTERSIGN_")}
    env.update(COUNTERSIGN_ENV="development", PYTHONUNBUFFERED="1")
    with tempfile.TemporaryDirectory(prefix="cs-kiosk-bench-") as tmp, start_pulseaudio() as pulse:
        root = Path(tmp)
        admin = next(
            line.split()[-1]
            for line in countersign("server", "init", "--data", str(root / "server"), env=env).splitlines()
            if line.startswith("admin token")
        )
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "countersign", "server", "run", "--data", str(root / "server"), "--port", str(port)],
            env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        agent: subprocess.Popen[bytes] | None = None
        room = write_wav(root / "room.wav", white_noise(3 * args.seconds + 60, level_dbfs=-55), 16000)
        noise = play_into_sink(pulse, room)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit("the service did not start")
                time.sleep(0.1)
            api = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {admin}"})
            api.post("/v1/sites", json={"id": "bench"}).raise_for_status()
            code = api.post("/v1/devices", json={"name": "kiosk-bench", "site": "bench"}).json()["enrolment_code"]
            home = root / "device"
            countersign("recorder", "enroll", "--server", url, "--code", code, "--home", str(home), env=env)
            kiosk_port = free_port()
            agent = subprocess.Popen(
                [sys.executable, "-m", "countersign", "recorder", "serve", "--home", str(home),
                 "--port", str(kiosk_port), "--input-device", "pulse"],
                env={**env, **pulse.pulse_vars(source=MONITOR_SOURCE, sink="nowhere")}, cwd=REPO,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            page = f"http://127.0.0.1:{kiosk_port}"
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(page + "/api/state", timeout=1).json()["ready"]:
                        break
                except (httpx.TransportError, ValueError):
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit("the kiosk did not become ready")
                time.sleep(0.2)
            stop_polling = threading.Event()

            def poll() -> None:  # the page: one GET /api/state a second
                while not stop_polling.wait(1.0):
                    httpx.get(page + "/api/state", timeout=5)

            threading.Thread(target=poll, daemon=True).start()
            time.sleep(1)
            idle = measure(agent.pid, args.seconds)
            origin = {"Origin": page}
            httpx.post(page + "/api/start", json={"language": "ja"}, headers=origin).raise_for_status()
            time.sleep(1)
            httpx.post(page + "/api/decide", json={"outcome": "given"}, headers=origin).raise_for_status()
            time.sleep(2)
            recording = measure(agent.pid, args.seconds)
            state = httpx.get(page + "/api/state").json()["recording"]
            httpx.post(page + "/api/stop", json={}, headers=origin).raise_for_status()
            stop_polling.set()
        finally:
            noise.kill()
            if agent is not None:
                agent.terminate()
                agent.wait(30)
            server.terminate()
            server.wait(30)
    result = {
        "idle_cpu_percent_of_one_core": round(100 * idle, 2),
        "recording_cpu_percent_of_one_core": round(100 * recording, 2),
        "window_seconds": args.seconds,
        "segments_sent_while_recording": state["sent"],
        "revision": revision(),
        "load_average_1m": load_average(),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
