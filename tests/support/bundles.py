"""Evidence bundles made the way an officer makes them: a simulated device records, the officer exports.

Used by the API tests of the export (tests/api/test_export.py) and by the
verifier's tests (tests/evidence/test_bundle_*.py) for their end-to-end cases.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass

import httpx
from fastapi.testclient import TestClient
from nacl.public import PrivateKey

from evidence.bundle.crypto import open_outer
from tests.support.factories import SimDevice, SimRecording
from tests.support.world import World, bearer

PURPOSE = "handed to the police for case K-2026-001"
CASE = "K-2026-001"


@dataclass
class Exported:
    recording: SimRecording
    outer: bytes  # the zip as the service sent it (encrypted)
    recipient: PrivateKey
    access_log: int

    def inner(self) -> bytes:
        """The decrypted inner bundle (what --unencrypted writes)."""
        out = io.BytesIO()
        with zipfile.ZipFile(io.BytesIO(self.outer)) as outer:
            open_outer(outer, self.recipient, out)
        return out.getvalue()

    def members(self) -> dict[str, bytes]:
        with zipfile.ZipFile(io.BytesIO(self.inner())) as inner:
            return {name: inner.read(name) for name in inner.namelist()}


def upload(client: TestClient, device: SimDevice, rec: SimRecording) -> None:
    created = client.post("/v1/recordings", json=rec.create_body(), headers=device.auth)
    assert created.status_code == 201, created.text
    for seg in rec.segments:
        r = client.put(
            f"/v1/recordings/{rec.id}/segments/{seg.index}", content=seg.envelope, headers=device.segment_headers(seg)
        )
        assert r.status_code == 201, r.text


def record(
    client: TestClient, device: SimDevice, segments: int = 3, final: bool = True, outcome: str = "given"
) -> SimRecording:
    rec = device.new_recording(outcome=outcome)
    if outcome == "given":
        device.add_segments(rec, segments, final=final)
    upload(client, device, rec)
    return rec


def post_export(
    client: TestClient, token: str, recording_id: object, recipient: PrivateKey, **extra: object
) -> httpx.Response:
    body = {
        "purpose": PURPOSE,
        "case_ref": CASE,
        "recipient": "Station 7",
        "recipient_public_key": bytes(recipient.public_key).hex(),
        **extra,
    }
    return client.post(f"/v1/evidence/{recording_id}/export", json=body, headers=bearer(token))


def recorded_bundle(client: TestClient, world: World, segments: int = 3, final: bool = True) -> Exported:
    """A recording of `segments` segments by the world's north device, exported by its officer."""
    rec = record(client, world.device, segments, final)
    key = PrivateKey.generate()
    r = post_export(client, world.officer, rec.id, key)
    assert r.status_code == 200, r.text
    return Exported(rec, r.content, key, int(r.headers["x-countersign-access-log"]))
