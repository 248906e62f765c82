"""deploy/countersign-recorder.service runs a real command with real options."""

from __future__ import annotations

import configparser
import shlex

from typer.testing import CliRunner

from countersign.cli import app
from tests.conftest import REPO

UNIT = REPO / "deploy" / "countersign-recorder.service"


def test_the_systemd_unit_runs_recorder_serve() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    unit.read_string(UNIT.read_text())
    command = shlex.split(unit["Service"]["ExecStart"])
    assert command[0].endswith("/countersign") and command[1:3] == ["recorder", "serve"]
    helped = CliRunner().invoke(app, [*command[1:3], "--help"], terminal_width=200)
    assert helped.exit_code == 0, helped.output
    for option in (word.split("=")[0] for word in command[3:] if word.startswith("--")):
        assert option in helped.output, option
    # systemd allows Environment= more than once (configparser keeps only the last): read the lines.
    environment = [line for line in UNIT.read_text().splitlines() if line.startswith("Environment=")]
    assert any("COUNTERSIGN_HOME=" in line for line in environment)  # serve's --home comes from here
    assert unit["Service"]["KillSignal"] == "SIGTERM"  # closes a running recording cleanly
