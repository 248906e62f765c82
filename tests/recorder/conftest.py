"""Fixtures for the in-process recorder tests."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nacl.public
import numpy as np
import pytest
import soundfile as sf
from fastapi import FastAPI
from fastapi.testclient import TestClient

from consent.records import ConsentRecord
from recorder.client import DeviceClient
from recorder.enroll import enroll
from recorder.home import DeviceHome
from recorder.spool import Spool
from tests.conftest import free_port
from tests.recorder.support import ThreadServer, offline_home
from tests.support.factories import consent_record
from tests.support.world import World, bearer


@pytest.fixture
def evidence_private() -> nacl.public.PrivateKey:
    """The service's evidence private key, as far as these tests are concerned."""
    return nacl.public.PrivateKey.generate()


@pytest.fixture
def home(tmp_path: Path, evidence_private: nacl.public.PrivateKey) -> DeviceHome:
    return offline_home(tmp_path / "device", evidence_private.public_key)


@pytest.fixture
def spool(home: DeviceHome) -> Spool:
    return Spool(home.spool_dir, 64 * 1024 * 1024)


@pytest.fixture
def consent() -> ConsentRecord:
    return consent_record("given")


@dataclass
class Service:
    """The real service on loopback, a device home enrolled into site "north" through it, and the world."""

    server: ThreadServer
    home: DeviceHome
    api: TestClient  # the same app, in-process, for checking what arrived
    world: World

    def device_client(self, token: str | None = None) -> DeviceClient:
        return DeviceClient(self.server.url, token or self.home.token())

    def spool(self, max_bytes: int = 64 * 1024 * 1024) -> Spool:
        return Spool(self.home.spool_dir, max_bytes)

    def evidence(self, recording_id: str) -> dict[str, Any]:
        reply = self.api.get(f"/v1/evidence/{recording_id}", headers=bearer(self.world.officer))
        assert reply.status_code == 200, reply.text
        body: dict[str, Any] = reply.json()
        return body

    def audio(self, recording_id: str) -> np.ndarray:
        reply = self.api.post(
            f"/v1/evidence/{recording_id}/audio",
            json={"purpose": "recorder unit test"},
            headers=bearer(self.world.officer),
        )
        assert reply.status_code == 200, reply.text
        samples, _ = sf.read(io.BytesIO(reply.content), dtype="int16", always_2d=True)
        return np.asarray(samples)


@pytest.fixture
def service(app: FastAPI, client: TestClient, world: World, tmp_path: Path) -> Iterator[Service]:
    server = ThreadServer(app, free_port())
    server.start()
    try:
        created = client.post("/v1/devices", json={"name": "counter-r1", "site": "north"}, headers=bearer(world.admin))
        assert created.status_code == 201, created.text
        enroll(server.url, created.json()["enrolment_code"], tmp_path / "enrolled")
        yield Service(server, DeviceHome(tmp_path / "enrolled"), client, world)
    finally:
        server.stop()
