"""docker-compose.yml and the Dockerfile, checked statically (no Docker engine runs here).

What can drift silently is checked: the services the scale-out shape needs, the
environment variables against the settings the code really reads, the commands
against the CLI that really exists, healthchecks, and that no secret is baked in.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from api.core.settings import Settings
from countersign.cli import app as cli_app

REPO = Path(__file__).resolve().parent.parent
COMPOSE: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
SECRET_WORDS = ("PASSWORD", "PASSPHRASE", "SECRET", "TOKEN")


def env_file_vars(name: str) -> dict[str, str]:
    text = (REPO / f"{name}.example").read_text()
    return dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))


def countersign_env(service: dict[str, Any]) -> dict[str, str]:
    env = {k: str(v) for k, v in (service.get("environment") or {}).items()}
    for name in service.get("env_file", []):
        env.update(env_file_vars(name))
    return env


def cli_has(path: list[str]) -> bool:
    """Does `countersign <path...>` name a command, with every --option it is given?"""
    command: Any = typer.main.get_command(cli_app)
    words = list(path)
    while words and not words[0].startswith("-") and hasattr(command, "get_command"):
        command = command.get_command(typer.Context(command), words.pop(0))  # the top group loads lazily
        if command is None:
            return False
    options = {opt for param in command.params for opt in getattr(param, "opts", [])}
    return all(w in options for w in words if w.startswith("--"))


def test_the_scale_out_shape_is_there() -> None:
    assert {"api", "retention", "postgres", "minio", "minio-setup", "init"} <= set(SERVICES)
    for name in ("postgres", "minio", "api"):
        assert "healthcheck" in SERVICES[name], f"{name} has no healthcheck"
    assert {"keys", "pgdata", "objects"} <= set(COMPOSE["volumes"])


@pytest.mark.parametrize("name", ["api", "retention", "init"])
def test_countersign_services_use_only_real_settings(name: str) -> None:
    env = countersign_env(SERVICES[name])
    fields = {f"COUNTERSIGN_{field.upper()}" for field in Settings.model_fields}
    named = {k for k in env if k.startswith("COUNTERSIGN_")}
    assert named <= fields, f"unknown settings: {named - fields}"
    assert env["COUNTERSIGN_ENV"] == "production" and env["COUNTERSIGN_STORE"] == "s3"
    assert env["COUNTERSIGN_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert "COUNTERSIGN_KEY_PASSPHRASE" in env and {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(env)


def test_no_secret_is_baked_in() -> None:
    for name, service in SERVICES.items():
        for key, value in (service.get("environment") or {}).items():
            assert not any(word in key for word in SECRET_WORDS), f"{name}: {key} belongs in an env file"
            assert "@" not in str(value), f"{name}: {key} looks like it carries credentials"
    ignored = (REPO / ".gitignore").read_text()
    assert "deploy/*.env" in ignored


def test_the_bucket_is_created_with_object_lock() -> None:
    script = " ".join(SERVICES["minio-setup"]["command"])
    bucket = countersign_env(SERVICES["api"])["COUNTERSIGN_S3_BUCKET"]
    assert re.search(rf"mc mb .*--with-lock .*local/{re.escape(bucket)}\b", script)


@pytest.mark.parametrize("name", ["api", "init"])
def test_service_commands_exist_in_the_cli(name: str) -> None:
    command = SERVICES[name]["command"]
    assert cli_has(command), f"countersign {' '.join(command)} is not a command"


def test_retention_worker_runs_a_real_command() -> None:
    script = " ".join(SERVICES["retention"]["command"])
    found = re.search(r"countersign ([^;]+);", script)
    assert found and cli_has(found.group(1).split()), script


def test_dockerfile_builds_what_compose_runs() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["countersign"]' in dockerfile
    assert "libsndfile1" in dockerfile  # soundfile (FLAC -> WAV on retrieval) links against it
    # Whatever a bare-metal server installs, the image installs too (the bundle report's font, for one).
    script = (REPO / "scripts" / "install-system-deps.sh").read_text()
    server = re.search(r"^\s*server\) packages=\(([^)]*)\)", script, re.M)
    assert server is not None
    for package in server.group(1).split():
        assert package in dockerfile, f"the image lacks {package}, which a server needs"
    assert "libportaudio2" not in dockerfile, "the server image runs no recorder: no PortAudio"
    assert re.search(r"pip install [^\n]*\.\[server", dockerfile), "the image installs the server extra"
    copied = set(re.findall(r"^COPY (\w+) ", dockerfile, re.M))
    packages = {p.name for p in REPO.iterdir() if (p / "__init__.py").exists() and p.name not in ("tests", "bench")}
    assert packages <= copied, f"not copied into the image: {packages - copied}"
    assert SERVICES["api"]["build"] == "."
