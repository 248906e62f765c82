"""Evidence bundle export: time and size for a 1-minute and a 1-hour recording.

A fresh service (SQLite, filesystem store, in process through the ASGI test
client) receives recordings of 5-second segments of 16 kHz mono speech-like
audio (a tone with noise: it compresses about as badly as a real counter
does), uploaded as a device does. For each length it times, on the same
recording in the same run:

* the baseline: an ordinary verified read (POST .../audio, FLAC), which
  verifies every signature, anchor and hash, decrypts and joins the segments;
* the export (POST .../export): the same verification and decryption, plus the
  custody excerpt with inclusion proofs, the PDF report, the zip and the
  encryption to the recipient;

and prints the export's wall time, its ratio to the read, the bundle's size
and its ratio to the stored ciphertext, and the peak memory of the process.

    .venv/bin/python -m bench.export                 # 1 minute and 1 hour (~3 min)
    .venv/bin/python -m bench.export --minutes 1 10
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

os.environ.setdefault("COUNTERSIGN_MAX_OPEN_RECORDINGS", "1000")
os.environ.setdefault("COUNTERSIGN_DEVICE_BYTES_PER_DAY", str(64 * 1024**3))

from fastapi.testclient import TestClient  # noqa: E402
from nacl.public import PrivateKey  # noqa: E402

from api.app import create_app  # noqa: E402
from api.bootstrap import init_data_dir  # noqa: E402
from api.core.settings import Settings  # noqa: E402
from bench._meta import load_average, revision  # noqa: E402
from tests.support.bundles import post_export, upload  # noqa: E402
from tests.support.world import World, bearer, build_world  # noqa: E402

SEGMENT_SECONDS = 5.0


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn, repeat: int):  # type: ignore[no-untyped-def]
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def measure(client: TestClient, world: World, minutes: float, repeat: int) -> str:
    """One row: a recording of `minutes`, read then exported, `repeat` times each."""
    count = max(1, round(minutes * 60 / SEGMENT_SECONDS))
    rec = world.device.new_recording()
    world.device.add_segments(rec, count, seconds=SEGMENT_SECONDS)
    upload(client, world.device, rec)
    ciphertext = sum(len(s.envelope) for s in rec.segments)
    rec.segments.clear()  # the device's copy is not what is measured
    key = PrivateKey.generate()

    def read() -> int:
        body = {"purpose": "benchmark: a verified read"}
        r = client.post(f"/v1/evidence/{rec.id}/audio", json=body, headers=bearer(world.officer))
        assert r.status_code == 200, r.text
        return len(r.content)

    def export() -> int:
        r = post_export(client, world.officer, rec.id, key)
        assert r.status_code == 200, r.text
        return len(r.content)

    read_s, _ = timed(read, repeat)
    export_s, size = timed(export, repeat)
    return (
        f"{minutes:>6g} m {count:>8} {ciphertext / 1e6:>9.1f} MB {read_s:>7.2f} {export_s:>8.2f} "
        f"{export_s / read_s:>5.2f}x {size / 1e6:>7.1f} MB {size / ciphertext:>8.2f}x {peak_rss_mb():>6.0f} MB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, nargs="+", default=[1, 60], help="recording lengths (default 1 60)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure for recordings up to 10 minutes")
    args = parser.parse_args()
    print(f"# export benchmark, {revision()}, load {load_average()}, {os.cpu_count()} cores")
    print(f"# {SEGMENT_SECONDS:.0f} s segments, 16 kHz mono; times are medians; ratios against a verified read")
    with tempfile.TemporaryDirectory(prefix="countersign-bench-export-") as tmp:
        settings = Settings(data_dir=Path(tmp) / "server", env="development")
        init = init_data_dir(settings)
        with TestClient(create_app(settings)) as client:
            world = build_world(client, init.admin_token)
            header = f"{'length':>8} {'segments':>8} {'ciphertext':>11} {'read s':>7} {'export s':>8} {'ratio':>6}"
            print(header + f" {'bundle':>9} {'bundle/ct':>9} {'peak RSS':>9}", flush=True)
            for minutes in args.minutes:
                print(measure(client, world, minutes, args.repeat if minutes <= 10 else 1), flush=True)


if __name__ == "__main__":
    main()
