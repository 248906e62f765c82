"""Configuration and device errors are one clear line with their exit code, never a traceback."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile as sf

from consent.catalogue import builtin_notices, pick
from evidence.errors import ExitCode
from recorder import capture, prompt
from recorder.enroll import normalise_code
from recorder.errors import AudioDeviceError, BadEnrolmentCode, NoticeAudioError
from tests.conftest import Deployment, bearer, cli_env, countersign
from tests.support.factories import tone


def one_line_error(result: subprocess.CompletedProcess[str], code: ExitCode) -> str:
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    return errors[0]


# --- COUNTERSIGN_ENV and other settings: the variable, what it held, what it may hold ---------------


@pytest.mark.parametrize(
    "command",
    [
        ("server", "init"),
        ("server", "run"),
        ("db", "current"),
        ("db", "upgrade"),
        ("retention", "status"),
        ("retention", "run", "--dry-run"),
    ],
)
def test_a_typo_in_countersign_env_is_one_line(command: tuple[str, ...], tmp_path: Path) -> None:
    result = countersign(*command, "--data", str(tmp_path / "data"), env=cli_env(COUNTERSIGN_ENV="dev"), check=False)
    line = one_line_error(result, ExitCode.USAGE)
    assert "COUNTERSIGN_ENV='dev'" in line and "'development' or 'production'" in line, line
    assert not (tmp_path / "data").exists()


def test_a_bad_number_names_its_variable_and_never_echoes_secrets(tmp_path: Path) -> None:
    env = cli_env(COUNTERSIGN_MAX_SEGMENT_BYTES="lots", COUNTERSIGN_KEY_PASSPHRASE="a secret passphrase")
    line = one_line_error(countersign("db", "current", "--data", str(tmp_path), env=env, check=False), ExitCode.USAGE)
    assert "COUNTERSIGN_MAX_SEGMENT_BYTES='lots'" in line and "integer" in line
    assert "a secret passphrase" not in line


def test_an_unreachable_database_is_one_line(tmp_path: Path) -> None:
    env = cli_env(COUNTERSIGN_DATABASE_URL="not a url")
    line = one_line_error(countersign("db", "current", "--data", str(tmp_path), env=env, check=False), ExitCode.USAGE)
    assert "COUNTERSIGN_DATABASE_URL" in line


# --- enrolment codes: normalised on the device, refused clearly -------------------------------------


@pytest.mark.parametrize(
    "typed", ["ABCD-EFGH-JKLM-NPQR", "abcdefghjklmnpqr", " abcd efgh jklm npqr ", "AbCd-EfGh JkLm_NpQr"]
)
def test_enrolment_code_is_normalised(typed: str) -> None:
    assert normalise_code(typed) == "ABCD-EFGH-JKLM-NPQR"


@pytest.mark.parametrize("typed", ["", "ABCD-EFGH-JKLM", "ABCD-EFGH-JKLM-NPQR-STUV", "ABCD-EFGH-JKLM-NPQ!"])
def test_a_malformed_code_is_refused_before_the_server_is_asked(typed: str) -> None:
    with pytest.raises(BadEnrolmentCode) as caught:
        normalise_code(typed)
    assert caught.value.exit_code == ExitCode.USAGE and "XXXX-XXXX-XXXX-XXXX" in str(caught.value)


def test_enroll_usage_errors_are_one_line(tmp_path: Path) -> None:
    home = str(tmp_path / "home")
    short = countersign(
        "recorder", "enroll", "--server", "http://127.0.0.1:9", "--code", "abc", "--home", home, check=False
    )
    assert "XXXX-XXXX-XXXX-XXXX" in one_line_error(short, ExitCode.USAGE)
    no_scheme = countersign(
        "recorder", "enroll", "--server", "127.0.0.1:8000", "--code", "ABCD-EFGH-JKLM-NPQR", "--home", home,
        check=False,
    )  # fmt: skip
    assert "--server must be a URL" in one_line_error(no_scheme, ExitCode.USAGE)
    assert not (tmp_path / "home").exists()


# --- notice audio and input devices (PortAudio) ------------------------------------------------------


def notice() -> Any:
    return pick(list(builtin_notices()), "en")


def test_unplayable_notice_audio_is_one_warning_and_the_record_says_displayed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sd = pytest.importorskip("sounddevice")

    def no_speaker(*_args: Any, **_kwargs: Any) -> None:
        raise sd.PortAudioError("Error querying device -1")

    monkeypatch.setattr(sd, "play", no_speaker)
    audio = tmp_path / "notice.wav"
    sf.write(audio, tone(0.2), 16000, subtype="PCM_16")
    with pytest.raises(NoticeAudioError, match="Error querying device -1"):
        prompt.speak(audio, None)
    said: list[str] = []
    record_ = prompt.present(notice(), "s1", said.append, lambda _q: "", audio, None)
    assert record_.method == "displayed" and record_.outcome == "given"
    warnings = [line for line in said if line.startswith("warning:")]
    assert len(warnings) == 1 and "Cannot play the notice audio" in warnings[0] and "\n" not in warnings[0]


def test_an_input_device_that_will_not_open_is_one_error(monkeypatch: pytest.MonkeyPatch) -> None:
    sd = pytest.importorskip("sounddevice")
    with pytest.raises(AudioDeviceError) as caught:
        capture.DeviceSource(device="no-such-countersign-device").check()
    assert caught.value.exit_code == ExitCode.USAGE and "no-such-countersign-device" in str(caught.value)

    def busy(*_args: Any, **_kwargs: Any) -> None:
        raise sd.PortAudioError("Device unavailable")

    monkeypatch.setattr(sd, "InputStream", busy)
    with pytest.raises(AudioDeviceError, match="Device unavailable"):
        next(capture.DeviceSource().blocks())


def test_recorder_cli_device_and_notice_errors(deployment: Deployment, tmp_path: Path) -> None:
    home = str(deployment.home)
    # An input device that does not exist: one line, exit 2, nothing spooled, nothing shown.
    no_device = countersign(
        "recorder", "record", "--home", home, "--input-device", "no-such-countersign-device",
        "--consent", "given", "--duration", "1", check=False,
    )  # fmt: skip
    assert "audio input device cannot be opened" in one_line_error(no_device, ExitCode.USAGE)
    assert not (deployment.home / "spool").exists() or not list((deployment.home / "spool").iterdir())

    # Recording a file with the notice on screen: provisioned notice audio is not played (no speaker is
    # touched, so a missing one cannot fail), and the consent record says only "displayed".
    shown = notice()
    (deployment.home / "notice-audio").mkdir()
    sf.write(deployment.home / "notice-audio" / f"{shown.id}.en.v{shown.version}.wav", tone(0.5), 16000)
    source = tmp_path / "call.wav"
    sf.write(source, np.concatenate([tone(1.0), tone(1.0, seed=1)]), 16000, subtype="PCM_16")
    result = countersign(
        "recorder", "record", "--home", home, "--input", str(source), "--language", "en",
        "--output-device", "no-such-countersign-speaker", input="\n",
    )  # fmt: skip
    assert "Traceback" not in result.stderr and "PortAudio" not in result.stderr, result.stderr
    assert result.stdout.rstrip().endswith(" uploaded"), result.stdout
    rid = result.stdout.split()[-2]  # "<id> uploaded", after the consent prompt
    meta = httpx.get(f"{deployment.server.url}/v1/evidence/{rid}", headers=bearer(deployment.officer_token)).json()
    assert meta["consent"]["method"] == "displayed", meta["consent"]


def test_enrolment_failures_say_what_happened(deployment: Deployment, tmp_path: Path) -> None:
    api = httpx.Client(base_url=deployment.server.url, headers=bearer(deployment.admin_token))
    code = api.post("/v1/devices", json={"name": "counter-2", "site": "tokyo"}).json()["enrolment_code"]
    api.close()
    typed = code.replace("-", " ").lower()  # as someone reads it off a screen
    first = countersign(
        "recorder", "enroll", "--server", deployment.server.url, "--code", typed, "--home", str(tmp_path / "a")
    )
    assert "enrolled device" in first.stdout
    again = countersign(
        "recorder", "enroll", "--server", deployment.server.url, "--code", code, "--home", str(tmp_path / "b"),
        check=False,
    )  # fmt: skip
    line = one_line_error(again, ExitCode.SERVER_REFUSED)
    assert "refused the enrolment" in line and "unknown, already used or expired" in line
    assert "upload" not in line
    same_home = countersign(
        "recorder", "enroll", "--server", deployment.server.url, "--code", code, "--home", str(tmp_path / "a"),
        check=False,
    )  # fmt: skip
    assert "already holds an enrolled device" in one_line_error(same_home, ExitCode.USAGE)
