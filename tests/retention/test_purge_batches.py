"""The purge in batches: a page of recordings is shredded in one transaction, their objects deleted,
then finalised in one transaction, with one batched audit append each time.

What batching must not change: a failure or a crash between the shred commit and the finalise
leaves exactly the affected recordings "shredding" and the next run finishes them, with no second
tombstone or audit entry; two jobs working on the same page purge each recording exactly once; a
held recording inside a batch is skipped (also when the hold arrives after the page was read); the
audit log stays one gap-free, verifiable chain.
"""

from __future__ import annotations

import errno
import threading
import uuid
from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, func, select

import retention.purge
from api.core.audit import SIGNER_KEY, last_own_entry, record_events
from api.core.models import AccessLog, AuditHead, Recording
from api.core.services import Services
from api.core.settings import Settings
from api.core.storage.filesystem import FilesystemStore
from api.core.storage.interface import segment_key
from evidence.audit_actions import Action
from retention import job
from retention.models import Hold, HoldRecording, Tombstone
from tests.conftest import World, bearer, countersign
from tests.support.retention_support import age, assert_intact, assert_purged_once, remains, services_of, upload


class SimulatedCrash(BaseException):
    """Raised inside the store: unwinds like kill -9 would, committing nothing still open."""


def _due(client: TestClient, world: World, n: int, segments: int = 2) -> list[str]:
    svc = services_of(client)
    ids = [upload(client, world.device, segments) for _ in range(n)]
    for rid in ids:
        age(svc, rid, 31)
    return sorted(ids)


def _hold_api(client: TestClient, world: World, case: str, recordings: list[str]) -> None:
    body = {"case_ref": case, "reason": "litigation hold for this case", "recordings": recordings}
    reply = client.post("/v1/holds", json=body, headers=bearer(world.officer))
    assert reply.status_code == 201, reply.text


def assert_chain_whole(svc: Services) -> None:
    """Every entry is in the chain, linked and sealed by this service, with no gap up to the head."""
    with svc.sessions() as session:
        head = session.scalar(select(AuditHead.seq))
        count = session.scalar(select(func.count()).select_from(AccessLog))
        last = last_own_entry(session, session.info[SIGNER_KEY], 0)
    assert last is not None and last[0] == head == count, (last, head, count)


def _fail_for(svc: Services, monkeypatch: pytest.MonkeyPatch, victim: str, error: BaseException) -> None:
    """The store fails to delete one recording's objects; every other delete goes through."""
    real = svc.store.delete

    def delete(key: str) -> None:
        if key.startswith(f"recordings/{victim}/"):
            raise error
        real(key)

    monkeypatch.setattr(svc.store, "delete", delete)


# --------------------------------------------------------------------------- the batched audit append


def test_batched_append_is_one_gap_free_chain(client: TestClient) -> None:
    svc = services_of(client)
    with svc.sessions() as session, session.begin():
        before = session.scalar(select(AuditHead.seq)) or 0
        events: list[dict[str, Any]] = [
            {"actor": "system:test", "action": Action.RETENTION_RUN, "target": f"t:{i}", "detail": {"i": i}}
            for i in range(7)
        ]
        seqs = record_events(session, events)
        assert record_events(session, []) == []
    assert seqs == list(range(before + 1, before + 8))
    with svc.sessions() as session:
        rows = session.scalars(select(AccessLog).where(AccessLog.seq.in_(seqs)).order_by(AccessLog.seq)).all()
    assert [(r.target, r.detail, r.outcome, r.purpose) for r in rows] == [
        (f"t:{i}", {"i": i}, "allowed", None) for i in range(7)
    ]
    assert_chain_whole(svc)


# --------------------------------------------------------------------------- between the shred commit and the finalise


@pytest.mark.parametrize("how", ["error", "crash"])
def test_failure_after_the_shred_commit_leaves_it_shredding_and_a_rerun_finishes_once(
    client: TestClient, world: World, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """The store fails (an error) or the process dies (a crash) deleting the objects of one recording
    of a batch: its keys are already shredded (committed), so it stays "shredding"; the next run
    finishes it, and nothing is written twice."""
    svc = services_of(client)
    ids = _due(client, world, 5)
    young = upload(client, world.device, 2)
    victim = ids[2]
    if how == "error":
        _fail_for(svc, monkeypatch, victim, OSError(errno.EIO, "Input/output error"))
        summary = job.run(svc)
        assert sorted(summary.purged) == [rid for rid in ids if rid != victim]
        assert list(summary.errors) == [victim] and "Input/output error" in summary.errors[victim]
        finished = [rid for rid in ids if rid != victim]
    else:
        _fail_for(svc, monkeypatch, victim, SimulatedCrash("killed while deleting objects"))
        with pytest.raises(SimulatedCrash):
            job.run(svc)
        finished = []  # the batch never reached its finalise
    for rid in finished:
        assert_purged_once(svc, rid)
    for rid in set(ids) - set(finished):
        r = remains(svc, rid)
        assert (r.purge_state, r.sealed_keys, r.shred_entries, r.purge_entries) == ("shredding", 0, 1, 0), r
        assert r.tombstone is not None and r.tombstone.purged_at is None
    assert len(remains(svc, victim).objects) == 2  # not deleted, but unreadable: its keys are gone
    assert_intact(svc, young, 2)

    monkeypatch.undo()
    again = job.run(svc)
    assert again.ok and sorted(again.purged) == sorted(set(ids) - set(finished))
    assert again.resumed == len(ids) - len(finished)
    for rid in ids:
        assert_purged_once(svc, rid)  # one tombstone (its primary key), one shred and one purge entry
    assert_intact(svc, young, 2)
    with svc.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Tombstone)) == len(ids)
    assert_chain_whole(svc)


# --------------------------------------------------------------------------- two jobs at once


def test_two_jobs_in_threads_on_one_page_purge_each_recording_once(client: TestClient, world: World) -> None:
    """Both jobs read the same page before either claims anything (they meet at a barrier just before
    the shred), then race for it: the compare-and-set claims give each recording to exactly one."""
    svc = services_of(client)
    ids = _due(client, world, 12, segments=1)
    held = upload(client, world.device, 1)
    age(svc, held, 31)
    _hold_api(client, world, "CASE-THREADS", [held])
    barrier = threading.Barrier(2, timeout=60)
    met: set[int] = set()
    real_check = retention.purge.store_check

    def store_check(*args: Any, **kwargs: Any) -> dict[str, str]:
        me = threading.get_ident()
        if me not in met:  # each job's first batch: wait until the other holds the same page
            met.add(me)
            barrier.wait()
        return real_check(*args, **kwargs)

    summaries: list[job.RunSummary] = []
    failures: list[BaseException] = []

    def one_job() -> None:
        try:
            summaries.append(job.run(svc))
        except BaseException as exc:
            failures.append(exc)

    retention.purge.store_check = store_check  # type: ignore[assignment]
    try:
        threads = [threading.Thread(target=one_job) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
    finally:
        retention.purge.store_check = real_check
    assert not failures, failures
    assert len(summaries) == 2 and all(s.ok for s in summaries), [s.errors for s in summaries]
    purged = [rid for s in summaries for rid in s.purged]
    assert sorted(purged) == ids  # each by exactly one of the two jobs
    for rid in ids:
        assert_purged_once(svc, rid)
    assert_intact(svc, held, 1)
    # Kept by whichever decided it (on PostgreSQL the other skips the rows the first has locked).
    assert any(held in s.kept_by_hold for s in summaries)
    assert_chain_whole(svc)


# --------------------------------------------------------------------------- holds inside a batch


def test_a_held_recording_inside_a_batch_is_skipped(client: TestClient, world: World) -> None:
    svc = services_of(client)
    ids = _due(client, world, 6)
    held = ids[3]
    _hold_api(client, world, "CASE-IN-BATCH", [held])
    summary = job.run(svc)
    assert sorted(summary.purged) == [rid for rid in ids if rid != held] and summary.ok
    assert summary.kept_by_hold == {held: ("CASE-IN-BATCH",)}
    for rid in ids:
        if rid != held:
            assert_purged_once(svc, rid)
    assert_intact(svc, held, 2)
    assert_chain_whole(svc)


def test_a_hold_placed_after_the_page_was_read_is_seen_under_the_lock(
    client: TestClient, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hold commits after the job read its page and checked the store, before the shred: the
    decision made again under the write lock keeps that recording, and only it."""
    svc = services_of(client)
    ids = _due(client, world, 5)
    late = ids[1]
    with svc.sessions() as session:
        site = session.scalar(select(Recording.site_id).where(Recording.id == late))
    real_check: Callable[..., dict[str, str]] = retention.purge.store_check

    def check_then_hold(*args: Any, **kwargs: Any) -> dict[str, str]:
        refused = real_check(*args, **kwargs)
        with svc.sessions() as session, session.begin():
            session.add(
                Hold(
                    id=str(uuid.uuid4()),
                    case_ref="CASE-LATE",
                    reason="arrived mid-run",
                    site_id=site,
                    created_by="test",
                    recordings=[HoldRecording(recording_id=late)],
                )
            )
        monkeypatch.setattr(retention.purge, "store_check", real_check)  # once
        return refused

    monkeypatch.setattr(retention.purge, "store_check", check_then_hold)
    summary = job.run(svc)
    assert sorted(summary.purged) == [rid for rid in ids if rid != late] and summary.ok
    assert summary.kept_by_hold == {late: ("CASE-LATE",)}
    assert_intact(svc, late, 2)  # un-claimed in the same transaction: never seen "shredding"
    for rid in ids:
        if rid != late:
            assert_purged_once(svc, rid)
    assert_chain_whole(svc)


# --------------------------------------------------------------------------- what it costs


def test_statements_per_batch_do_not_grow_with_the_batch(client: TestClient, world: World) -> None:
    """Set-based: purging 12 recordings costs the same number of SQL statements as purging 3."""
    svc = services_of(client)

    def statements_to_purge(n: int) -> int:
        ids = _due(client, world, n, segments=1)
        count = [0]

        def counter(*_args: object) -> None:
            count[0] += 1

        event.listen(svc.engine, "before_cursor_execute", counter)
        try:
            summary = job.run(svc, audit=False)
        finally:
            event.remove(svc.engine, "before_cursor_execute", counter)
        assert sorted(summary.purged) == ids
        assert not any(svc.store.exists(segment_key(rid, 0)) for rid in ids)
        return count[0]

    small, large = statements_to_purge(3), statements_to_purge(12)
    assert large == small, (small, large)


# --------------------------------------------------------------------------- what the summary reports


def test_the_summary_names_the_next_due_date_and_status_counts_on_request(
    client: TestClient, world: World, settings: Settings
) -> None:
    """A run reports the earliest date still ahead (an index seek) instead of counting every row not
    yet due; `retention status --count` counts them."""
    svc = services_of(client)
    old, soon, later = (upload(client, world.device, 1) for _ in range(3))
    age(svc, old, 31)
    age(svc, soon, 25)
    age(svc, later, 2)
    with svc.sessions() as session:
        expected = session.scalar(select(Recording.retain_until).where(Recording.id == soon))
    assert expected is not None

    summary = job.run(svc, dry_run=True)
    assert [rid for rid, _ in summary.would_purge] == [old] and summary.kept_by_policy == 0
    assert summary.next_due == expected
    result = countersign("retention", "run", "--data", str(settings.data_dir), "--dry-run")
    assert f"next due {expected:%Y-%m-%d %H:%M} UTC" in result.stdout
    assert result.stdout.splitlines()[-1].startswith("dry run: would purge 1, kept by hold 0, kept by policy 0")

    status = countersign("retention", "status", "--data", str(settings.data_dir))
    tokyo = expected.astimezone(ZoneInfo("Asia/Tokyo"))
    assert f"next due {tokyo:%Y-%m-%d %H:%M} JST" in status.stdout and "not yet due" not in status.stdout
    in_utc = countersign("retention", "status", "--data", str(settings.data_dir), "--tz", "UTC").stdout
    assert f"next due {expected:%Y-%m-%d %H:%M} UTC" in in_utc
    counted = countersign("retention", "status", "--data", str(settings.data_dir), "--count")
    live = len({old, soon, later})
    assert f"not yet due {live - 1}, no deletion date 0" in counted.stdout, counted.stdout


# --------------------------------------------------------------------------- step 2 without threads


class _RecordingStore:
    """A store that notes which thread deleted what, and fails for one recording."""

    def __init__(self, delete_workers: int | None, victim: str) -> None:
        if delete_workers is not None:
            self.delete_workers = delete_workers
        self.victim, self.threads, self.deleted = victim, set[int](), list[str]()

    def delete(self, key: str) -> None:
        self.threads.add(threading.get_ident())
        if key.startswith(f"recordings/{self.victim}/"):
            raise OSError(errno.EIO, "Input/output error")
        self.deleted.append(key)


@pytest.mark.parametrize("workers", [1, None])
def test_delete_all_reports_each_recording_with_or_without_threads(workers: int | None) -> None:
    """A store asking for one delete at a time (the filesystem store) gets its deletes in the caller's
    thread, in order; one without the attribute gets threads. The outcome is the same either way."""
    ids = [str(uuid.UUID(int=i)) for i in range(1, 6)]
    store = _RecordingStore(workers, victim=ids[2])
    keys = {rid: [segment_key(rid, 0), segment_key(rid, 1)] for rid in ids}
    found = retention.purge.delete_all(store, keys)  # type: ignore[arg-type]
    assert [rid for rid, error in found.items() if error is None] == [ids[0], ids[1], ids[3], ids[4]]
    assert isinstance(found[ids[2]], OSError)
    assert sorted(store.deleted) == sorted(k for rid in ids if rid != ids[2] for k in keys[rid])
    if workers == 1:
        assert store.threads == {threading.get_ident()}
        assert store.deleted == [k for rid in ids if rid != ids[2] for k in keys[rid]]
    else:
        assert threading.get_ident() not in store.threads


def test_the_filesystem_store_deletes_in_the_callers_thread(client: TestClient) -> None:
    svc = services_of(client)
    if not isinstance(svc.store, FilesystemStore):
        pytest.skip("a filesystem store property")
    assert svc.store.delete_workers == 1


def test_a_claim_is_won_once(client: TestClient, world: World) -> None:
    """The compare-and-set: a second claim of the same recordings, from the same state, wins nothing."""
    ids = _due(client, world, 3, segments=1)
    svc = services_of(client)
    with svc.sessions() as session, session.begin():
        assert retention.purge.claim(session, ids, None, "shredding") == ids
        assert retention.purge.claim(session, ids, None, "shredding") == []
        assert retention.purge.claim(session, [], None, "shredding") == []
        session.rollback()
    with svc.sessions() as session:
        assert session.scalars(select(Recording.purge_state).where(Recording.id.in_(ids))).all() == [None] * 3
