"""The README's exit-code table is the code's, and every code in it is what the real CLI returns."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import soundfile as sf

from evidence.errors import ExitCode
from tests.conftest import REPO, Deployment, cli_env, countersign, free_port
from tests.support.factories import tone

ROW = re.compile(r"^\| (\d+) \| `([A-Z_]+)` \| (.+?) \| (.+?) \|$")


def readme_table() -> dict[int, tuple[str, str]]:
    """code -> (name, commands) from the table under 'Using it'."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## Using it", 1)[1].split("\n## ", 1)[0]
    rows = [m.groups() for m in map(ROW.match, section.splitlines()) if m]
    table = {int(code): (name, commands) for code, name, _meaning, commands in rows}
    assert len(table) == len(rows), "a code is listed twice"
    return table


def test_readme_table_is_the_code() -> None:
    assert {code: name for code, (name, _) in readme_table().items()} == {c.value: c.name for c in ExitCode}


def commands_for(code: ExitCode) -> str:
    return readme_table()[code.value][1]


def assert_one_line_error(result: object, code: ExitCode, *needles: str) -> None:
    returncode, stderr = result.returncode, result.stderr  # type: ignore[attr-defined]
    assert returncode == code, (code, returncode, stderr)
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, stderr
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])


def wav(path: Path, seconds: float) -> Path:
    sf.write(path, tone(seconds), 16000, subtype="PCM_16")
    return path


def copy_home(deployment: Deployment, dest: Path, **config: str) -> Path:
    """An independent copy of the enrolled home (so one case cannot break another), optionally re-pointed."""
    shutil.copytree(deployment.home, dest)
    if config:
        device = json.loads((dest / "device.json").read_text())
        (dest / "device.json").write_text(json.dumps({**device, **config}))
    return dest


def record(home: Path, source: Path, *extra: str) -> object:
    args = ["recorder", "record", "--home", str(home), "--input", str(source), "--consent", "given"]
    return countersign(*args, "--language", "en", "--segment-seconds", "1", *extra, check=False)


def test_every_documented_code_through_the_cli(deployment: Deployment, tmp_path: Path) -> None:
    officer = deployment.officer_env()
    nowhere = f"http://127.0.0.1:{free_port()}"
    source = wav(tmp_path / "in.wav", 3)

    # 0 OK
    assert "every command" in commands_for(ExitCode.OK)
    assert countersign("recorder", "status", "--home", str(deployment.home)).returncode == ExitCode.OK

    # 1 FAILED: the server refuses a client request
    assert "evidence" in commands_for(ExitCode.FAILED)
    missing = countersign("evidence", "show", "00000000-0000-4000-8000-000000000000", env=officer, check=False)
    assert_one_line_error(missing, ExitCode.FAILED, "404")

    # 2 USAGE: no token; a bad setting; a wrong option
    assert "every command" in commands_for(ExitCode.USAGE)
    no_token = countersign("evidence", "list", env=cli_env(COUNTERSIGN_SERVER=deployment.server.url), check=False)
    assert_one_line_error(no_token, ExitCode.USAGE, "COUNTERSIGN_TOKEN")
    bad_env = countersign(
        "server", "init", "--data", str(tmp_path / "new"), env=cli_env(COUNTERSIGN_ENV="dev"), check=False
    )
    assert_one_line_error(bad_env, ExitCode.USAGE, "COUNTERSIGN_ENV")
    bad_consent = record(deployment.home, source, "--consent", "maybe")
    assert_one_line_error(bad_consent, ExitCode.USAGE, "--consent")

    # 3 NOT_ENROLLED
    for command in ("record", "sync", "status"):
        assert f"recorder {command}" in commands_for(ExitCode.NOT_ENROLLED)
    empty = tmp_path / "empty-home"
    assert_one_line_error(
        countersign("recorder", "status", "--home", str(empty), check=False), ExitCode.NOT_ENROLLED, "not enrolled"
    )
    assert_one_line_error(
        countersign("recorder", "sync", "--home", str(empty), check=False), ExitCode.NOT_ENROLLED, "not enrolled"
    )
    assert_one_line_error(record(empty, source), ExitCode.NOT_ENROLLED, "not enrolled")

    # 4 NO_EVIDENCE_KEY
    # (a device that reaches its server refreshes its keys first: this one cannot, and holds none)
    no_key = copy_home(deployment, tmp_path / "no-key", server=f"http://127.0.0.1:{free_port()}")
    (no_key / "evidence_keys.json").write_text("{}")
    assert_one_line_error(record(no_key, source), ExitCode.NO_EVIDENCE_KEY, "Refusing to record")

    # 5 SPOOL_FULL (the server is up: spooled segments stay until the recording is finished)
    small = copy_home(deployment, tmp_path / "small-spool")
    full = record(small, wav(tmp_path / "long.wav", 20), "--spool-max-mb", "0.25", "--upload-wait", "5")
    assert full.returncode == ExitCode.SPOOL_FULL and "ALARM" in full.stderr, full.stderr  # type: ignore[attr-defined]

    # 6 SERVER_REFUSED: an upload with a revoked token; an enrolment with a used code
    assert "recorder record" in commands_for(ExitCode.SERVER_REFUSED)
    refused_home = copy_home(deployment, tmp_path / "bad-token")
    (refused_home / "token").write_text("csd_not-a-real-token")
    refused = record(refused_home, source, "--upload-wait", "5")
    assert refused.returncode == ExitCode.SERVER_REFUSED, refused.stderr  # type: ignore[attr-defined]
    assert "refused" in refused.stderr and "Traceback" not in refused.stderr  # type: ignore[attr-defined]
    assert "recorder sync" in commands_for(ExitCode.SERVER_REFUSED)
    refused_sync = countersign("recorder", "sync", "--home", str(refused_home), check=False)
    assert refused_sync.returncode == ExitCode.SERVER_REFUSED and "kept in the spool" in refused_sync.stderr
    assert "recorder enroll" in commands_for(ExitCode.SERVER_REFUSED)
    used = countersign(
        "recorder", "enroll", "--server", deployment.server.url, "--code", "ABCD-EFGH-JKLM-NPQR",
        "--home", str(tmp_path / "never"), check=False,
    )  # fmt: skip
    assert_one_line_error(used, ExitCode.SERVER_REFUSED, "unknown, already used or expired")
    assert not (tmp_path / "never" / "device.json").exists()

    # 7 SERVER_UNREACHABLE: record (evidence stays spooled), sync, enroll, the client
    offline = copy_home(deployment, tmp_path / "offline", server=nowhere)
    down = record(offline, source, "--upload-wait", "1")
    assert_one_line_error(down, ExitCode.SERVER_UNREACHABLE, "recorder sync")
    assert "run 'countersign recorder sync'" in down.stdout  # type: ignore[attr-defined]
    assert list((offline / "spool").glob("*/[0-9]*.json")), "the evidence must stay spooled"
    assert_one_line_error(
        countersign("recorder", "sync", "--home", str(offline), check=False), ExitCode.SERVER_UNREACHABLE
    )
    assert_one_line_error(
        countersign(
            "recorder", "enroll", "--server", nowhere, "--code", "ABCD-EFGH-JKLM-NPQR",
            "--home", str(tmp_path / "never"), check=False,
        ),
        ExitCode.SERVER_UNREACHABLE,
        "cannot enrol",
    )  # fmt: skip
    client_down = countersign(
        "evidence", "list", env=cli_env(COUNTERSIGN_TOKEN=deployment.officer_token, COUNTERSIGN_SERVER=nowhere),
        check=False,
    )  # fmt: skip
    assert_one_line_error(client_down, ExitCode.SERVER_UNREACHABLE, "Cannot reach")

    # ... and once the server is back, sync delivers what waited (the README's promise for 7).
    device = json.loads((offline / "device.json").read_text())
    (offline / "device.json").write_text(json.dumps({**device, "server": deployment.server.url}))
    synced = countersign("recorder", "sync", "--home", str(offline))
    assert "segments sent; complete" in synced.stdout


def test_client_refusal_and_retention_codes(deployment: Deployment, tmp_path: Path) -> None:
    """1 for the admin CLI's refused request; 2 for retention's conflicting options and bad settings."""
    admin = cli_env(COUNTERSIGN_TOKEN=deployment.admin_token, COUNTERSIGN_SERVER=deployment.server.url)
    twice = countersign("admin", "site", "add", "tokyo", env=admin, check=False)
    assert_one_line_error(twice, ExitCode.FAILED)
    assert "retention run" in commands_for(ExitCode.FAILED)
    conflicting = countersign(
        "retention", "run", "--data", str(deployment.server.data), "--dry-run", "--remove-orphans", check=False
    )
    assert_one_line_error(conflicting, ExitCode.USAGE, "--remove-orphans")
    unconfigured = countersign(
        "retention", "status", "--data", str(tmp_path / "none"), env=cli_env(COUNTERSIGN_ENV="prod"), check=False
    )
    assert_one_line_error(unconfigured, ExitCode.USAGE, "COUNTERSIGN_ENV")
