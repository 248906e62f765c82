"""scripts/test-both.sh, which CI runs: a hung pass is shown and stopped inside the time limit, and says where.

Each test runs the script on a small test file of its own, outside the suite (so neither this
repository's configuration nor its conftest is loaded), with a PASS_TIMEOUT of a few seconds.
"""

from __future__ import annotations

import os
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.support.backends import POSTGRES_S3

pytestmark = pytest.mark.skipif(POSTGRES_S3, reason="tests the CI script, not the backend: run once, on sqlite-fs")

SCRIPT = REPO / "scripts" / "test-both.sh"


def run_both(
    tmp_path: Path, body: str, pass_timeout: int, exit_grace: int = 120
) -> tuple[subprocess.CompletedProcess[str], Path]:
    tests = tmp_path / "suite"
    tests.mkdir(parents=True)
    (tests / "test_subject.py").write_text(textwrap.dedent(body))
    (tests / "pytest.ini").write_text("[pytest]\n")  # this repository's settings (timeouts, re-runs) stay out
    pids = tmp_path / "pids"
    env = {**os.environ, "PASS_TIMEOUT": str(pass_timeout), "PIDS": str(pids), "VENV": str(REPO / ".venv")}
    env["COLUMNS"] = "200"  # the summary's lines whole
    env["EXIT_GRACE"] = str(exit_grace)
    env.pop("PYTEST_ADDOPTS", None)
    done = subprocess.run(
        ["bash", str(SCRIPT), "-c", str(tests / "pytest.ini"), str(tests)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return done, pids


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_a_hung_pass_is_dumped_stopped_and_named_in_the_last_lines(tmp_path: Path) -> None:
    started = time.monotonic()
    done, pids = run_both(
        tmp_path,
        """
        import os, subprocess, sys, time

        def test_waits_for_ever():
            child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
            with open(os.environ["PIDS"], "a") as out:
                out.write(f"{child.pid}\\n")
            time.sleep(600)
        """,
        pass_timeout=4,
    )
    assert time.monotonic() - started < 90, "the script waited for the hung pass"
    assert done.returncode == 1, done.stdout + done.stderr
    last = done.stdout.strip().splitlines()[-6:]
    for label in ("sqlite-fs", "postgres-s3"):
        assert any(line.startswith(f"== {label}: hung in ") and "test_waits_for_ever" in line for line in last), last
        assert f"== {label}: stopped: it overran PASS_TIMEOUT=4 s" in last, last
        assert f"[{label}] still running after 4 s" in done.stdout
    assert "time.sleep(600)" in done.stdout  # the leaked child's own stack was dumped too
    children = [int(line) for line in pids.read_text().split()]
    assert len(children) == 2
    deadline = time.monotonic() + 10
    while any(map(alive, children)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(map(alive, children)), "the hung test's child outlived the stopped pass"


def test_passes_that_finish_are_summarised_with_their_failures_last(tmp_path: Path) -> None:
    done, _ = run_both(
        tmp_path,
        """
        def test_passes():
            pass

        def test_fails():
            assert 1 == 2
        """,
        pass_timeout=60,
    )
    assert done.returncode == 1
    assert "test-both: sqlite-fs exited 1, postgres-s3 exited 1" in done.stderr
    last = done.stdout.strip().splitlines()[-4:]
    for label in ("sqlite-fs", "postgres-s3"):
        failed = [line for line in last if line.startswith(f"== {label}: FAILED ")]
        assert len(failed) == 1 and failed[0].endswith("test_subject.py::test_fails - assert 1 == 2"), last
        assert f"== {label}: 1 failed, 1 passed" in " ".join(last), last


def test_a_pass_that_summarised_but_does_not_exit_is_stopped_and_its_summary_decides(tmp_path: Path) -> None:
    """All tests ran, but a non-daemon thread a test left keeps the process alive after the summary."""
    body = """
        import threading

        def test_passes_but_leaves_a_thread():
            threading.Thread(target=threading.Event().wait, name="left-behind").start()
        """
    started = time.monotonic()
    done, _ = run_both(tmp_path, body, pass_timeout=300, exit_grace=3)
    assert time.monotonic() - started < 90, "the script waited for the process that did not exit"
    assert done.returncode == 0, done.stdout + done.stderr
    assert '"left-behind"' in done.stdout  # py-spy's dump names the thread that kept it alive
    last = done.stdout.strip().splitlines()[-4:]
    for label in ("sqlite-fs", "postgres-s3"):
        assert f"== {label}: stopped: it printed its summary but had not exited 3 s later" in last, last
        assert any(line.startswith(f"== {label}: 1 passed in ") for line in last), last

    failing = body.replace("start()", "start()\n            assert False")
    done, _ = run_both(tmp_path / "failing", failing, pass_timeout=300, exit_grace=3)
    assert done.returncode == 1, done.stdout + done.stderr
