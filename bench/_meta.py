"""What a benchmark ran on: code revision and machine load, printed in every header."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def revision() -> str:
    """Short commit and how many tracked files differ from it (figures depend on uncommitted edits too)."""
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}  # read only: never take the index lock
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, env=env, capture_output=True, text=True, check=True
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return "unknown revision (not a git checkout)"
    return f"commit {head}" + (f" + {len(changed)} modified tracked files" if changed else " (clean)")


def load_average() -> str:
    """1-minute load average: anything else running on the machine skews every figure."""
    return f"{os.getloadavg()[0]:.2f}"
