"""Rows a group-commit batch inserts together, in one multi-row INSERT per table, just before its commit.

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
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Insert, Table, insert
from sqlalchemy import event as sa_event
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session

DEFER_INSERTS = "batch_rows_defer"  # Session.info flag, set by api.core.group_commit for batches of two or more
_PENDING = "batch_rows_pending"
_HOOKED = "batch_rows_hooked"
MAX_ROWS = 500  # rows per statement: far inside SQLite's and PostgreSQL's bound-parameter limits

_PLACEHOLDER = {"qmark": "?", "format": "%s", "pyformat": "%s"}  # positional, as exec_driver_sql passes them
_Processor = Callable[[Any], Any] | None
_inserts: dict[Table, Insert] = {}  # built once per table, as a module constant would be
_sql: dict[tuple[str, str, tuple[str, ...], int], str] = {}
_processors: dict[tuple[str, str, tuple[str, ...]], list[_Processor]] = {}


def insert_row(session: Session, table: Table, row: dict[str, Any]) -> None:
    """Insert `row` into `table` now, or, in a session flagged DEFER_INSERTS, with its batch before the commit."""
    if not session.info.get(DEFER_INSERTS) or session.get_bind().dialect.paramstyle not in _PLACEHOLDER:
        statement = _inserts.get(table)
        if statement is None:
            statement = _inserts[table] = insert(table)
        session.connection().execute(statement, row)
        return
    session.connection()  # the rows belong to a transaction (begun here if need be): its rollback drops them
    if not session.info.get(_HOOKED):  # once per session: both are no-ops with nothing pending
        session.info[_HOOKED] = True
        sa_event.listen(session, "before_commit", write_pending)
        sa_event.listen(session, "after_transaction_end", _drop_pending)
    pending: dict[tuple[Table, tuple[str, ...]], list[dict[str, Any]]] = session.info.setdefault(_PENDING, {})
    pending.setdefault((table, tuple(row)), []).append(row)


def write_pending(session: Session) -> None:
    """Write every row deferred in this transaction, one statement per table, columns and MAX_ROWS rows."""
    pending = session.info.pop(_PENDING, None)
    if not pending:
        return
    connection = session.connection()
    dialect = connection.dialect
    for (table, columns), rows in pending.items():
        processors = _column_processors(dialect, table, columns)
        for start in range(0, len(rows), MAX_ROWS):
            chunk = rows[start : start + MAX_ROWS]
            params: list[Any] = []
            for row in chunk:
                for name, process in zip(columns, processors, strict=True):
                    params.append(row[name] if process is None else process(row[name]))
            connection.exec_driver_sql(_statement(dialect, table, columns, len(chunk)), tuple(params))


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
        one = "(" + ", ".join([_PLACEHOLDER[dialect.paramstyle]] * len(columns)) + ")"
        names = ", ".join(quote.quote(table.c[name].name) for name in columns)
        sql = _sql[key] = f"INSERT INTO {quote.format_table(table)} ({names}) VALUES " + ", ".join([one] * count)
    return sql


def _column_processors(dialect: Dialect, table: Table, columns: tuple[str, ...]) -> list[_Processor]:
    key = (dialect.name, table.name, columns)
    found = _processors.get(key)
    if found is None:
        # dialect_impl: the type as this dialect runs it (a TypeDecorator's own step, then its impl's).
        found = _processors[key] = [
            table.c[name].type.dialect_impl(dialect).bind_processor(dialect) for name in columns
        ]
    return found
