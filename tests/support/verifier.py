"""Running the bundle verifier as a recipient does: verify.py alone, in a virtualenv holding only PyNaCl.

The virtualenv is made once per test session (tests/conftest.py's `bare_python`
fixture), with the oldest Python verify.py promises where that is installed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VERIFY = REPO / "evidence" / "bundle" / "verify.py"
OLDEST_PYTHON = Path("/root/.pyenv/versions/3.9.18/bin/python3.9")  # the floor verify.py promises, if present
ALLOWED = {"pip", "setuptools", "wheel", "pynacl", "cffi", "pycparser"}


def make_bare_python(root: Path) -> Path:
    """A virtualenv at `root` with PyNaCl alone: what a recipient installs (`pip install pynacl`)."""
    base = str(OLDEST_PYTHON) if OLDEST_PYTHON.exists() else sys.executable
    subprocess.run([base, "-m", "venv", str(root)], check=True, capture_output=True, timeout=300)
    python = root / "bin" / "python"
    done = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "pynacl"], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    listed = subprocess.run([str(python), "-m", "pip", "list", "--format=json"], capture_output=True, text=True)
    names = {d["name"].lower() for d in json.loads(listed.stdout)}
    assert names <= ALLOWED, names
    return python


def run_verify(python: Path, cwd: Path, *argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    """verify.py as it ships (copied into `cwd` unless one is there), with nothing of Countersign importable."""
    script = cwd / "verify.py"
    if not script.exists():
        shutil.copy(VERIFY, script)
    clean = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV", "LANG", "LC_ALL"}}
    clean.update(env)
    return subprocess.run(
        [str(python), str(script), *argv], cwd=cwd, env=clean, capture_output=True, text=True, timeout=300
    )
