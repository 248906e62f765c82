"""Helpers for the retention tests: upload real recordings, make them old, look at what is left."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from api.core.models import AccessLog, Recording, SealedKey, Segment, utcnow
from api.core.services import Services
from api.core.storage.interface import segment_key
from retention.models import Tombstone
from retention.store import refresh_retention
from tests.support.factories import SimDevice, SimRecording

PURPOSE = "retention test: listen back"


def services_of(client: TestClient) -> Services:
    services: Services = client.app.state.services  # type: ignore[attr-defined]
    return services


def upload(client: TestClient, dev: SimDevice, segments: int = 2, final: bool = True, outcome: str = "given") -> str:
    """A real recording through the API; returns its id."""
    rec: SimRecording = dev.new_recording(outcome)
    reply = client.post("/v1/recordings", json=rec.create_body(), headers=dev.auth)
    assert reply.status_code == 201, reply.text
    if outcome == "given":
        dev.add_segments(rec, segments, final=final)
        for seg in rec.segments:
            reply = client.put(
                f"/v1/recordings/{rec.id}/segments/{seg.index}", content=seg.envelope, headers=dev.segment_headers(seg)
            )
            assert reply.status_code == 201, reply.text
    return str(rec.id)


def age(services: Services, rid: str, days: float, now: datetime | None = None) -> None:
    """Make a recording look as if it started `days` ago (time passes in tests without sleeping)."""
    with services.sessions() as session, session.begin():
        recording = session.get(Recording, rid)
        assert recording is not None
        recording.started_at = (now or utcnow()) - timedelta(days=days)
        refresh_retention(session, recording)


@dataclass(frozen=True)
class Remains:
    purge_state: str | None
    sealed_keys: int
    segment_rows: int
    objects: list[str]
    tombstone: Tombstone | None
    shred_entries: int
    purge_entries: int


def remains(services: Services, rid: str) -> Remains:
    with services.sessions() as session:
        recording = session.get(Recording, rid)
        assert recording is not None
        count = recording.segment_count

        def n(query: object) -> int:
            return session.scalar(query) or 0  # type: ignore[call-overload,no-any-return]

        def entries(action: str) -> int:
            return n(select(func.count()).where(AccessLog.target == f"recording:{rid}", AccessLog.action == action))

        return Remains(
            purge_state=recording.purge_state,
            sealed_keys=n(select(func.count()).where(SealedKey.recording_id == rid)),
            segment_rows=n(select(func.count()).where(Segment.recording_id == rid)),
            objects=[k for k in (segment_key(rid, i) for i in range(count + 1)) if services.store.exists(k)],
            tombstone=session.get(Tombstone, rid),
            shred_entries=entries("retention:recording:shred"),
            purge_entries=entries("retention:recording:purge"),
        )


def assert_intact(services: Services, rid: str, segments: int) -> None:
    r = remains(services, rid)
    assert (r.purge_state, r.sealed_keys >= 1, r.segment_rows, len(r.objects)) == (None, True, segments, segments), r
    assert r.tombstone is None and r.shred_entries == 0 and r.purge_entries == 0


def assert_purged_once(services: Services, rid: str) -> None:
    r = remains(services, rid)
    assert (r.purge_state, r.sealed_keys, r.segment_rows, r.objects) == ("purged", 0, 0, []), r
    assert r.tombstone is not None and r.tombstone.purged_at is not None and r.tombstone.signature is not None
    assert (r.shred_entries, r.purge_entries) == (1, 1), r


def new_id() -> str:
    return str(uuid.uuid4())
