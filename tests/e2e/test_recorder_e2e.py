"""The recorder as a user runs it: the real CLI against a live server on loopback."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import soundfile as sf

from tests.conftest import REPO, Deployment, cli_env, countersign, free_port
from tests.support.factories import tone

PLAINTEXT_MAGIC = (b"RIFF", b"fLaC", b"OggS")


def write_source(path: Path, seconds: float) -> np.ndarray:
    """A test input file (outside every home and data directory)."""
    pcm = np.concatenate([tone(1.0, freq=300 + 40 * i, seed=i) for i in range(int(seconds))])
    sf.write(path, pcm, 16000, subtype="PCM_16")
    return pcm[:, 0]


def only_recording_id(deployment: Deployment) -> str:
    listed = countersign("evidence", "list", "--json", env=deployment.officer_env())
    ids = [r["id"] for r in json.loads(listed.stdout)]
    assert len(ids) == 1, listed.stdout
    return ids[0]


def fetch(deployment: Deployment, recording_id: str) -> tuple[dict, np.ndarray]:
    headers = {"Authorization": f"Bearer {deployment.officer_token}"}
    url = f"{deployment.server.url}/v1/evidence/{recording_id}"
    meta = httpx.get(url, headers=headers).json()
    audio = httpx.post(f"{url}/audio", json={"purpose": "end-to-end test check"}, headers=headers, timeout=60)
    assert audio.status_code == 200, audio.text
    samples, rate = sf.read(io.BytesIO(audio.content), dtype="int16")
    assert rate == 16000
    return meta, samples


def assert_no_plaintext(source: np.ndarray, *folders: Path) -> int:
    """No audio container headers and no run of the source's raw PCM in any file."""
    raw = source.astype("<i2").tobytes()
    probes = [raw[i : i + 64] for i in range(0, len(raw) - 64, len(raw) // 16)]
    scanned = 0
    for folder in folders:
        for path in folder.rglob("*"):
            if not path.is_file():
                continue
            data = path.read_bytes()
            scanned += 1
            for magic in PLAINTEXT_MAGIC:
                assert magic not in data, f"{magic!r} found in {path}"
            for probe in probes:
                assert probe not in data, f"raw PCM found in {path}"
    return scanned


def record(deployment: Deployment, wav: Path, *extra: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return countersign(
        "recorder",
        "record",
        "--home",
        str(deployment.home),
        "--input",
        str(wav),
        "--consent",
        "given",
        "--language",
        "en",
        "--segment-seconds",
        "1",
        *extra,
        check=check,
    )


def test_file_input_round_trip_is_exact(deployment: Deployment, tmp_path: Path) -> None:
    source = write_source(tmp_path / "in.wav", 7)
    result = record(deployment, tmp_path / "in.wav")
    assert "uploaded" in result.stdout
    rid = only_recording_id(deployment)
    meta, samples = fetch(deployment, rid)
    assert meta["status"] == "complete" and meta["segment_count"] == 7
    assert np.array_equal(samples, source)
    assert not list((deployment.home / "spool").iterdir()), "an uploaded recording stays in the spool"
    assert assert_no_plaintext(source, deployment.home, deployment.server.data) > 5


def spooled_segments(home: Path) -> int:
    return len(list((home / "spool").glob("*/[0-9]*.json")))


def test_sigkill_mid_recording_then_sync(deployment: Deployment, tmp_path: Path) -> None:
    source = write_source(tmp_path / "in.wav", 30)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "countersign",
            "recorder",
            "record",
            "--home",
            str(deployment.home),
            "--input",
            str(tmp_path / "in.wav"),
            "--realtime",
            "--consent",
            "given",
            "--language",
            "en",
            "--segment-seconds",
            "1",
        ],
        env=cli_env(),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while spooled_segments(deployment.home) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    spooled = spooled_segments(deployment.home)
    assert 4 <= spooled < 30
    assert_no_plaintext(source, deployment.home)  # the crashed spool holds ciphertext only

    synced = countersign("recorder", "sync", "--home", str(deployment.home))
    assert "interrupted" in synced.stdout
    meta, samples = fetch(deployment, only_recording_id(deployment))
    # Everything spooled before the kill arrived; at most the segment being recorded is lost.
    assert meta["status"] == "interrupted"
    assert meta["segment_count"] == spooled
    assert not meta["segments"][-1]["final"]
    assert np.array_equal(samples, source[: spooled * 16000])  # the chain verified, or this read would fail


def test_server_down_segments_wait_then_arrive(deployment: Deployment, tmp_path: Path) -> None:
    source = write_source(tmp_path / "in.wav", 6)
    deployment.server.stop()
    result = record(deployment, tmp_path / "in.wav", "--upload-wait", "2", check=False)
    assert result.returncode == 7  # evidence stays spooled: the exit code tells a gateway to run sync
    assert "run 'countersign recorder sync'" in result.stdout
    status = countersign("recorder", "status", "--home", str(deployment.home))
    assert "unsent 6" in status.stdout
    failed = countersign("recorder", "sync", "--home", str(deployment.home), check=False)
    assert failed.returncode == 7 and "cannot be reached" in failed.stderr
    assert spooled_segments(deployment.home) == 6, "a failed sync must not lose spooled evidence"

    deployment.server.start()
    synced = countersign("recorder", "sync", "--home", str(deployment.home))
    assert "6 segments sent; complete" in synced.stdout
    meta, samples = fetch(deployment, only_recording_id(deployment))
    assert meta["status"] == "complete"
    assert np.array_equal(samples, source)


def test_full_spool_stops_cleanly_and_keeps_everything(deployment: Deployment, tmp_path: Path) -> None:
    source = write_source(tmp_path / "in.wav", 20)
    deployment.server.stop()
    result = record(deployment, tmp_path / "in.wav", "--upload-wait", "1", "--spool-max-mb", "0.25", check=False)
    assert result.returncode == 5
    assert "ALARM" in result.stderr
    kept = spooled_segments(deployment.home)
    assert 1 <= kept < 20

    deployment.server.start()
    countersign("recorder", "sync", "--home", str(deployment.home))
    meta, samples = fetch(deployment, only_recording_id(deployment))
    assert meta["status"] == "complete" and meta["segment_count"] == kept  # closed with a final segment
    assert np.array_equal(samples, source[: len(samples)])


def test_refuses_to_record_without_evidence_key(deployment: Deployment, tmp_path: Path) -> None:
    write_source(tmp_path / "in.wav", 2)
    # A device that reaches its server refreshes its keys first (recorder.keys): this one cannot, and holds none.
    config = json.loads((deployment.home / "device.json").read_text())
    (deployment.home / "device.json").write_text(json.dumps({**config, "server": f"http://127.0.0.1:{free_port()}"}))
    (deployment.home / "evidence_keys.json").write_text("{}")
    result = record(deployment, tmp_path / "in.wav", check=False)
    assert result.returncode == 4
    assert "Refusing to record" in result.stderr
    assert not (deployment.home / "spool").exists() or not list((deployment.home / "spool").iterdir())


def test_objection_records_no_audio(deployment: Deployment, tmp_path: Path) -> None:
    write_source(tmp_path / "in.wav", 2)
    countersign(
        "recorder",
        "record",
        "--home",
        str(deployment.home),
        "--input",
        str(tmp_path / "in.wav"),
        "--consent",
        "objected",
    )
    meta = httpx.get(
        f"{deployment.server.url}/v1/evidence/{only_recording_id(deployment)}",
        headers={"Authorization": f"Bearer {deployment.officer_token}"},
    ).json()
    assert meta["status"] == "objected" and meta["segment_count"] == 0
    assert meta["consent"]["outcome"] == "objected"
