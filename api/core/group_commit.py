"""Group commit: concurrent small write jobs share one transaction and one commit on one writer thread.

Why: every segment upload ends in a few short writes and a commit. One commit each means one fsync
each and, on SQLite, the database's one write lock held from the first write to the end of that
fsync while every other upload queues behind it; under load the holder also waits for the GIL
after each statement, so the lock's hold grew to ~10 ms for ~1 ms of work (README, ingest
profile). Here the jobs that arrived while one batch was committing are run back to back on one
thread and committed together: one lock hold and one fsync for all of them.

What a job may assume and must promise:

- It runs in a transaction shared with the other jobs of its batch; its writes become durable
  with theirs, and its future resolves only after that commit has returned (a 201 still means
  durable). If the commit fails, every job of the batch fails with that error.
- It raises `Refusal(error)` only before it has written anything: the batch goes on without it and
  its caller gets `error`. Any other exception may come after writes, so the whole batch is rolled
  back and every job in it is run again, each alone in its own transaction (a job must therefore
  be safe to run again from the start: it re-checks what it relies on, in its first statement).
- Audit checkpoints that fell due (api.core.audit's CHECKPOINT_DEFER) are handed back to the first
  job that succeeded, for its caller to run after answering.

No waiting for company: a job that finds the writer idle is committed alone at once, so latency
at low load is one transaction, as before; batches form by themselves when jobs arrive faster
than commits complete. The thread exits after a few idle seconds and starts again on demand, so
a service (or a test) that is dropped without closing leaves no thread behind for long.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from sqlalchemy.orm import Session, sessionmaker

from api.core.audit import APPEND_BATCH, CHECKPOINT_DEFER
from api.core.batch_rows import DEFER_INSERTS

T = TypeVar("T")
logger = logging.getLogger(__name__)

MAX_BATCH = 64  # bounds one transaction's length (and a failed batch's re-runs)
IDLE_SECONDS = 5.0


def flag_batch(session: Session, batched: bool) -> None:
    """Flag a transaction that runs many jobs' writes, as the writer does for a batch of two or more.

    The audit head is moved once per batch (api.core.audit.APPEND_BATCH) and the rows of segments
    and audit entries are inserted in one statement each (api.core.batch_rows.DEFER_INSERTS).
    Unflagged, each write happens at once, as ever: alone, the hooks cost more than they save.
    bench/audit_log.py flags its batches here too, so that it measures what the writer runs.
    """
    session.info[APPEND_BATCH] = session.info[DEFER_INSERTS] = batched


class Refusal(Exception):
    """Raised by a job that wrote nothing: its caller gets `error`, the batch goes on."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass
class Committed(Generic[T]):
    """A job's result, and the deferred audit checkpoints its caller should run after answering."""

    value: T
    deferred: list[Callable[[], object]] = field(default_factory=list)


@dataclass
class _Job:
    run: Callable[[Session], Any]
    future: Future[Committed[Any]] = field(default_factory=Future)


class GroupCommitter:
    """One writer thread per service process (per sessionmaker) committing jobs in batches."""

    def __init__(self, sessions: sessionmaker[Session], *, max_batch: int = MAX_BATCH) -> None:
        self._sessions = sessions
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.batches = 0  # commits made, and jobs committed in them (tests, bench/ingest.py)
        self.jobs = 0

    def submit(self, run: Callable[[Session], T]) -> Future[Committed[T]]:
        job = _Job(run)
        self._queue.put(job)
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="group-commit", daemon=True)
                self._thread.start()
        return job.future

    def queued(self) -> int:
        """Jobs waiting for the writer (approximate while jobs arrive: for tests and benchmarks)."""
        return self._queue.qsize()

    async def run(self, run: Callable[[Session], T]) -> Committed[T]:
        """Submit and wait without holding a thread of the pool (the writer resolves the future)."""
        return await asyncio.wrap_future(self.submit(run))

    def _serve(self) -> None:
        while True:
            try:
                first = self._queue.get(timeout=IDLE_SECONDS)
            except queue.Empty:
                with self._lock:
                    if self._queue.empty():  # (a submit after this sees no thread and starts one)
                        self._thread = None
                        return
                continue
            batch = [first]
            while len(batch) < self._max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            # A caller that gave up (its request task was cancelled) before its job started is not
            # run: nothing of it is written, and its device retries. Once running, a job's future
            # can no longer be cancelled, so a late cancel cannot break a batch's results.
            batch = [job for job in batch if job.future.set_running_or_notify_cancel()]
            if not batch:
                continue
            try:
                self._commit(batch)
            except BaseException as exc:  # never leave a caller waiting, whatever happened
                logger.exception("group commit failed")
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(exc)

    def _commit(self, batch: list[_Job]) -> None:
        deferred: list[Callable[[], object]] = []
        done: list[tuple[_Job, Any]] = []
        refused: list[tuple[_Job, BaseException]] = []
        try:
            with self._sessions() as session:
                session.info[CHECKPOINT_DEFER] = deferred
                flag_batch(session, len(batch) > 1)
                for job in batch:
                    try:
                        done.append((job, job.run(session)))
                    except Refusal as refusal:
                        refused.append((job, refusal.error))
                session.commit()
        except Exception:
            if len(batch) == 1:
                raise
            # A job failed after writing (or the commit did): nothing of the batch is stored. Each
            # job again, alone, so one job's failure is its own.
            logger.warning("a batch of %d writes failed; each is retried alone", len(batch), exc_info=True)
            for job in batch:
                self._alone(job)
            return
        self.batches += 1
        self.jobs += len(done)
        for job, error in refused:
            job.future.set_exception(error)
        for n, (job, value) in enumerate(done):
            job.future.set_result(Committed(value, deferred if n == 0 else []))

    def _alone(self, job: _Job) -> None:
        deferred: list[Callable[[], object]] = []
        try:
            with self._sessions() as session:
                session.info[CHECKPOINT_DEFER] = deferred
                value = job.run(session)
                session.commit()
        except Refusal as refusal:
            job.future.set_exception(refusal.error)
        except Exception as exc:
            job.future.set_exception(exc)
        else:
            self.batches += 1
            self.jobs += 1
            job.future.set_result(Committed(value, deferred))
