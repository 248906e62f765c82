"""Helpers for the in-process recorder tests: a device home without a server, reading a
spool back with the evidence private key, and the service served by uvicorn in a thread."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

import nacl.public
import nacl.signing
import numpy as np
import soundfile as sf
import uvicorn
from fastapi import FastAPI

from evidence import audio
from evidence.envelope import open_segment
from recorder.home import DeviceHome
from recorder.spool import SpooledRecording
from tests.support.factories import tone

RATE = 16000
PLAINTEXT_MAGIC = (b"RIFF", b"fLaC", b"OggS")


def offline_home(root: Path, evidence_public: nacl.public.PublicKey) -> DeviceHome:
    """An enrolled-looking device home whose recordings are sealed to `evidence_public`."""
    home = DeviceHome(root)
    config = {"server": "http://127.0.0.1:9", "device_id": "dev-offline", "site": "north", "service_public_key": ""}
    seed = bytes(nacl.signing.SigningKey.generate())
    home.save(config, seed, "csd_offline-token", {"k1": bytes(evidence_public).hex()}, [])
    return home


def write_wav(path: Path, seconds: float, rate: int = RATE, channels: int = 1) -> np.ndarray:
    """A deterministic test input file; returns its samples, shape (frames, channels)."""
    pcm = np.concatenate([tone(1.0, rate, freq=300 + 40 * i, seed=i) for i in range(int(np.ceil(seconds)))])
    pcm = pcm[: round(seconds * rate)]
    if channels == 2:
        pcm = np.concatenate([pcm, pcm[::-1]], axis=1)
    sf.write(path, pcm, rate, subtype="PCM_16")
    return pcm


def data_key(recording: SpooledRecording, private: nacl.public.PrivateKey) -> bytes:
    sealed = recording.meta()["sealed_keys"][0]["sealed"]
    return bytes(nacl.public.SealedBox(private).decrypt(bytes.fromhex(sealed)))


def decrypt_segments(recording: SpooledRecording, private: nacl.public.PrivateKey) -> list[np.ndarray]:
    """Each spooled segment opened with the evidence private key and decoded (AEAD binds index + final)."""
    key = data_key(recording, private)
    rid = uuid.UUID(recording.id)
    out = []
    for index in recording.segments():
        envelope, statement = recording.segment(index)
        pcm, rate = audio.decode(open_segment(key, rid, index, bool(statement["final"]), envelope))
        assert rate == recording.meta()["header"]["sample_rate"]
        out.append(pcm)
    return out


def finals(recording: SpooledRecording) -> list[bool]:
    return [bool(recording.segment(i)[1]["final"]) for i in recording.segments()]


def assert_no_plaintext(folder: Path, source: np.ndarray, *secrets: bytes) -> int:
    """No audio container header, no run of the source's raw PCM and no secret in any file."""
    raw = source.astype("<i2").tobytes()
    probes = [raw[i : i + 64] for i in range(0, len(raw) - 64, max(1, len(raw) // 16))]
    scanned = 0
    for path in folder.rglob("*"):
        if not path.is_file():
            continue
        data = path.read_bytes()
        scanned += 1
        for needle in (*PLAINTEXT_MAGIC, *probes, *secrets, *(s.hex().encode() for s in secrets)):
            assert needle not in data, f"plaintext or key material found in {path}"
    return scanned


class ThreadServer:
    """The real app served by uvicorn on a loopback port, in a thread; can stop and start again."""

    def __init__(self, app: FastAPI, port: int) -> None:
        self.app, self.port = app, port
        self.url = f"http://127.0.0.1:{port}"
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        server = uvicorn.Server(config)
        self._server = server
        self._thread = threading.Thread(target=server.run, name=f"uvicorn-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 15
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn did not start on port {self.port}")
            time.sleep(0.01)

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(15)
            assert not self._thread.is_alive(), "uvicorn did not stop"
        self._server = self._thread = None


def segment_statements(recording: SpooledRecording) -> list[dict[str, Any]]:
    return [recording.segment(i)[1] for i in recording.segments()]
