"""Install shapes: each machine's extra, installed alone in a fresh virtualenv, runs its own commands only.

`pip install 'countersign[recorder]'` (counter PC), `[client]` (officer's laptop) and `[server]`
each go into their own `python -m venv` in a temporary folder, non-editable, from a wheel built
once from this checkout (copied first, so the build writes nothing into the repo). For each:
the `countersign` command exists and `countersign --help` works; the shape's own commands'
`--help` work; the commands it does not install refuse with one line (`not installed ...
pip install 'countersign[...]'`), a non-zero exit and no traceback; and the distributions it
must not have are absent from that virtualenv.

pip reaches the package index and reuses its own cache. The shapes do not depend on the test
backend, so this module runs once per `make test` (skipped in the PostgreSQL + S3 run).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytestmark = [
    pytest.mark.install_shapes,
    pytest.mark.timeout(1200),  # the first test sets up three virtualenvs from the package index (1.5-2.5 min)
    pytest.mark.skipif(
        os.environ.get("COUNTERSIGN_TEST_BACKEND") == "postgres-s3",
        reason="install shapes do not depend on the backend: checked once, in the SQLite run",
    ),
]

SERVER_DISTS: tuple[str, ...] = (
    "fastapi",
    "starlette",
    "uvicorn",
    "sqlalchemy",
    "alembic",
    "boto3",
    "botocore",
    "psycopg",
)
SERVER_DISTS += ("psycopg-binary", "pydantic-settings", "prometheus-client", "fastapi-offline", "jinja2", "pyotp")
AUDIO_DISTS = ("sounddevice", "numpy", "soundfile")


@dataclass(frozen=True)
class Shape:
    extra: str
    works: tuple[tuple[str, ...], ...]  # argv after `countersign` that must exit 0
    refuses: dict[str, str]  # sub-command -> the extra its error must name
    absent: tuple[str, ...]  # distributions that must not be installed


SHAPES = {
    "recorder": Shape(
        "recorder",
        (("--help",), ("recorder", "--help"), ("recorder", "record", "--help")),
        {"server": "server", "db": "server", "retention": "server"},
        SERVER_DISTS,
    ),
    "client": Shape(
        "client",
        (("--help",), ("evidence", "--help"), ("audit", "verify", "--help"), ("admin", "--help"), ("hold", "--help")),
        {"server": "server", "db": "server", "retention": "server", "recorder": "recorder"},
        SERVER_DISTS + AUDIO_DISTS,
    ),
    "server": Shape(
        "server",
        (("--help",), ("server", "--help"), ("db", "--help"), ("retention", "--help")),
        {"recorder": "recorder"},
        ("sounddevice",),
    ),
}

_IGNORE = shutil.ignore_patterns(
    ".git",
    ".venv",
    "__pycache__",
    "*.egg-info",
    "build",
    "dist",
    "countersign-data",
    "demo-data",
    ".bench",
    ".*_cache",
    ".hypothesis",
    "tests",
    "bench",
    "*.env",
)


@dataclass
class Venv:
    root: Path
    seconds: float

    @property
    def bin(self) -> Path:
        return self.root / "bin"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"}}
        env["PATH"] = f"{self.bin}{os.pathsep}{env.get('PATH', '')}"
        env["VIRTUAL_ENV"] = str(self.root)
        env["NO_COLOR"] = "1"
        env["COLUMNS"] = "200"
        return env

    def run(self, *argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, cwd=cwd, env=self.env(), capture_output=True, text=True, timeout=120, check=False)


def _check(argv: list[str], cwd: Path | None = None) -> None:
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, f"{' '.join(argv)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("install-shapes")


@pytest.fixture(scope="module")
def wheel(workdir: Path) -> Path:
    """The countersign wheel, built once from a copy of this checkout (what `pip install <path>` builds)."""
    source = workdir / "source"
    shutil.copytree(REPO, source, ignore=_IGNORE)
    _check([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(workdir / "wheels"), str(source)])
    (built,) = (workdir / "wheels").glob("countersign-*.whl")
    return built


@pytest.fixture(scope="module")
def venvs(workdir: Path, wheel: Path) -> dict[str, Venv]:
    """One fresh virtualenv per shape, installed in parallel (pip mostly waits on the index and unzips)."""

    def install(extra: str) -> Venv:
        started = time.monotonic()
        root = workdir / f"venv-{extra}"
        _check([sys.executable, "-m", "venv", str(root)])
        _check([str(root / "bin" / "python"), "-m", "pip", "install", "-q", f"{wheel}[{extra}]"], cwd=workdir)
        return Venv(root, time.monotonic() - started)

    with ThreadPoolExecutor(len(SHAPES)) as pool:
        built = dict(zip(SHAPES, pool.map(install, SHAPES), strict=True))
    for extra, venv in built.items():
        print(f"install shape [{extra}]: {venv.seconds:.1f} s")
    return built


@pytest.fixture(params=list(SHAPES))
def shape(request: pytest.FixtureRequest, venvs: dict[str, Venv]) -> Iterator[tuple[Shape, Venv]]:
    yield SHAPES[request.param], venvs[request.param]


def test_countersign_is_installed_from_the_wheel_not_the_checkout(shape: tuple[Shape, Venv], workdir: Path) -> None:
    spec, venv = shape
    assert (venv.bin / "countersign").is_file(), f"[{spec.extra}] has no countersign command"
    done = venv.run(str(venv.bin / "python"), "-c", "import countersign; print(countersign.__file__)", cwd=workdir)
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()).is_relative_to(venv.root), f"[{spec.extra}] imports {done.stdout.strip()}"


def test_own_commands_work(shape: tuple[Shape, Venv], workdir: Path) -> None:
    spec, venv = shape
    for argv in spec.works:
        done = venv.run("countersign", *argv, cwd=workdir)
        assert done.returncode == 0, f"[{spec.extra}] countersign {' '.join(argv)}:\n{done.stdout}\n{done.stderr}"
        assert "Usage:" in done.stdout, f"[{spec.extra}] countersign {' '.join(argv)} printed no help"
        assert "Traceback" not in done.stderr


def test_commands_it_lacks_refuse_in_one_line(shape: tuple[Shape, Venv], workdir: Path) -> None:
    spec, venv = shape
    for command, extra in spec.refuses.items():
        done = venv.run("countersign", command, "--help", cwd=workdir)
        shown = f"[{spec.extra}] countersign {command} --help -> {done.returncode}:\n{done.stdout}\n{done.stderr}"
        assert done.returncode != 0, shown
        assert "Traceback" not in done.stdout + done.stderr, shown
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, shown
        assert "not installed" in lines[0], shown
        assert f"pip install 'countersign[{extra}]'" in lines[0], shown


def test_every_command_either_works_or_refuses_cleanly(shape: tuple[Shape, Venv], workdir: Path) -> None:
    from countersign.cli import SUBCOMMANDS

    spec, venv = shape
    for command, (_, extra, _) in SUBCOMMANDS.items():
        done = venv.run("countersign", command, "--help", cwd=workdir)
        shown = f"[{spec.extra}] countersign {command} --help -> {done.returncode}:\n{done.stdout}\n{done.stderr}"
        assert "Traceback" not in done.stdout + done.stderr, shown
        if done.returncode != 0:
            assert f"not installed on this machine (missing {command}" not in done.stderr, shown
            assert done.stderr.strip().count("\n") == 0 and f"countersign[{extra}]" in done.stderr, shown
            # "missing <one of our modules>" would mean a module of ours is missing from the wheel, not an extra
            missing = done.stderr.split("(missing ", 1)[-1].split(")", 1)[0].split(".")[0]
            assert missing not in {"api", "client", "recorder", "retention", "evidence", "consent"}, shown


def test_what_it_must_not_have_is_absent(shape: tuple[Shape, Venv], workdir: Path) -> None:
    spec, venv = shape
    probe = (
        "import importlib.metadata as m, sys\n"
        "found = []\n"
        "for name in sys.argv[1:]:\n"
        "    try:\n"
        "        found.append(f'{name}=={m.version(name)}')\n"
        "    except m.PackageNotFoundError:\n"
        "        pass\n"
        "print(' '.join(found))\n"
    )
    done = venv.run(str(venv.bin / "python"), "-c", probe, *spec.absent, cwd=workdir)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "", f"[{spec.extra}] installs what it must not: {done.stdout.strip()}"
