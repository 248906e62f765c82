"""Start-up time of the `countersign` command per machine, next to a bare interpreter.

Every figure is the wall time of a whole subprocess (interpreter start, imports, the command,
exit), median of N runs; the commands are run round-robin so a burst of load on the machine
hits all of them alike. The baseline is `python -c pass` with the same interpreter.

    .venv/bin/python -m bench.startup              # 15 runs each
    .venv/bin/python -m bench.startup --runs 31

What the rows mean: `countersign --help` imports no sub-command (the help is written in
countersign/cli.py); a client command imports only the client and the offline verifier;
`recorder --help` imports the counter agent (NumPy, soundfile, sounddevice); `import api.app`
is what every API process pays before serving (FastAPI, SQLAlchemy, pydantic, the routes).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench._meta import load_average, revision  # noqa: E402


def tiny_export(folder: Path) -> tuple[Path, str]:
    """A 10-entry audit export with two signed checkpoints, built with the service's own hashing and signing."""
    from bench.audit_log import build_export

    path = folder / "audit.jsonl"
    public_key = build_export(path, 10, every=5)
    return path, public_key.hex()


def run_once(argv: list[str]) -> tuple[float, int]:
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - started, done.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=15, help="runs per command (median reported)")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured runs per command first (file cache)")
    args = parser.parse_args()

    python = sys.executable
    countersign = str(Path(python).parent / "countersign")
    with tempfile.TemporaryDirectory(prefix="countersign-startup-") as tmp:
        export, key = tiny_export(Path(tmp))
        # label, argv, the exit code it must give (a wrong one means the row measured something else)
        commands: list[tuple[str, list[str], int]] = [
            ("python -c pass (baseline)", [python, "-c", "pass"], 0),
            ("countersign --help", [countersign, "--help"], 0),
            ("countersign evidence --help", [countersign, "evidence", "--help"], 0),
            (
                "countersign audit verify (10 entries)",
                [countersign, "audit", "verify", str(export), "--public-key", key],
                0,
            ),
            ("countersign audit verify (bad args)", [countersign, "audit", "verify", str(Path(tmp) / "none.jsonl")], 2),
            ("countersign recorder --help", [countersign, "recorder", "--help"], 0),
            ('python -c "import api.app"', [python, "-c", "import api.app"], 0),
        ]
        print(f"start-up benchmark — {revision()}; load average {load_average()}")
        print(f"  {python}; {args.runs} runs each (after {args.warmup} unmeasured), round-robin, subprocess wall time")
        for label, argv, expected in commands:
            _, code = run_once(argv)
            if code != expected:
                sys.exit(f"error: {label} exited {code}, expected {expected}: {' '.join(argv)}")
        for _ in range(args.warmup):
            for _, argv, _ in commands:
                run_once(argv)
        times: dict[str, list[float]] = {label: [] for label, _, _ in commands}
        for _ in range(args.runs):
            for label, argv, _ in commands:
                times[label].append(run_once(argv)[0])

    baseline = statistics.median(times[commands[0][0]])
    print(f"\n{'command':40}{'median ms':>11}{'min ms':>9}{'max ms':>9}{'vs baseline':>13}")
    for label, _, _ in commands:
        runs = times[label]
        median = statistics.median(runs)
        print(
            f"{label:40}{median * 1e3:>11.0f}{min(runs) * 1e3:>9.0f}{max(runs) * 1e3:>9.0f}{median / baseline:>12.1f}x"
        )
    print(f"\nload average at the end {load_average()}")


if __name__ == "__main__":
    main()
