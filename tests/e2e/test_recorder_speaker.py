"""`recorder record` at a real (PulseAudio) input with a speaker that does not exist."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest
import soundfile as sf

from consent.catalogue import pick
from tests.conftest import REPO, Deployment, bearer, cli_env
from tests.support.factories import tone
from tests.support.pulse import MONITOR_SOURCE, start_pulseaudio

pytestmark = pytest.mark.audio


def test_a_missing_speaker_is_one_line_and_prompts_are_bilingual(deployment: Deployment) -> None:
    from recorder.home import DeviceHome

    notice = pick(DeviceHome(deployment.home).notices(), "en")
    (deployment.home / "notice-audio").mkdir()
    sf.write(deployment.home / "notice-audio" / f"{notice.id}.en.v{notice.version}.wav", tone(0.5), 16000)
    with start_pulseaudio() as pulse:
        env = {**cli_env(), **pulse.pulse_vars(source=MONITOR_SOURCE)}
        result = subprocess.run(
            [sys.executable, "-m", "countersign", "recorder", "record", "--home", str(deployment.home),
             "--input-device", "pulse", "--output-device", "no-such-speaker", "--language", "en",
             "--duration", "1"],
            env=env, cwd=REPO, input="\n", capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    speaker = [line for line in result.stderr.splitlines() if "no-such-speaker" in line]
    assert len(speaker) == 1 and speaker[0].startswith("warning: Cannot play the notice audio"), result.stderr
    assert "告知しました" in result.stdout and "customer agrees" in result.stdout  # the staff prompt, in both
    assert "heard only silence" in result.stderr  # the null sink's monitor is digital silence
    rid = result.stdout.split()[-2]
    meta = httpx.get(f"{deployment.server.url}/v1/evidence/{rid}", headers=bearer(deployment.officer_token)).json()
    assert meta["consent"]["method"] == "displayed"  # not claimed as spoken
