"""The real audio path: speech played into a PulseAudio null sink, captured by the
recorder through PortAudio (sounddevice device "pulse", the sink's monitor),
encrypted, uploaded to a live server, retrieved by an officer, and compared."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import httpx
import pytest
import soundfile as sf

from consent.catalogue import Notice, pick
from tests.conftest import REPO, Deployment, cli_env
from tests.support.capture_process import start_capture
from tests.support.pulse import MONITOR_SOURCE, start_pulseaudio
from tests.support.real_recording import record_speech
from tests.support.similarity import SIMILARITY_THRESHOLD, contains_speech, envelope_similarity
from tests.support.sounds import read_wav, speak_to_wav
from tests.support.verifier import run_verify

pytestmark = pytest.mark.audio

SENTENCE = (
    "I have been waiting here for an hour. Call your supervisor right now. "
    "This is completely unacceptable and I want my money back today."
)
SEGMENT_SECONDS = 1.0


def test_speech_through_pulseaudio_round_trip(deployment: Deployment, tmp_path: Path, bare_python: Path) -> None:
    """Speech in, evidence out: the officer hears it, and a stranger verifies the exported bundle."""
    recorded = record_speech(deployment, tmp_path, SENTENCE, SEGMENT_SECONDS)
    reference, rate, duration = recorded.reference, recorded.rate, recorded.seconds

    headers = {"Authorization": f"Bearer {deployment.officer_token}"}
    listed = httpx.get(f"{deployment.server.url}/v1/evidence", headers=headers).json()
    assert len(listed) == 1 and listed[0]["status"] == "complete"
    audio = httpx.post(
        f"{deployment.server.url}/v1/evidence/{listed[0]['id']}/audio",
        json={"purpose": "real audio end-to-end test", "format": "wav"},
        headers=headers,
        timeout=60,
    )
    assert audio.status_code == 200, audio.text
    captured, captured_rate = sf.read(io.BytesIO(audio.content), dtype="int16")
    assert captured_rate == 16000

    # Duration: what was recorded, within one segment (the recorder stops at --duration).
    assert abs(len(captured) / captured_rate - duration) <= SEGMENT_SECONDS
    # Content: the played speech is in the evidence (threshold justified in tests/support/similarity.py).
    assert contains_speech(captured, captured_rate)
    similarity, lag = envelope_similarity(reference, captured, rate, captured_rate=captured_rate)
    assert similarity >= SIMILARITY_THRESHOLD, (similarity, lag)

    # The same real recording, exported with a passphrase by the CLI, verified by verify.py alone.
    recording_id = listed[0]["id"]
    handover = tmp_path / "handover"
    handover.mkdir()
    # Written by a Windows editor: the line ending is not part of the passphrase on either side.
    (handover / "passphrase.txt").write_bytes("署名の合言葉 counter 3\r\n".encode())
    exported = subprocess.run(
        [sys.executable, "-m", "countersign", "evidence", "export", recording_id, "--case", "K-2026-7",
         "--purpose", "real audio end-to-end: police hand-over", "--recipient", "Minato PS",
         "--passphrase-file", str(handover / "passphrase.txt"), "-o", str(handover / "bundle.zip")],
        env=deployment.officer_env(), cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert exported.returncode == 0, exported.stderr
    with zipfile.ZipFile(handover / "bundle.zip") as outer:
        (handover / "verify.py").write_bytes(outer.read("verify.py"))  # the verifier that came with it
    service_key = httpx.get(f"{deployment.server.url}/v1/audit/public-key").json()["public_key"]
    verdict = run_verify(
        bare_python, handover, "bundle.zip", "--passphrase-file", "passphrase.txt", "--service-key", service_key,
        "--lang", "en", "--extract", "opened",
    )  # fmt: skip
    assert verdict.returncode == 0, verdict.stdout + verdict.stderr
    assert verdict.stdout.startswith("Countersign evidence bundle: VALID\n"), verdict.stdout
    assert "api:evidence:export" in verdict.stdout and "K-2026-7" in verdict.stdout
    # What was verified is the speech that was played: the joined file holds it.
    joined, joined_rate = sf.read(handover / "opened" / "audio" / "recording.flac", dtype="int16")
    assert contains_speech(joined, joined_rate)


def test_notice_is_spoken_through_the_speaker(deployment: Deployment, tmp_path: Path) -> None:
    """With an audio version provisioned, the consent prompt plays it and records the method as spoken."""
    notice = pick([Notice.from_dict(n) for n in json.loads((deployment.home / "notices.json").read_text())], "en")
    audio_dir = deployment.home / "notice-audio"
    audio_dir.mkdir()
    spoken = speak_to_wav(notice.text, audio_dir / f"{notice.id}.en.v{notice.version}.wav", words_per_minute=320)
    reference, rate = read_wav(spoken)
    with start_pulseaudio() as pulse:
        # A second sink plays the part of the counter's speaker, so the notice does not leak into the recording.
        pulse.pactl("load-module", "module-null-sink", "sink_name=speaker")
        capture = start_capture(pulse, tmp_path / "speaker.wav", len(reference) / rate + 6, source="speaker.monitor")
        capture.wait_ready()
        env = {**cli_env(), **pulse.pulse_vars(source=MONITOR_SOURCE, sink="speaker")}
        result = subprocess.run(
            [sys.executable, "-m", "countersign", "recorder", "record", "--home", str(deployment.home),
             "--input-device", "pulse", "--output-device", "pulse", "--language", "en", "--duration", "1"],
            env=env, cwd=REPO, input="\n", capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        heard, heard_rate = capture.wait()
    assert result.returncode == 0, result.stderr
    assert notice.text in result.stderr  # shown as well as spoken
    similarity, _ = envelope_similarity(reference, heard, rate, captured_rate=heard_rate)
    assert similarity >= SIMILARITY_THRESHOLD, similarity
    headers = {"Authorization": f"Bearer {deployment.officer_token}"}
    listed = httpx.get(f"{deployment.server.url}/v1/evidence", headers=headers).json()
    assert listed[0]["consent"]["method"] == "displayed+spoken"
