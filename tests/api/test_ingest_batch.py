"""A batch's chain moves and quota charges made together at its commit (api.ingest_batch), all or nothing.

The writer is held busy (tests/api/test_group_commit.held_writer) so that the uploads queue
behind it and are committed as one batch. On PostgreSQL the same uploads are written one
statement at a time; the answers, and what is stored, must be the same on both.
"""

from __future__ import annotations

import logging
from datetime import date

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import delete, func, select, update

from api.core.audit import SIGNER_KEY, last_own_entry
from api.core.batch_rows import DEFER_INSERTS, Shortfall
from api.core.models import AccessLog, DeviceUsage, Recording, Segment
from api.ingest_batch import Charge, batching, defer_charge
from tests.api.test_batch_rows import open_recordings, services, stored_segments, upload_queued
from tests.api.test_group_commit import held_writer
from tests.conftest import World
from tests.support.backends import POSTGRES_S3
from tests.support.factories import SimRecording


def used_today(app: FastAPI, device_id: str) -> int:
    with services(app).sessions() as session:
        return session.scalar(select(DeviceUsage.uploaded_bytes).where(DeviceUsage.device_id == device_id)) or 0


def run_batch(app: FastAPI, world: World, recordings: list[SimRecording], index: int, meddle: object = None) -> dict:
    """Upload segment `index` of each recording as one batch; `meddle()` runs while they wait."""
    committer = services(app).writer()
    go, first = held_writer(committer)
    answers, threads = upload_queued(app, committer, world, recordings, index)
    if callable(meddle):
        meddle()
    go.set()
    first.result(30)
    for t in threads:
        t.join(60)
    return {rec_id: status for rec_id, status in answers.items()}


def assert_fell_short(caplog: pytest.LogCaptureFixture, why: str) -> None:
    """On SQLite the batch's statement refused it as a whole (and the jobs then ran alone)."""
    if not POSTGRES_S3:
        assert any("fell short" in r.message and why in r.message for r in caplog.records), caplog.text


def assert_chain_whole(app: FastAPI) -> None:
    with services(app).sessions() as session:
        seqs = list(session.scalars(select(AccessLog.seq).order_by(AccessLog.seq)))
        last = session.scalars(select(AccessLog).order_by(AccessLog.seq.desc()).limit(1)).one()
        assert last_own_entry(session, session.info[SIGNER_KEY], 0) == (last.seq, last.chain_hash)
    assert seqs == list(range(1, len(seqs) + 1))


def test_a_chain_moved_while_queued_fails_only_its_own_upload(
    app: FastAPI, client: TestClient, world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """Hostile: an insider with the database interrupts a recording while its upload waits for the writer.

    The batch's one compare-and-set then moves one chain fewer than it has segments: nothing of
    the batch is kept, each upload runs again alone, and only the victim's is refused (409),
    uncharged, with no segment row; the others are stored and charged, and the chain is whole.
    """
    recordings = open_recordings(client, world, 3)
    victim = recordings[2]
    used = used_today(app, world.device.id)

    def interrupt_behind_the_service() -> None:
        with services(app).engine.begin() as connection:
            connection.execute(update(Recording).where(Recording.id == str(victim.id)).values(status="interrupted"))

    with caplog.at_level(logging.INFO, "api.core.group_commit"):
        answers = run_batch(app, world, recordings, 0, interrupt_behind_the_service)
    assert_fell_short(caplog, "1 of 3 chain moves")
    assert answers == {str(r.id): 409 if r is victim else 201 for r in recordings}
    stored = stored_segments(services(app), recordings)
    assert stored[str(victim.id)] == []
    assert all(len(stored[str(r.id)]) == 1 for r in recordings if r is not victim)
    charged = sum(len(r.segments[0].envelope) for r in recordings if r is not victim)
    assert used_today(app, world.device.id) == used + charged
    with services(app).sessions() as session:
        victim_row = session.get(Recording, str(victim.id))
        assert victim_row is not None and (victim_row.status, victim_row.segment_count) == ("interrupted", 0)
    assert_chain_whole(app)


def test_a_batch_over_the_quota_together_is_charged_one_upload_at_a_time(
    app: FastAPI, client: TestClient, world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """Three uploads that each fit today's quota but not together: two are stored, one gets 429.

    Each alone passes the quota's first look (the bytes sent so far); the batch's one charge
    would exceed it, so it is refused as a whole and the uploads are charged one at a time.
    """
    recordings = open_recordings(client, world, 3)
    used = used_today(app, world.device.id)
    sizes = {str(r.id): len(r.segments[0].envelope) for r in recordings}
    services(app).settings.device_bytes_per_day = used + sum(sizes.values()) - 1
    with caplog.at_level(logging.INFO, "api.core.group_commit"):
        answers = run_batch(app, world, recordings, 0)
    assert_fell_short(caplog, "charges exceed today's quota")
    assert sorted(answers.values()) == [201, 201, 429]
    kept = [rid for rid, status in answers.items() if status == 201]
    assert used_today(app, world.device.id) == used + sum(sizes[rid] for rid in kept)
    stored = stored_segments(services(app), recordings)
    assert sorted(rid for rid, segments in stored.items() if segments) == sorted(kept)
    with services(app).sessions() as session:
        counts = {r.id: r.segment_count for r in session.scalars(select(Recording))}
    assert {rid: counts[rid] for rid in answers} == {rid: 1 if rid in kept else 0 for rid in answers}
    assert_chain_whole(app)


def test_a_final_segment_in_a_batch_completes_its_recording_as_one_alone_does(
    app: FastAPI, client: TestClient, world: World
) -> None:
    """The batch's UPDATE binds each value as the column would: status, end time and head as stored alone."""
    batched = open_recordings(client, world, 2)
    for rec in batched:
        world.device.add_segments(rec, 1, final=True)
    assert set(run_batch(app, world, batched, 0).values()) == {201}
    assert set(run_batch(app, world, batched, 1).values()) == {201}
    assert set(run_batch(app, world, batched, 2).values()) == {201}
    alone = open_recordings(client, world, 1)[0]
    world.device.add_segments(alone, 1, final=True)
    for index in range(3):
        seg = alone.segments[index]
        reply = client.put(f"/v1/recordings/{alone.id}/segments/{index}", content=seg.envelope,
                           headers=world.device.segment_headers(seg))  # fmt: skip
        assert reply.status_code == 201
    columns = "status, segment_count, head_hash, typeof(ended_at), length(ended_at), typeof(last_activity_at)"
    if POSTGRES_S3:
        columns = "status, segment_count, head_hash, ended_at IS NOT NULL, true, true"
    with services(app).engine.connect() as connection:
        rows = {
            rid: tuple(connection.exec_driver_sql(f"SELECT {columns} FROM recordings WHERE id = '{rid}'").one())
            for rid in [str(r.id) for r in [*batched, alone]]
        }
        segments = connection.execute(select(func.count()).select_from(Segment)).scalar()
    assert segments == 9
    heads = {str(r.id): bytes.fromhex(r.segments[-1].headers["X-Link"]) for r in [*batched, alone]}
    for rid, row in rows.items():
        assert row[:3] == ("complete", 3, heads[rid])
        assert row[3:] == rows[str(alone.id)][3:]  # stored in the same form as the one written alone
    with services(app).sessions() as session:
        ended = [session.get(Recording, str(r.id)).ended_at for r in batched]  # type: ignore[union-attr]
    assert all(e is not None and e.tzinfo is not None for e in ended)
    assert_chain_whole(app)


@pytest.mark.skipif(POSTGRES_S3, reason="the batched statements are SQLite's (api.ingest_batch)")
def test_the_batch_charge_makes_a_days_first_row_and_adds_to_others(app: FastAPI, world: World) -> None:
    svc = services(app)
    mine, theirs = world.device.id, world.other_device.id
    day = date(2026, 12, 4)
    with svc.sessions() as session, session.begin():
        session.execute(delete(DeviceUsage))
        session.add(DeviceUsage(device_id=mine, day=day, uploaded_bytes=100, uploads=1))
    with svc.sessions() as session:
        session.info[DEFER_INSERTS] = True
        assert batching(session)
        for device, size in ((mine, 10), (theirs, 7), (mine, 5)):
            defer_charge(session, Charge(device, day, size, 1000))
        assert session.scalar(select(DeviceUsage.uploaded_bytes).where(DeviceUsage.device_id == mine)) == 100
        session.commit()
    with svc.sessions() as session:
        rows = session.execute(select(DeviceUsage.device_id, DeviceUsage.uploaded_bytes, DeviceUsage.uploads)).all()
    assert sorted(tuple(r) for r in rows) == sorted([(mine, 115, 3), (theirs, 7, 1)])

    # Over the limit, nothing is charged: an existing row's sum (mine, theirs) or a new row alone
    # (a later day's); the other device's charge in the same batch is rolled back with it.
    later = date(2026, 12, 5)
    for device, on_day, size in ((mine, day, 886), (theirs, day, 994), (theirs, later, 1001)):
        with svc.sessions() as session:
            session.info[DEFER_INSERTS] = True
            defer_charge(session, Charge(device, on_day, size, 1000))
            defer_charge(session, Charge(mine if device == theirs else theirs, later, 1, 1000))
            with pytest.raises(Shortfall):
                session.commit()
    with svc.sessions() as session:
        session.info[DEFER_INSERTS] = True
        defer_charge(session, Charge(mine, day, 885, 1000))  # exactly at the limit: charged
        session.commit()
    with svc.sessions() as session:
        after = session.execute(select(DeviceUsage.device_id, DeviceUsage.day, DeviceUsage.uploaded_bytes)).all()
    assert sorted(tuple(r) for r in after) == sorted([(mine, day, 1000), (theirs, day, 7)])
