"""Group commit (api.core.group_commit): batches share one commit, and one job's failure stays its own.

The writer is held busy by a first job that waits on an event, so the jobs submitted meanwhile
queue and are committed together: the batching is forced, not hoped for. Each job appends an
audit entry, so what was committed is read back from the log (one gap-free chain either way).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from api.core.audit import SIGNER_KEY, last_own_entry, record_committed, record_event
from api.core.db import StatementCounter
from api.core.group_commit import Committed, GroupCommitter, Refusal
from api.core.models import AccessLog, AuditHead, Recording, Segment, Site
from api.core.services import Services
from evidence import wire
from evidence.audit_actions import Action
from evidence.chain import header_hash
from tests.conftest import World
from tests.support.factories import SimRecording, tone


def services(app: FastAPI) -> Services:
    found: Services = app.state.services
    return found


def append(name: str) -> Callable[[Session], str]:
    def job(session: Session) -> str:
        record_event(session, actor=f"test:{name}", action=Action.ACCESS_DENIED, target=name, outcome="denied")
        return name

    return job


def logged(svc: Services) -> list[str]:
    with svc.sessions() as session:
        return list(
            session.scalars(select(AccessLog.actor).where(AccessLog.actor.like("test:%")).order_by(AccessLog.seq))
        )


def held_writer(committer: GroupCommitter) -> tuple[threading.Event, Future[Committed[str]]]:
    """Occupy the writer with a first job until the returned event is set."""
    go, started = threading.Event(), threading.Event()

    def first(session: Session) -> str:
        started.set()
        assert go.wait(30)
        return str(append("first")(session))

    future = committer.submit(first)
    assert started.wait(30)
    return go, future


def test_jobs_that_arrive_during_a_commit_share_the_next_one(app: FastAPI) -> None:
    svc = services(app)
    committer = GroupCommitter(svc.sessions)
    go, first = held_writer(committer)
    rest = [committer.submit(append(f"job{n}")) for n in range(10)]
    go.set()
    assert first.result(30).value == "first"
    assert [f.result(30).value for f in rest] == [f"job{n}" for n in range(10)]
    assert (committer.batches, committer.jobs) == (2, 11)  # the first alone, the ten queued together
    assert logged(svc) == ["test:first"] + [f"test:job{n}" for n in range(10)]


def test_a_batch_moves_the_audit_head_once_and_leaves_one_chain(app: FastAPI) -> None:
    """Appends after a batch's first number and chain from the last one, and the head is settled once.

    The log is then exactly what one append after another would have written: every entry checks
    out against its predecessor and seal, the head names the last entry, and the next ordinary
    append (outside any batch) links to it.
    """
    svc = services(app)
    committer = GroupCommitter(svc.sessions)
    go, first = held_writer(committer)
    rest = [committer.submit(append(f"job{n}")) for n in range(10)]
    with StatementCounter(svc.engine) as counter:
        go.set()
        first.result(30)
        assert [f.result(30).value for f in rest] == [f"job{n}" for n in range(10)]
    assert committer.batches == 2
    head_statements = [s.split()[0] for s in counter.statements if "audit_head" in s and not s.startswith("SELECT")]
    entry_inserts = [s for s in counter.statements if s.startswith("INSERT INTO access_log")]
    # The first job alone (a bump and a move), then the ten queued behind it: one bump and one
    # settle for all of them (one append at a time would have been 2 + 20).
    assert head_statements == ["UPDATE"] * 4
    # The entries too: one INSERT for the first job, one of ten rows for the batch (api.core.batch_rows).
    assert len(entry_inserts) == 2
    record_committed(svc.sessions, actor="test:after", action=Action.ACCESS_DENIED, outcome="denied")
    with svc.sessions() as session:
        head = session.get(AuditHead, 1)
        last = session.scalars(select(AccessLog).order_by(AccessLog.seq.desc()).limit(1)).one()
        checked = last_own_entry(session, session.info[SIGNER_KEY], 0)
    assert head is not None and (head.seq, head.chain_hash) == (last.seq, last.chain_hash)
    assert checked == (last.seq, last.chain_hash)  # every entry, the batch's and the one after, checks out
    assert logged(svc) == ["test:first"] + [f"test:job{n}" for n in range(10)] + ["test:after"]


def test_a_batch_of_jobs_that_flush_orm_writes_between_appends_keeps_one_chain(app: FastAPI) -> None:
    """As openings do: an ORM row flushed before each append (a flush is a subtransaction of its own).

    Found by the soak: ending a flush's subtransaction was taken for the end of the batch's, so the
    next append bumped the head again and reused a sequence number (UNIQUE access_log.seq), and
    every such batch failed and ran again job by job.
    """
    svc = services(app)
    committer = GroupCommitter(svc.sessions)

    def with_a_row(name: str) -> Callable[[Session], str]:
        def job(session: Session) -> str:
            session.add(Site(id=f"site-{name}", name=name))  # flushed by the append's autoflush
            return append(name)(session)

        return job

    go, first = held_writer(committer)
    rest = [committer.submit(with_a_row(f"job{n}")) for n in range(5)]
    go.set()
    first.result(30)
    assert [f.result(30).value for f in rest] == [f"job{n}" for n in range(5)]
    assert (committer.batches, committer.jobs) == (2, 6)  # one batch for the five, none run again alone
    with svc.sessions() as session:
        head = session.get(AuditHead, 1)
        last = session.scalars(select(AccessLog).order_by(AccessLog.seq.desc()).limit(1)).one()
        assert last_own_entry(session, session.info[SIGNER_KEY], 0) == (last.seq, last.chain_hash)
        assert session.scalar(select(func.count()).select_from(Site).where(Site.id.like("site-job%"))) == 5
    assert head is not None and (head.seq, head.chain_hash) == (last.seq, last.chain_hash)


def test_a_refusal_leaves_the_rest_of_its_batch_committed(app: FastAPI) -> None:
    svc = services(app)
    committer = GroupCommitter(svc.sessions)

    def refused(session: Session) -> str:
        raise Refusal(ValueError("nothing written"))

    go, first = held_writer(committer)
    futures = [committer.submit(append("a")), committer.submit(refused), committer.submit(append("b"))]
    go.set()
    first.result(30)
    assert futures[0].result(30).value == "a" and futures[2].result(30).value == "b"
    with pytest.raises(ValueError, match="nothing written"):
        futures[1].result(30)
    assert committer.batches == 2  # the refusal did not break up its batch
    assert logged(svc) == ["test:first", "test:a", "test:b"]


def test_a_job_failing_after_its_writes_undoes_only_itself(app: FastAPI) -> None:
    """Its writes are rolled back with the batch; every other job of the batch is committed alone."""
    svc = services(app)
    committer = GroupCommitter(svc.sessions)

    def fails_after_writing(session: Session) -> str:
        append("broken")(session)
        raise RuntimeError("disk full, say")

    go, first = held_writer(committer)
    futures = [committer.submit(append("a")), committer.submit(fails_after_writing), committer.submit(append("b"))]
    go.set()
    first.result(30)
    assert futures[0].result(30).value == "a" and futures[2].result(30).value == "b"
    with pytest.raises(RuntimeError, match="disk full"):
        futures[1].result(30)
    assert logged(svc) == ["test:first", "test:a", "test:b"]  # nothing of the broken job, no gap in seq
    with svc.sessions() as session:
        seqs = list(session.scalars(select(AccessLog.seq).order_by(AccessLog.seq)))
    assert seqs == list(range(1, len(seqs) + 1))


def test_the_deferred_checkpoint_goes_to_one_caller(app: FastAPI) -> None:
    """A checkpoint that falls due in a batch is handed to its first job only (signed once, after)."""
    svc = services(app)
    committer = GroupCommitter(svc.sessions)
    go, first = held_writer(committer)
    rest = [committer.submit(append(f"job{n}")) for n in range(3)]
    go.set()
    first.result(30)
    handed = [len(f.result(30).deferred) for f in rest]
    assert handed[1:] == [0, 0]


def test_a_caller_that_gave_up_before_its_turn_writes_nothing_and_breaks_nothing(app: FastAPI) -> None:
    svc = services(app)
    committer = GroupCommitter(svc.sessions)
    go, first = held_writer(committer)
    futures = [committer.submit(append(name)) for name in ("a", "gone", "b")]
    assert futures[1].cancel()  # queued, not started: cancellable
    go.set()
    first.result(30)
    assert futures[0].result(30).value == "a" and futures[2].result(30).value == "b"
    assert futures[1].cancelled()
    assert logged(svc) == ["test:first", "test:a", "test:b"]


def racing_copies(world: World, rec: SimRecording) -> list[tuple[bytes, dict[str, str]]]:
    """Two different, validly signed segment 0s for one recording: the device's own key signs both."""
    copies = []
    for seed in (1, 2):
        other = world.device.make_segment(rec, 0, False, tone(1.0, seed=seed), header_hash(rec.header))
        copies.append((other.envelope, world.device.segment_headers(other)))
    return copies


def test_racing_uploads_of_one_index_store_one_of_them(app: FastAPI, client: TestClient, world: World) -> None:
    """A device (or a thief of its key) races two different segment 0s: one is stored, whole, the other refused."""
    rec = world.device.new_recording()
    assert client.post("/v1/recordings", json=rec.create_body(), headers=world.device.auth).status_code == 201
    copies = racing_copies(world, rec)
    answers: list[int] = []
    go = threading.Barrier(len(copies) * 3)

    def upload(envelope: bytes, headers: dict[str, str]) -> None:
        with TestClient(app) as own:
            go.wait()
            reply = own.put(f"/v1/recordings/{rec.id}/segments/0", content=envelope, headers=headers)
            answers.append(reply.status_code)

    threads = [threading.Thread(target=upload, args=copy) for copy in copies for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert answers.count(201) == 1, answers
    assert set(answers) <= {200, 201, 409}, answers  # the winner's twins are repeats (200), the loser's 409
    svc = services(app)
    with svc.sessions() as session:
        stored = session.scalars(select(Segment).where(Segment.recording_id == str(rec.id))).all()
        recording = session.get(Recording, str(rec.id))
        assert recording is not None
        assert len(stored) == 1 and recording.segment_count == 1
        winner = [c for c in copies if c[1][wire.SIGNATURE] == stored[0].signature.hex()]
    assert len(winner) == 1
    assert svc.store.get(stored[0].object_key) == winner[0][0]
