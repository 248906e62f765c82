"""Key protection outside development, and the command line's own promises."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import typer
from fastapi.testclient import TestClient
from pydantic import SecretStr
from typer.testing import CliRunner

from api.app import create_app
from api.bootstrap import init_data_dir
from api.core.keys import KeyFileError
from api.core.settings import Settings, SettingsError
from countersign.cli import app as cli_app
from tests.conftest import REPO, cli_env, countersign

GOOD = "correct horse battery staple"


def production(data: Path, passphrase: str | None) -> Settings:
    return Settings(
        data_dir=data, env="production", key_passphrase=SecretStr(passphrase) if passphrase is not None else None
    )


@pytest.mark.parametrize(
    "passphrase",
    [
        None,
        "",
        "changeme",
        "password",
        "short",
        "replace-with-a-long-random-passphrase",  # deploy/countersign.env.example, copied as it is
        "change-me-to-something-long",
        "<your passphrase here>",
        "aaaaaaaaaaaaaaaa",
    ],
)
def test_production_refuses_placeholder_secrets(tmp_path: Path, passphrase: str | None) -> None:
    with pytest.raises(SettingsError, match="COUNTERSIGN_KEY_PASSPHRASE"):
        init_data_dir(production(tmp_path / "data", passphrase))
    assert not (tmp_path / "data").exists(), "nothing may be written before the secret is checked"


def test_production_keys_are_sealed_and_need_the_passphrase(tmp_path: Path) -> None:
    data = tmp_path / "data"
    result = init_data_dir(production(data, GOOD))
    for path in (data / "keys").iterdir():
        stored = json.loads(path.read_text())
        assert stored["protection"] == "argon2id+secretbox"
        assert (path.stat().st_mode & 0o777) == 0o600
    with TestClient(create_app(production(data, GOOD))) as client:
        assert client.get("/v1/audit/public-key").json()["public_key"] == result.service_public_key
    with pytest.raises(KeyFileError, match="wrong COUNTERSIGN_KEY_PASSPHRASE"):
        create_app(production(data, "a different long passphrase"))


def test_development_keys_refused_in_production(tmp_path: Path) -> None:
    data = tmp_path / "data"
    init_data_dir(Settings(data_dir=data, env="development"))
    with pytest.raises(KeyFileError, match="development mode"):
        create_app(production(data, GOOD))


def test_cli_init_refuses_placeholder_and_run_refuses_too(tmp_path: Path) -> None:
    env = cli_env(COUNTERSIGN_ENV="production", COUNTERSIGN_KEY_PASSPHRASE="changeme")
    refused = countersign("server", "init", "--data", str(tmp_path / "d"), env=env, check=False)
    assert refused.returncode == 2 and "COUNTERSIGN_KEY_PASSPHRASE" in refused.stderr
    assert "Traceback" not in refused.stderr
    countersign("server", "init", "--data", str(tmp_path / "d"))  # development
    again = countersign("server", "init", "--data", str(tmp_path / "d"), check=False)
    assert again.returncode == 2 and "already initialised" in again.stderr
    containers = countersign("server", "init", "--data", str(tmp_path / "d"), "--exist-ok")
    assert "schema upgraded" in containers.stdout
    assert "up to date" in countersign("db", "current", "--data", str(tmp_path / "d")).stdout
    run = countersign("server", "run", "--data", str(tmp_path / "d"), env=env, check=False)
    assert run.returncode == 2 and "COUNTERSIGN_KEY_PASSPHRASE" in run.stderr


def _commands(group: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command path, walking groups (Typer ships its own click, so duck-type them).

    Through list_commands/get_command, as click does: the top group imports its sub-commands lazily.
    """
    found: list[tuple[str, ...]] = []
    if not hasattr(group, "list_commands"):
        return found
    ctx = typer.Context(group)
    for name in group.list_commands(ctx):
        path = (*prefix, name)
        found.append(path)
        found += _commands(group.get_command(ctx, name), path)
    return found


COMMANDS = _commands(typer.main.get_command(cli_app))


def test_the_documented_commands_exist() -> None:
    for expected in [("server", "init"), ("server", "run"), ("admin", "site", "add"), ("admin", "user", "add"),
                     ("admin", "device", "add"), ("recorder", "enroll"), ("recorder", "record"), ("recorder", "sync"),
                     ("recorder", "status"), ("evidence", "list"), ("evidence", "show"), ("evidence", "get"),
                     ("evidence", "custody"), ("audit", "export"), ("audit", "verify")]:  # fmt: skip
        assert expected in COMMANDS


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_every_command_has_help(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(cli_app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output and len(result.output.strip().splitlines()) > 3


def test_openapi_docs_are_served(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert "/v1/evidence/{recording_id}/audio" in paths and "/healthz" in paths


def test_the_example_env_file_value_is_refused() -> None:
    """Whatever deploy/countersign.env.example says must not start a production service."""
    example = (REPO / "deploy" / "countersign.env.example").read_text()
    value = next(
        line.split("=", 1)[1] for line in example.splitlines() if line.startswith("COUNTERSIGN_KEY_PASSPHRASE=")
    )
    with pytest.raises(SettingsError, match="COUNTERSIGN_KEY_PASSPHRASE"):
        production(Path("/nonexistent"), value).passphrase()
