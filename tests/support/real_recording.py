"""A recording made through the real audio path, for tests that start from one.

Speech (espeak-ng) is played into a private PulseAudio null sink while `countersign recorder
record` captures the sink's monitor through PortAudio (device "pulse"), encrypts, spools and
uploads it to the deployment's live server: what a counter does, with a loudspeaker for a customer.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from tests.conftest import REPO, Deployment, cli_env
from tests.support.pulse import MONITOR_SOURCE, start_pulseaudio
from tests.support.sounds import play_into_sink_and_wait, read_wav, speak_to_wav


@dataclass(frozen=True)
class Recorded:
    reference: npt.NDArray[np.int16]  # the speech that was played
    rate: int
    seconds: float  # how long the recorder was told to record
    stdout: str


def record_speech(deployment: Deployment, tmp_path: Path, sentence: str, segment_seconds: float = 1.0) -> Recorded:
    """Record `sentence` at the deployment's counter (consent given, English notice); the recorder's exit is checked."""
    reference_path = speak_to_wav(sentence, tmp_path / "reference.wav")
    reference, rate = read_wav(reference_path)
    seconds = len(reference) / rate + 4.0  # room for the stream to start and for the tail
    with start_pulseaudio() as pulse:
        env = {**cli_env(), **pulse.pulse_vars(source=MONITOR_SOURCE)}
        recorder = subprocess.Popen(
            [sys.executable, "-m", "countersign", "recorder", "record", "--home", str(deployment.home),
             "--input-device", "pulse", "--consent", "given", "--language", "en",
             "--segment-seconds", str(segment_seconds), "--duration", f"{seconds:.1f}"],
            env=env, cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        # Wait until the recorder has its stream open: the first segment is spooled ~1 s later,
        # and speech played before capture starts would simply be missing.
        deadline = time.monotonic() + 30
        spool = deployment.home / "spool"
        while time.monotonic() < deadline and not list(spool.glob("*/000000.json")):
            assert recorder.poll() is None, recorder.communicate()
            time.sleep(0.05)
        play_into_sink_and_wait(pulse, reference_path)
        out, err = recorder.communicate(timeout=seconds + 60)
    assert recorder.returncode == 0, err
    assert "uploaded" in out, out + err
    return Recorded(reference, rate, seconds, out)
