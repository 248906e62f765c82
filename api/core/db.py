"""Database engine and sessions, built by a factory so tests can make many."""

from __future__ import annotations

import contextlib
import os
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


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        _private_sqlite_file(url)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            # WAL lets readers go on while one writer commits; FULL sync because
            # this is evidence metadata and a lost commit would orphan a segment.
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


def make_sessionmaker(engine: Engine, info: dict[str, Any] | None = None) -> sessionmaker[Session]:
    """Sessions for one engine; `info` reaches code that only has a session (the audit signer)."""
    return sessionmaker(engine, expire_on_commit=False, info=info or {})


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    with factory() as session, session.begin():
        yield session
