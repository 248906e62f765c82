"""A group-commit batch's rows in one INSERT per table (api.core.batch_rows), stored exactly as one by one.

The writer is held busy (as in test_group_commit) so that uploads queue behind it and are
committed as one batch: the batching is forced, not hoped for.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Any, cast

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Table, insert, select, text
from sqlalchemy.orm import Session

from api.core.audit import SIGNER_KEY, last_own_entry
from api.core.batch_rows import DEFER_INSERTS, insert_row, write_pending
from api.core.db import StatementCounter
from api.core.group_commit import GroupCommitter
from api.core.models import AccessLog, Recording, Segment
from api.core.services import Services
from tests.api.test_group_commit import held_writer
from tests.conftest import World
from tests.support.factories import SimRecording

ENTRIES = cast(Table, AccessLog.__table__)
COLUMNS = [c.name for c in ENTRIES.c if c.name != "seq"]


def services(app: FastAPI) -> Services:
    found: Services = app.state.services
    return found


def entry(seq: int) -> dict[str, Any]:
    """An entry with a value of every kind the table holds: a microsecond timestamp, JSON, NULLs, bytes."""
    return {
        "seq": seq,
        "at": datetime(2026, 12, 4, 9, 30, 1, 123456, tzinfo=UTC),
        "actor": "test:batch-rows",
        "action": "api:test:row",
        "target": None,
        "outcome": "allowed",
        "purpose": "窓口 — a purpose with 'quotes' and %s",
        "detail": {"nested": {"n": [1, 2.5, None, True]}, "text": "日本語", "empty": {}},
        "entry_hash": bytes(range(32)),
        "chain_hash": b"\x00" * 32,
        "seal": b"",
    }


def raw(session: Session, seq: int) -> tuple[Any, ...]:
    """The row as the database holds it, read past SQLAlchemy's result processing."""
    names = ", ".join(f'"{name}"' for name in COLUMNS)
    row = session.connection().exec_driver_sql(f"SELECT {names} FROM access_log WHERE seq = {seq}").one()
    return tuple(bytes(v) if isinstance(v, memoryview) else v for v in row)


def test_a_deferred_row_is_stored_exactly_as_an_insert_stores_it(app: FastAPI) -> None:
    with services(app).sessions() as session:
        session.connection().execute(insert(ENTRIES), entry(10**12))
        session.info[DEFER_INSERTS] = True
        for seq in (10**12 + 1, 10**12 + 2):
            insert_row(session, ENTRIES, entry(seq))
        assert session.scalar(select(AccessLog.seq).where(AccessLog.seq == 10**12 + 1)) is None  # not yet
        write_pending(session)
        assert raw(session, 10**12 + 1) == raw(session, 10**12) == raw(session, 10**12 + 2)
        stored = session.scalars(select(AccessLog).where(AccessLog.seq > 10**12)).all()
        assert [{c: getattr(e, c) for c in COLUMNS} for e in stored] == [
            {c: v for c, v in entry(0).items() if c != "seq"}
        ] * 2
        session.rollback()  # entries outside the chain: not to be left in the log


def test_a_rollback_drops_the_deferred_rows_and_a_flush_does_not(app: FastAPI) -> None:
    with services(app).sessions() as session:
        session.info[DEFER_INSERTS] = True
        insert_row(session, ENTRIES, entry(10**12 + 5))
        session.rollback()
        insert_row(session, ENTRIES, entry(10**12 + 6))
        session.flush()  # a subtransaction's end: the row stays pending
        write_pending(session)
        seqs = list(session.scalars(select(AccessLog.seq).where(AccessLog.seq > 10**12)))
        session.rollback()
    assert seqs == [10**12 + 6]


def open_recordings(client: TestClient, world: World, count: int) -> list[SimRecording]:
    recordings = []
    for _ in range(count):
        rec = world.device.new_recording()
        assert client.post("/v1/recordings", json=rec.create_body(), headers=world.device.auth).status_code == 201
        world.device.add_segments(rec, 2, final=False)
        recordings.append(rec)
    return recordings


def upload_queued(
    app: FastAPI, committer: GroupCommitter, world: World, recordings: list[SimRecording], index: int
) -> tuple[dict[str, int], list[threading.Thread]]:
    """Start one upload per recording and return once all of them wait for the (held) writer."""
    answers: dict[str, int] = {}

    def upload(rec: SimRecording) -> None:
        seg = rec.segments[index]
        with TestClient(app) as own:
            reply = own.put(f"/v1/recordings/{rec.id}/segments/{index}", content=seg.envelope,
                            headers=world.device.segment_headers(seg))  # fmt: skip
        answers[str(rec.id)] = reply.status_code

    threads = [threading.Thread(target=upload, args=(rec,)) for rec in recordings]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while committer.queued() < len(recordings):
        assert time.monotonic() < deadline, "the uploads never reached the writer"
        time.sleep(0.01)
    return answers, threads


def stored_segments(svc: Services, recordings: list[SimRecording]) -> dict[str, list[tuple[int, str]]]:
    with svc.sessions() as session:
        return {
            str(rec.id): [
                (s.index, s.signature.hex())
                for s in session.scalars(
                    select(Segment).where(Segment.recording_id == str(rec.id)).order_by(Segment.index)
                )
            ]
            for rec in recordings
        }


def test_uploads_in_one_batch_insert_their_segments_and_entries_in_one_statement_each(
    app: FastAPI, client: TestClient, world: World
) -> None:
    svc = services(app)
    recordings = open_recordings(client, world, 4)
    committer = svc.writer()
    go, first = held_writer(committer)
    answers, threads = upload_queued(app, committer, world, recordings, 0)
    with StatementCounter(svc.engine) as counter:
        go.set()
        first.result(30)
        for t in threads:
            t.join(60)
    assert list(answers.values()) == [201] * 4
    inserts = [s for s in counter.statements if s.startswith("INSERT INTO")]
    assert [s.split()[2] for s in inserts] == ["access_log", "segments", "access_log"]  # the first job, the batch
    # Stored whole and in order, and the next segment of each (alone now) follows on from the batch.
    for rec in recordings:
        seg = rec.segments[1]
        reply = client.put(f"/v1/recordings/{rec.id}/segments/1", content=seg.envelope,
                           headers=world.device.segment_headers(seg))  # fmt: skip
        assert reply.status_code == 201
    assert stored_segments(svc, recordings) == {
        str(rec.id): [(s.index, s.headers["X-Signature"].lower()) for s in rec.segments] for rec in recordings
    }
    with svc.sessions() as session:
        counts = [session.get(Recording, str(rec.id)).segment_count for rec in recordings]  # type: ignore[union-attr]
        head = last_own_entry(session, session.info[SIGNER_KEY], 0)
        last = session.scalars(select(AccessLog).order_by(AccessLog.seq.desc()).limit(1)).one()
    assert counts == [2] * 4
    assert head == (last.seq, last.chain_hash)  # every entry, the batch's included, checks out


def test_a_planted_row_that_fails_the_batch_insert_fails_only_its_own_upload(
    app: FastAPI, client: TestClient, world: World
) -> None:
    """An insider writes a segment row behind the service's back while uploads wait for the writer.

    The batch's one INSERT of segments fails at its commit. Nothing of the batch is kept; each
    upload is then run again alone, so the others are stored and the one whose row was planted is
    refused (409), with the planted row left as it was and the audit chain without a gap.
    """
    svc = services(app)
    recordings = open_recordings(client, world, 3)
    victim = recordings[1]
    committer = svc.writer()
    go, first = held_writer(committer)
    answers, threads = upload_queued(app, committer, world, recordings, 0)
    with svc.engine.begin() as connection:
        connection.execute(
            insert(cast(Table, Segment.__table__)),
            {"recording_id": str(victim.id), "index": 0, "final": False, "ciphertext_sha256": b"\x01" * 32,
             "plaintext_sha256": b"\x01" * 32, "prev_hash": b"\x01" * 32, "signature": b"planted", "size": 1,
             "object_key": "planted", "received_at": datetime.now(UTC)},
        )  # fmt: skip
    go.set()
    first.result(30)
    for t in threads:
        t.join(60)
    assert answers == {str(r.id): 409 if r is victim else 201 for r in recordings}
    stored = stored_segments(svc, recordings)
    assert stored[str(victim.id)] == [(0, b"planted".hex())]
    assert all(
        stored[str(r.id)] == [(0, r.segments[0].headers["X-Signature"].lower())] for r in recordings if r is not victim
    )
    with svc.sessions() as session:
        seqs = list(session.scalars(select(AccessLog.seq).order_by(AccessLog.seq)))
        assert (
            session.execute(
                text("SELECT segment_count FROM recordings WHERE id = :id"), {"id": str(victim.id)}
            ).scalar()
            == 0
        )
        assert last_own_entry(session, session.info[SIGNER_KEY], 0) is not None
    assert seqs == list(range(1, len(seqs) + 1))
