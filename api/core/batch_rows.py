"""Writes a group-commit batch makes together, just before its commit: one statement per kind, not per row.

Why: the batch's writer thread (api.core.group_commit) is the ingest path's ceiling, and most of its
time was spent not working but waiting. The sqlite3 driver releases the GIL around every step of
every statement; one of the busy upload threads takes it, and the writer waits for it back (a
switch interval, ~0.5 ms on average under load, where the INSERT itself takes tens of µs). One
statement per table and batch replaces one per row: in a micro-benchmark on the 2-core machine, 32
single-row INSERTs while 4 threads ran Python took 100 times as long as one INSERT of 32 rows, and
an `executemany` was no better than the single rows (it steps once per row too).

The statement is built here rather than by SQLAlchemy's multi-VALUES insert, whose compile and
cache key grow with the rows (it cost more CPU than it saved, docs/benchmarks.md): the SQL text is
cached per table, columns and row count, and each value goes through the column type's own bind
processor (TypeEngine.bind_processor, as SQLAlchemy would apply it), so what is stored is exactly
what `insert(table)` would store.

What a caller may assume: `insert_row` writes at once in a session not flagged DEFER_INSERTS (a
transaction of its own, a batch of one), so nothing changes there. In a flagged batch the row
is written with the batch's others when the session commits; if that INSERT fails, the commit
fails and the group commit runs each job again alone. So a job in a flagged batch must not read
back, in the same transaction, rows of a table it deferred (the ingest jobs read neither segments
nor access_log).

`defer` is the same for other writes: a writer given all of a batch's items at the commit (the
ingest path's compare-and-sets and quota charges, api.ingest_batch). A writer that cannot apply
every item as it stands raises `Shortfall`; the batch then fails as a whole and is run again
job by job, which is where each job's own precise refusal comes from.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any

from sqlalchemy import Column, Insert, Table, insert
from sqlalchemy import event as sa_event
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.orm import Session

DEFER_INSERTS = "batch_rows_defer"  # Session.info flag, set by api.core.group_commit for batches of two or more
_PENDING = "batch_rows_pending"
_HOOKED = "batch_rows_hooked"
MAX_ROWS = 500  # rows per statement: far inside SQLite's and PostgreSQL's bound-parameter limits

_PLACEHOLDER = {"qmark": "?", "format": "%s", "pyformat": "%s"}  # positional, as exec_driver_sql passes them
_Processor = Callable[[Any], Any] | None
_inserts: dict[Table, Insert] = {}  # built once per table, as a module constant would be
_sql: dict[tuple[str, str, tuple[str, ...], int], str] = {}
_processors: dict[tuple[str, tuple[Column[Any], ...]], list[_Processor]] = {}
Writer = Callable[[Connection, list[Any]], None]


class Shortfall(Exception):
    """A deferred write changed fewer rows than its batch's jobs asked: the commit fails, and the
    group commit runs each job again alone, where each gets its own precise answer."""


def deferring(session: Session) -> Dialect | None:
    """The dialect, if this session defers its writes to the commit (a flagged batch, positional paramstyle)."""
    if not session.info.get(DEFER_INSERTS):
        return None
    dialect = session.get_bind().dialect
    return dialect if dialect.paramstyle in _PLACEHOLDER else None


def defer(session: Session, key: Hashable, writer: Writer, item: Any) -> None:
    """Queue `item` under `key`; before the commit, `writer(connection, items)` writes each key's items.

    Keys are written in the order they were first deferred. A writer that finds its items cannot
    all be written as they stand (a compare-and-set moved fewer rows) raises `Shortfall`.
    """
    session.connection()  # the items belong to a transaction (begun here if need be): its rollback drops them
    if not session.info.get(_HOOKED):  # once per session: both are no-ops with nothing pending
        session.info[_HOOKED] = True
        sa_event.listen(session, "before_commit", write_pending)
        sa_event.listen(session, "after_transaction_end", _drop_pending)
    pending: dict[Hashable, tuple[Writer, list[Any]]] = session.info.setdefault(_PENDING, {})
    found = pending.get(key)
    if found is None:
        found = pending[key] = (writer, [])
    found[1].append(item)


def insert_row(session: Session, table: Table, row: dict[str, Any]) -> None:
    """Insert `row` into `table` now, or, in a session flagged DEFER_INSERTS, with its batch before the commit."""
    if deferring(session) is None:
        statement = _inserts.get(table)
        if statement is None:
            statement = _inserts[table] = insert(table)
        session.connection().execute(statement, row)
        return
    columns = tuple(row)
    defer(session, (table, columns), functools.partial(_insert_rows, table, columns), row)


def write_pending(session: Session) -> None:
    """Write everything deferred in this transaction, each key's items by its writer, in order."""
    pending = session.info.pop(_PENDING, None)
    if not pending:
        return
    connection = session.connection()
    for writer, items in pending.values():
        writer(connection, items)


def bound(dialect: Dialect, columns: Sequence[Column[Any]], rows: Iterable[Sequence[Any]]) -> tuple[Any, ...]:
    """The rows' values in order, each through its column type's bind processor (what `insert` would bind)."""
    processors = _column_processors(dialect, tuple(columns))
    params: list[Any] = []
    for row in rows:
        for value, process in zip(row, processors, strict=True):
            params.append(value if process is None else process(value))
    return tuple(params)


def values_sql(dialect: Dialect, width: int, count: int) -> str:
    """`(?, ?), (?, ?)`: `count` rows of `width` positional placeholders, for a VALUES list."""
    one = "(" + ", ".join([_PLACEHOLDER[dialect.paramstyle]] * width) + ")"
    return ", ".join([one] * count)


def _insert_rows(table: Table, columns: tuple[str, ...], connection: Connection, rows: list[dict[str, Any]]) -> None:
    dialect = connection.dialect
    table_columns = [table.c[name] for name in columns]
    for start in range(0, len(rows), MAX_ROWS):
        chunk = rows[start : start + MAX_ROWS]
        params = bound(dialect, table_columns, ([row[name] for name in columns] for row in chunk))
        connection.exec_driver_sql(_statement(dialect, table, columns, len(chunk)), params)


def _drop_pending(session: Session, transaction: Any) -> None:
    # A flush is a subtransaction whose end fires this too: only the outermost one's end (a rollback,
    # or a commit that has already written them) drops the rows.
    if transaction.parent is None:
        session.info.pop(_PENDING, None)


def _statement(dialect: Dialect, table: Table, columns: Sequence[str], count: int) -> str:
    key = (dialect.name, table.name, tuple(columns), count)
    sql = _sql.get(key)
    if sql is None:
        quote = dialect.identifier_preparer
        names = ", ".join(quote.quote(table.c[name].name) for name in columns)
        sql = _sql[key] = f"INSERT INTO {quote.format_table(table)} ({names}) VALUES " + values_sql(
            dialect, len(columns), count
        )
    return sql


def _column_processors(dialect: Dialect, columns: tuple[Column[Any], ...]) -> list[_Processor]:
    key = (dialect.name, columns)
    found = _processors.get(key)
    if found is None:
        # dialect_impl: the type as this dialect runs it (a TypeDecorator's own step, then its impl's).
        found = _processors[key] = [column.type.dialect_impl(dialect).bind_processor(dialect) for column in columns]
    return found
