"""Per-device quotas: open recordings, bytes per UTC day, header size.

Each quota is met exactly at its limit and refused one past it with a clear answer; a refusal
stores nothing (no row, no object, no usage) but one audit entry, written the first time that
quota refuses that device in a UTC day only. Another device is never affected, an idempotent
retry of stored evidence still succeeds, and a device at a limit can still finish or interrupt
what it has open.
"""

from __future__ import annotations

import json
import threading
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from api.core.models import AccessLog, DeviceUsage, Recording, Segment, utcnow
from api.core.services import Services
from api.core.settings import Settings
from api.core.storage.interface import segment_key
from evidence.chain import canonical_json
from tests.conftest import World
from tests.support.factories import SimDevice, SimRecording

OPEN_LIMIT = 2


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Small quotas for the whole module (tests/conftest.py builds the service from these)."""
    return Settings(data_dir=tmp_path / "server", env="development", max_open_recordings=OPEN_LIMIT)


# --------------------------------------------------------------------------- helpers


def services(client: TestClient) -> Services:
    return client.app.state.services  # type: ignore[attr-defined,no-any-return]


def header_size(rec: SimRecording) -> int:
    return len(canonical_json(rec.header))


def open_rec(client: TestClient, dev: SimDevice, rec: SimRecording) -> Any:
    return client.post("/v1/recordings", json=rec.create_body(), headers=dev.auth)


def put(client: TestClient, dev: SimDevice, rec: SimRecording, index: int) -> Any:
    seg = rec.segments[index]
    return client.put(
        f"/v1/recordings/{rec.id}/segments/{index}", content=seg.envelope, headers=dev.segment_headers(seg)
    )


def interrupt(client: TestClient, dev: SimDevice, rec: SimRecording) -> Any:
    return client.post(f"/v1/recordings/{rec.id}/interrupt", headers=dev.auth)


def recording(dev: SimDevice, segments: int = 0, final: bool = True) -> SimRecording:
    rec = dev.new_recording()
    if segments:
        dev.add_segments(rec, segments, final=final)
    return rec


@dataclass(frozen=True)
class State:
    """Everything a refused request could have left behind."""

    recordings: int
    segments: int
    objects: tuple[str, ...]
    usage: tuple[tuple[str, str, int, int], ...]
    last_seq: int


def state(client: TestClient) -> State:
    with services(client).sessions() as session:
        usage = session.execute(
            select(DeviceUsage.device_id, DeviceUsage.day, DeviceUsage.uploaded_bytes, DeviceUsage.uploads)
        )
        return State(
            recordings=session.scalar(select(func.count()).select_from(Recording)) or 0,
            segments=session.scalar(select(func.count()).select_from(Segment)) or 0,
            objects=tuple(services(client).store.list("recordings/")),
            usage=tuple(sorted((d, str(day), b, n) for d, day, b, n in usage)),
            last_seq=session.scalar(select(func.max(AccessLog.seq))) or 0,
        )


def entries_after(client: TestClient, seq: int) -> list[AccessLog]:
    with services(client).sessions() as session:
        return list(session.scalars(select(AccessLog).where(AccessLog.seq > seq).order_by(AccessLog.seq)))


def used_today(client: TestClient, dev: SimDevice) -> int:
    with services(client).sessions() as session:
        return session.scalar(select(DeviceUsage.uploaded_bytes).where(DeviceUsage.device_id == dev.id)) or 0


def assert_refused_once(client: TestClient, dev: SimDevice, before: State, quota: str, status: int) -> None:
    """Nothing stored but the one refusal entry (first of the day for this quota)."""
    after = state(client)
    assert (after.recordings, after.segments, after.objects, after.usage) == (
        before.recordings,
        before.segments,
        before.objects,
        before.usage,
    )
    logged = entries_after(client, before.last_seq)
    assert [(e.actor, e.action, e.target, e.outcome) for e in logged] == [
        (f"device:{dev.id}", "api:access:denied", f"device:{dev.id}", "denied")
    ]
    assert logged[0].detail["quota"] == quota and logged[0].detail["status"] == status


def assert_nothing_stored(client: TestClient, before: State) -> None:
    assert state(client) == before


# --------------------------------------------------------------------------- open recordings


def test_open_recordings_are_limited_per_device(client: TestClient, world: World) -> None:
    dev = world.device
    first, second, third = recording(dev, 2), recording(dev, 2), recording(dev)
    assert open_rec(client, dev, first).status_code == 201  # 0 open
    assert open_rec(client, dev, second).status_code == 201  # 1 open: the limit is 2

    before = state(client)
    refused = open_rec(client, dev, third)
    assert refused.status_code == 429, refused.text
    detail = refused.json()["detail"]
    assert f"already has {OPEN_LIMIT} open recordings" in detail and "finish or interrupt one" in detail
    assert_refused_once(client, dev, before, "open_recordings", 429)

    again = state(client)
    assert open_rec(client, dev, third).status_code == 429
    assert_nothing_stored(client, again)  # logged once per day, not once per attempt

    # Idempotent retry of an open that succeeded (the answer was lost): still 200.
    retry = open_rec(client, dev, first)
    assert retry.status_code == 200 and retry.json()["status"] == "open"

    # Another device has its own limit.
    other = world.other_device
    assert [open_rec(client, other, recording(other)).status_code for _ in range(OPEN_LIMIT)] == [201] * OPEN_LIMIT


def test_an_objection_record_does_not_count_as_open(client: TestClient, world: World) -> None:
    dev = world.device
    for _ in range(OPEN_LIMIT):
        assert open_rec(client, dev, recording(dev)).status_code == 201
    objection = dev.new_recording("objected")
    reply = open_rec(client, dev, objection)
    assert reply.status_code == 201, reply.text
    assert reply.json()["status"] == "objected"  # closed at once: it holds nothing open


def test_at_the_open_limit_a_device_finishes_and_interrupts_what_it_has(client: TestClient, world: World) -> None:
    dev = world.device
    finishing, cut_short = recording(dev, 2), recording(dev, 1, final=False)
    assert open_rec(client, dev, finishing).status_code == 201
    assert open_rec(client, dev, cut_short).status_code == 201
    waiting = recording(dev)
    assert open_rec(client, dev, waiting).status_code == 429

    assert [put(client, dev, finishing, i).status_code for i in range(2)] == [201, 201]  # the last is final
    assert put(client, dev, cut_short, 0).status_code == 201
    assert open_rec(client, dev, waiting).status_code == 201  # the finished one freed a place

    assert open_rec(client, dev, recording(dev)).status_code == 429
    reply = interrupt(client, dev, cut_short)
    assert reply.status_code == 200 and reply.json()["status"] == "interrupted"
    assert open_rec(client, dev, recording(dev)).status_code == 201


def test_racing_opens_cannot_pass_the_limit(client: TestClient, world: World) -> None:
    dev = world.device
    recs = [recording(dev) for _ in range(6)]
    answers: list[int] = []
    lock = threading.Lock()

    def attempt(rec: SimRecording) -> None:
        status = open_rec(client, dev, rec).status_code
        with lock:
            answers.append(status)

    threads = [threading.Thread(target=attempt, args=(rec,)) for rec in recs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(answers) == [201] * OPEN_LIMIT + [429] * (len(recs) - OPEN_LIMIT)
    with services(client).sessions() as session:
        opened = session.scalar(select(func.count()).select_from(Recording).where(Recording.device_id == dev.id))
    assert opened == OPEN_LIMIT


# --------------------------------------------------------------------------- bytes per day


@pytest.mark.parametrize("slack", [0, -1], ids=["quota-met-exactly", "one-byte-short"])
def test_daily_bytes_are_limited_per_device(client: TestClient, world: World, slack: int) -> None:
    dev = world.device
    rec = recording(dev, 3)
    sizes = [len(seg.envelope) for seg in rec.segments]
    # The header counts too; with slack 0 the quota is met exactly by segment 1, with -1 it is one byte short.
    quota = header_size(rec) + sizes[0] + sizes[1] + slack
    services(client).settings.device_bytes_per_day = quota
    assert open_rec(client, dev, rec).status_code == 201
    assert put(client, dev, rec, 0).status_code == 201
    stored = 2 if slack == 0 else 1
    if stored == 2:
        reply = put(client, dev, rec, 1)
        assert reply.status_code == 201, reply.text
        assert used_today(client, dev) == quota

    before = state(client)
    refused = put(client, dev, rec, stored)
    assert refused.status_code == 429, refused.text
    detail = refused.json()["detail"]
    used = header_size(rec) + sum(sizes[:stored])
    assert detail.startswith("daily upload quota reached")
    assert f"has sent {used} of its {quota} bytes today (UTC)" in detail
    assert f"segment {stored} of {sizes[stored]} bytes" in detail and "retry after 00:00 UTC" in detail
    assert 1 <= int(refused.headers["Retry-After"]) <= 24 * 3600 + 1
    assert_refused_once(client, dev, before, "bytes_per_day", 429)
    assert segment_key(str(rec.id), stored) not in state(client).objects

    again = state(client)
    assert put(client, dev, rec, stored).status_code == 429
    if slack == 0:  # nothing left today: even a new header (bytes too) is refused
        assert open_rec(client, dev, recording(dev)).status_code == 429
    assert_nothing_stored(client, again)

    # An idempotent re-upload of a stored segment adds nothing: still 200, and still nothing stored.
    assert put(client, dev, rec, 0).status_code == 200
    assert_nothing_stored(client, again)

    # Another device has its own quota.
    other = world.other_device
    theirs = recording(other, 1)
    services(client).settings.device_bytes_per_day = header_size(theirs) + len(theirs.segments[0].envelope)
    assert open_rec(client, other, theirs).status_code == 201
    assert put(client, other, theirs, 0).status_code == 201


def test_over_the_byte_quota_a_device_can_still_interrupt(client: TestClient, world: World) -> None:
    dev = world.device
    rec = recording(dev, 2)
    services(client).settings.device_bytes_per_day = header_size(rec) + len(rec.segments[0].envelope)
    assert open_rec(client, dev, rec).status_code == 201
    assert put(client, dev, rec, 0).status_code == 201
    assert put(client, dev, rec, 1).status_code == 429
    reply = interrupt(client, dev, rec)
    assert reply.status_code == 200 and reply.json()["status"] == "interrupted"
    assert open_rec(client, dev, rec).status_code == 200  # and re-sending its open is still a repeat


def test_a_new_utc_day_starts_a_new_count(client: TestClient, world: World) -> None:
    dev = world.device
    rec = recording(dev, 2)
    services(client).settings.device_bytes_per_day = header_size(rec) + len(rec.segments[0].envelope)
    assert open_rec(client, dev, rec).status_code == 201
    assert put(client, dev, rec, 0).status_code == 201
    assert put(client, dev, rec, 1).status_code == 429
    with services(client).sessions() as session, session.begin():  # as if it were all sent yesterday
        yesterday = (utcnow() - timedelta(days=1)).date()
        session.execute(update(DeviceUsage).where(DeviceUsage.device_id == dev.id).values(day=yesterday))
    assert put(client, dev, rec, 1).status_code == 201
    with services(client).sessions() as session:
        days = session.execute(
            select(DeviceUsage.day, DeviceUsage.uploaded_bytes, DeviceUsage.uploads)
            .where(DeviceUsage.device_id == dev.id)
            .order_by(DeviceUsage.day)
        ).all()
    assert [(b, n) for _, b, n in days] == [
        (header_size(rec) + len(rec.segments[0].envelope), 2),
        (len(rec.segments[1].envelope), 1),
    ]


def test_a_segment_is_charged_only_once_it_verifies(client: TestClient, world: World) -> None:
    dev = world.device
    rec = recording(dev, 1)
    assert open_rec(client, dev, rec).status_code == 201
    charged = used_today(client, dev)
    seg = rec.segments[0]
    forged = client.put(
        f"/v1/recordings/{rec.id}/segments/0",
        content=seg.envelope[:-1] + bytes([seg.envelope[-1] ^ 1]),
        headers=dev.segment_headers(seg),
    )
    assert forged.status_code == 422, forged.text
    assert used_today(client, dev) == charged
    assert put(client, dev, rec, 0).status_code == 201
    assert used_today(client, dev) == charged + len(seg.envelope)


# --------------------------------------------------------------------------- header size


def test_header_size_is_limited_before_any_verification(client: TestClient, world: World) -> None:
    dev = world.device
    rec = recording(dev)
    size = header_size(rec)
    services(client).settings.max_header_bytes = size - 1
    before = state(client)
    refused = open_rec(client, dev, rec)
    assert refused.status_code == 413, refused.text
    assert refused.json()["detail"] == f"recording header is {size} bytes; at most {size - 1} are accepted"
    assert_refused_once(client, dev, before, "header_bytes", 413)

    services(client).settings.max_header_bytes = size  # exactly at the limit
    assert open_rec(client, dev, rec).status_code == 201

    # A big header with a field the parser would refuse and a signature that does not verify:
    # the size is checked first, so the answer is 413, not 422, and nothing else runs.
    services(client).settings.max_header_bytes = 16 * 1024
    big = recording(dev)
    big.header = {**big.header, "padding": "x" * 20_000}
    again = state(client)
    reply = open_rec(client, dev, big)
    assert reply.status_code == 413, reply.text
    assert_nothing_stored(client, again)  # already logged today for this quota


def test_header_limit_counts_the_signed_json(client: TestClient, world: World) -> None:
    """The limit is on the canonical JSON the device signs, however the request spells it."""
    dev = world.device
    rec = recording(dev)
    services(client).settings.max_header_bytes = header_size(rec)
    body = rec.create_body()
    spaced = '{"header": ' + _spaced(body["header"]) + f', "header_signature": "{body["header_signature"]}", '
    spaced += '"sealed_keys": ' + _spaced(body["sealed_keys"]) + "}"
    assert len(spaced) > header_size(rec)
    reply = client.post(
        "/v1/recordings", content=spaced.encode(), headers={**dev.auth, "Content-Type": "application/json"}
    )
    assert reply.status_code == 201, reply.text


def _spaced(value: Any) -> str:
    return json.dumps(value, indent=4)


def test_unknown_recording_ids_are_unaffected_by_quotas(client: TestClient, world: World) -> None:
    """A segment for a recording that does not exist is a 404 (nothing charged), quota or not."""
    dev = world.device
    rec = recording(dev, 1)
    services(client).settings.device_bytes_per_day = 1
    seg = rec.segments[0]
    reply = client.put(
        f"/v1/recordings/{uuid.uuid4()}/segments/0", content=seg.envelope, headers=dev.segment_headers(seg)
    )
    assert reply.status_code == 404
    assert used_today(client, dev) == 0


def test_the_same_opening_racing_itself_is_created_once(client: TestClient, world: World) -> None:
    """A device that retries an opening still queued (its first try timed out): one 201, the rest
    200 for the same recording, never a 500, and one recording with one creation in the log."""
    dev = world.device
    rec = recording(dev)
    answers: list[int] = []
    lock = threading.Lock()

    def attempt() -> None:
        status = open_rec(client, dev, rec).status_code
        with lock:
            answers.append(status)

    threads = [threading.Thread(target=attempt) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(answers) == [200] * 5 + [201]
    with services(client).sessions() as session:
        assert session.scalar(select(func.count()).select_from(Recording).where(Recording.id == str(rec.id))) == 1
        created = session.scalar(
            select(func.count()).select_from(AccessLog).where(AccessLog.target == f"recording:{rec.id}")
        )
    assert created == 1
