"""Database engine and sessions, built by a factory so tests can make many."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker


def _private_sqlite_file(url: str) -> None:
    """Create the database file 0600 before SQLite does (it would use the umask, typically 0644).

    SQLite gives its -wal and -shm files the database file's mode, so they are private too.
    """
    path = make_url(url).database
    if not path or path == ":memory:" or os.path.exists(path) or not os.path.isdir(os.path.dirname(path) or "."):
        return
    with contextlib.suppress(FileExistsError):  # created meanwhile by another process, the same way
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


# Connections kept open per engine: one for each upload thread (api.core.services.UPLOAD_THREADS)
# plus the group-commit writer and a few for everything else. SQLAlchemy's default of 5 had the
# upload threads open a new connection (and, on SQLite, run its pragmas) for most uploads and
# close it again on return (py-spy, 16 devices: 1.7% of the GIL samples, now none). At most
# POOL_SIZE + POOL_OVERFLOW connections per process (PostgreSQL's max_connections counts them).
POOL_SIZE = 20
POOL_OVERFLOW = 4


def make_engine(url: str) -> Engine:
    pool: dict[str, Any] = {"pool_size": POOL_SIZE, "max_overflow": POOL_OVERFLOW}
    if url.startswith("sqlite"):
        if make_url(url).database in (None, "", ":memory:"):
            pool = {}  # one connection per thread (SingletonThreadPool): nothing to size
        _private_sqlite_file(url)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, **pool)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            # WAL lets readers go on while one writer commits; FULL sync because
            # this is evidence metadata and a lost commit would orphan a segment.
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        _queue_writers(engine)
        return engine
    return create_engine(url, pool_pre_ping=True, **pool)


_READS = ("SELECT", "PRAGMA")
QUEUE_TIMEOUT = 30.0  # as SQLite's busy_timeout; then the write goes ahead and SQLite decides


class _WriterQueue:
    """One SQLite writer at a time in this process, queued on a lock instead of SQLite's busy handler."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holder: int | None = None  # id() of the DBAPI connection whose transaction writes
        self._thread: int | None = None

    def take(self, key: int) -> None:
        if self._holder == key or self._thread == threading.get_ident():
            return  # this transaction already holds it, or this thread writes on another connection
        if self._lock.acquire(timeout=QUEUE_TIMEOUT):
            self._holder, self._thread = key, threading.get_ident()

    def give(self, key: int) -> None:
        if self._holder == key:
            self._holder = self._thread = None
            self._lock.release()


def _queue_writers(engine: Engine) -> None:
    """Writers of one SQLite database queue on a lock in this process instead of in SQLite's busy handler.

    SQLite takes its one write lock at a transaction's first write; a writer that finds it taken
    polls with sleeps of up to 100 ms (busy_timeout), which under concurrent uploads made a tail of
    seconds. Here a transaction's first write statement first takes a per-engine lock, given back
    once its COMMIT or ROLLBACK has returned (or its connection is closed or invalidated). A thread
    that already writes on another connection is not queued (SQLite's own lock decides, as before),
    and other processes on the same file still meet SQLite's busy handler.
    """
    queue = _WriterQueue()
    dialect = engine.dialect
    do_commit, do_rollback = dialect.do_commit, dialect.do_rollback

    @event.listens_for(engine, "before_cursor_execute")
    def _take(conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if not statement.lstrip()[:6].upper().startswith(_READS):
            queue.take(id(conn.connection.dbapi_connection))

    def commit(connection: Any) -> None:  # the pool's proxy, or the DBAPI connection itself
        try:
            do_commit(connection)
        finally:
            queue.give(id(getattr(connection, "dbapi_connection", connection)))

    def rollback(connection: Any) -> None:
        try:
            do_rollback(connection)
        finally:
            queue.give(id(getattr(connection, "dbapi_connection", connection)))

    dialect.do_commit = commit  # type: ignore[method-assign,assignment]
    dialect.do_rollback = rollback  # type: ignore[method-assign,assignment]

    @event.listens_for(engine, "close")
    def _closed(dbapi_connection: Any, _record: Any) -> None:
        queue.give(id(dbapi_connection))

    @event.listens_for(engine, "invalidate")
    def _invalidated(dbapi_connection: Any, _record: Any, _exc: Any) -> None:
        queue.give(id(dbapi_connection))


def make_sessionmaker(engine: Engine, info: dict[str, Any] | None = None) -> sessionmaker[Session]:
    """Sessions for one engine; `info` reaches code that only has a session (the audit signer)."""
    return sessionmaker(engine, expire_on_commit=False, info=info or {})


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    with factory() as session, session.begin():
        yield session


class StatementCounter:
    """Counts the SQL statements and commits an engine runs while it is open (tests, bench/ingest.py).

    Every cursor execution counts (an executemany is one); BEGIN is implicit in the drivers and is
    not a statement here. `statements` lists them in order, for a message when a count changes.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.statements: list[str] = []
        self.commits = 0

    def _execute(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        self.statements.append(" ".join(statement.split())[:120])

    def _commit(self, _conn: Any) -> None:
        self.commits += 1

    def __enter__(self) -> StatementCounter:
        event.listen(self.engine, "before_cursor_execute", self._execute)
        event.listen(self.engine, "commit", self._commit)
        return self

    def __exit__(self, *_exc: object) -> None:
        event.remove(self.engine, "before_cursor_execute", self._execute)
        event.remove(self.engine, "commit", self._commit)

    def reset(self) -> None:
        self.statements, self.commits = [], 0
