"""Shared fixtures: a fresh service per test, a populated world, live servers."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api import bootstrap
from api.app import create_app
from api.bootstrap import InitResult, approve_user, init_data_dir
from api.core.settings import Settings
from tests.support import schema_template
from tests.support.backends import AWS_ENV, AWS_UNSET, BACKENDS, POSTGRES_S3, SERVICE_VARS
from tests.support.world import World as World  # re-exported: tests import these from here
from tests.support.world import bearer as bearer
from tests.support.world import build_world
from tests.support.world import enrol_sim_device as enrol_sim_device

REPO = Path(__file__).resolve().parent.parent
# Limits meant for strangers and runaway devices, lifted for the suite (each has its own tests).
GENEROUS_LIMITS = {"COUNTERSIGN_AUTH_FAILURES_PER_MINUTE": "1000000", "COUNTERSIGN_MAX_OPEN_RECORDINGS": "1000000"}


@pytest.fixture(scope="session", autouse=True)
def _backend_session() -> Iterator[None]:
    """PostgreSQL+S3 mode: fake AWS credentials for the whole run; stop moto at the end."""
    with pytest.MonkeyPatch.context() as mp:
        # Tests make hundreds of refused calls from one address in a minute (the role table);
        # the throttle's own tests set their limit explicitly (tests/api/test_log_poisoning.py).
        # Likewise devices that open many recordings and finish few; tests/api/test_quotas.py sets its own.
        for name, value in GENEROUS_LIMITS.items():
            mp.setenv(name, value)
        # In-process services start from a copy of one migrated template, not from 14 migrations
        # each (half a second per test; tests/support/schema_template.py says what still runs them).
        mp.setattr(bootstrap, "create_schema", schema_template.create_schema)
        if POSTGRES_S3:
            for name, value in AWS_ENV.items():
                mp.setenv(name, value)
            for name in AWS_UNSET:
                mp.delenv(name, raising=False)
        try:
            yield
        finally:
            BACKENDS.shutdown()


# Suites whose subject does not depend on the service's database or object store: the device side
# (tests/recorder: capture, spool, upload loop, kiosk agent), the officer's CLI (tests/client: its
# output, files and errors against a live server) and the offline verifier and formats
# (tests/evidence). They run once, in the SQLite run, which keeps `make test` inside CI's time; the
# service routes they call are tested on both backends in tests/api, and live servers on PostgreSQL
# + S3 in tests/e2e.
BACKEND_INDEPENDENT = ("tests/recorder/", "tests/evidence/", "tests/client/")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not POSTGRES_S3:
        return
    skip = pytest.mark.skip(reason="backend-independent: run once, in the SQLite run (tests/conftest.py)")
    for item in items:
        if item.nodeid.startswith(BACKEND_INDEPENDENT):
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Name the threads, left by tests, that will keep this process from exiting once the run is over.

    The interpreter waits for every non-daemon thread at exit (a thread pool's busy workers too),
    so such a thread turns a finished run into a hang; scripts/test-both.sh stops that pass after
    its EXIT_GRACE, and this says beforehand which thread it was and where it waits.
    """
    frames = sys._current_frames()
    for thread in threading.enumerate():
        frame = frames.get(thread.ident or -1)
        if thread is threading.main_thread() or thread.daemon or frame is None:
            continue
        stack = traceback.extract_stack(frame)
        if stack[-1].name == "_worker" and stack[-1].filename.endswith(
            os.path.join("concurrent", "futures", "thread.py")
        ):
            continue  # an idle pool worker: it is woken and ends at exit
        where = " <- ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(stack[-4:]))
        terminalreporter.write_line(f"thread {thread.name!r} still running, so this process cannot exit: {where}")


@pytest.fixture(autouse=True)
def backend_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """Every test's service settings (COUNTERSIGN_DATABASE_URL, _STORE, _S3_*) through the environment.

    SQLite mode clears them, so a developer's shell cannot point the tests at a real database;
    PostgreSQL+S3 mode sets a fresh schema and bucket, dropped after the test. In-process
    Settings() and the CLI subprocesses (cli_env keeps these) both pick them up.
    """
    for name in SERVICE_VARS:
        monkeypatch.delenv(name, raising=False)
    allocation = BACKENDS.allocate()
    for name, value in allocation.env.items():
        monkeypatch.setenv(name, value)
    try:
        yield allocation.env
    finally:
        BACKENDS.release(allocation)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "server", env="development")


@pytest.fixture
def initialised(settings: Settings) -> InitResult:
    return init_data_dir(settings)


@pytest.fixture
def app(settings: Settings, initialised: InitResult) -> FastAPI:
    return create_app(settings)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def world(client: TestClient, initialised: InitResult) -> World:
    return build_world(client, initialised.admin_token)


@pytest.fixture(scope="session")
def bare_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtualenv holding PyNaCl alone, for verify.py as a recipient runs it (tests/support/verifier.py)."""
    from tests.support.verifier import make_bare_python

    return make_bare_python(tmp_path_factory.mktemp("verify-venv") / "venv")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def cli_env(**extra: str) -> dict[str, str]:
    # The test backend's service settings pass through (set by backend_env); nothing else of the host's.
    keep = (*SERVICE_VARS, *GENEROUS_LIMITS)
    env = {k: v for k, v in os.environ.items() if not k.startswith("COUNTERSIGN_") or k in keep}
    env.update({"COUNTERSIGN_ENV": "development", "PYTHONUNBUFFERED": "1"}, **extra)
    return env


def countersign(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120, check: bool = True, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the real CLI in a subprocess, as a user would."""
    result = subprocess.run(
        [sys.executable, "-m", "countersign", *args],
        env=env or cli_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        input=input,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"countersign {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    return result


class LiveServer:
    """`countersign server run` in a subprocess on a loopback port; can be stopped and started again.

    With `tls=(cert, key)` it serves https (`ca` verifies its health check); `tls` may be changed between runs.
    """

    def __init__(self, data: Path, port: int, tls: tuple[Path, Path] | None = None, ca: Path | None = None) -> None:
        self.data, self.port, self.tls, self.ca = data, port, tls, ca
        self.env: dict[str, str] = {}  # extra environment for the next start (e.g. the SMTP server to use)
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data.parent / f"server-{port}.log"

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "countersign",
                    "server",
                    "run",
                    "--data",
                    str(self.data),
                    "--port",
                    str(self.port),
                    *(["--tls-cert", str(self.tls[0]), "--tls-key", str(self.tls[1])] if self.tls else []),
                ],
                env=cli_env(**self.env),
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1, verify=self.verify()).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError(f"server did not start: {self.log.read_text()}")

    def verify(self) -> ssl.SSLContext | bool:
        return ssl.create_default_context(cafile=str(self.ca)) if self.ca else True

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=15)
        self.proc = None


@dataclass
class Deployment:
    """A live server with a site, an officer and an enrolled recorder home."""

    server: LiveServer
    admin_token: str
    officer_token: str
    home: Path

    def officer_env(self) -> dict[str, str]:
        return cli_env(COUNTERSIGN_TOKEN=self.officer_token, COUNTERSIGN_SERVER=self.server.url)


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    data = tmp_path / "server"
    init = countersign("server", "init", "--data", str(data))
    admin = next(line.split()[-1] for line in init.stdout.splitlines() if line.startswith("admin token"))
    server = LiveServer(data, free_port())
    server.start()
    try:
        # Admin set-up over HTTP (the admin CLI has its own tests); enrolment through the real CLI.
        api = httpx.Client(base_url=server.url, headers=bearer(admin))
        assert api.post("/v1/sites", json={"id": "tokyo"}).status_code == 201
        officer = api.post("/v1/users", json={"name": "olivia", "role": "officer", "sites": ["tokyo"]}).json()["token"]
        approve_user(Settings(data_dir=data, env="development"), "olivia")  # the second person, on the server
        code = api.post("/v1/devices", json={"name": "counter-1", "site": "tokyo"}).json()["enrolment_code"]
        api.close()
        home = tmp_path / "device"
        countersign("recorder", "enroll", "--server", server.url, "--code", code, "--home", str(home))
        yield Deployment(server, admin, officer, home)
    finally:
        server.stop()
