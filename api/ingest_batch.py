"""A group-commit batch's segment writes on SQLite: its chain moves in one UPDATE, its charges in one upsert.

Why: after api.core.batch_rows put a batch's rows into one INSERT per table, each segment still
cost the writer two statements of its own, the chain head's compare-and-set and the quota charge,
and each statement's step is a wait for the GIL under load (api.core.batch_rows says why). Here a
batch's compare-and-sets are one `UPDATE … FROM (VALUES …)` and its charges one `INSERT … ON
CONFLICT DO UPDATE … WHERE`, whatever the batch's size.

All or nothing: each statement must change exactly one row per item (a chain move per segment, a
charge per device and day). If it changes fewer (another request moved a chain, a device reached
its quota, a row was tampered with), `Shortfall`: the batch's commit fails and the group commit
runs each job again alone, where its own compare-and-set or charge gives its precise answer (409,
429). Nothing is written on the way, so a refusal still stores nothing.

What the batch's other jobs see: an opening in the same batch (api.ingest.write_recording) reads
its device's open recordings and charges its header before these statements run. Both err on the
safe side: a recording a deferred final segment will complete still counts as open (a refusal
there fails the batch, and alone the opening gets its true answer), and the charge's WHERE here
re-checks each day's sum with the header's bytes in it.

SQLite only (3.33 and newer, for UPDATE … FROM). On PostgreSQL each statement takes a row lock and
the writer does not wait on one write lock; the VALUES list would also need a cast per column
there. There, and for a batch of one, api.ingest runs its statements one by one, as before.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, cast

from sqlalchemy import Column, Table
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.orm import Session

from api.core.batch_rows import MAX_ROWS, Shortfall, bound, defer, deferring, values_sql
from api.core.models import DeviceUsage, Recording

UPDATE_FROM = sqlite3.sqlite_version_info >= (3, 33, 0)


@dataclass(frozen=True)
class Move:
    """One segment's compare-and-set of its recording's chain head (api.ingest._MOVE_CHAIN's parameters)."""

    rid: str
    index: int
    prev: bytes
    head: bytes
    now: datetime
    final: bool

    def values(self) -> tuple[Any, ...]:
        """In _MOVE_COLUMNS' order: what the chain must be, then what it becomes."""
        status, ended = ("complete", self.now) if self.final else ("open", None)
        return (self.rid, self.index, self.prev, self.index + 1, self.head, self.now, status, ended)


@dataclass(frozen=True)
class Charge:
    """One upload's bytes for its device's UTC day, under a daily limit."""

    device_id: str
    day: date
    size: int
    limit: int


def batching(session: Session) -> bool:
    """Whether this session's segment writes are deferred to its commit (a SQLite group-commit batch)."""
    dialect = deferring(session)
    return dialect is not None and dialect.name == "sqlite" and UPDATE_FROM


def defer_move(session: Session, move: Move) -> None:
    defer(session, "ingest_batch.moves", _write_moves, move)


def defer_charge(session: Session, charge: Charge) -> None:
    defer(session, "ingest_batch.charges", _write_charges, charge)


_RECORDINGS = cast(Table, Recording.__table__)
_USAGE = cast(Table, DeviceUsage.__table__)
_r, _u = _RECORDINGS.c, _USAGE.c
# Each VALUES column bound as the column it is compared with or written to would be.
_MOVE_COLUMNS: tuple[Column[Any], ...] = (
    _r.id, _r.segment_count, _r.head_hash, _r.segment_count, _r.head_hash, _r.last_activity_at, _r.status, _r.ended_at,
)  # fmt: skip
_CHARGE_COLUMNS: tuple[Column[Any], ...] = (_u.device_id, _u.day, _u.uploaded_bytes, _u.uploads)
_sql: dict[tuple[str, int], str] = {}


def _move_sql(dialect: Dialect, count: int) -> str:
    sql = _sql.get(("moves", count))
    if sql is None:
        # The VALUES columns are column1…column8 in _MOVE_COLUMNS' order; the WHERE is _MOVE_CHAIN's.
        sql = _sql["moves", count] = (
            "UPDATE recordings SET segment_count = v.column4, head_hash = v.column5,"
            " last_activity_at = v.column6, status = v.column7, ended_at = v.column8"
            f" FROM (VALUES {values_sql(dialect, len(_MOVE_COLUMNS), count)}) AS v"
            " WHERE recordings.id = v.column1 AND recordings.segment_count = v.column2"
            " AND recordings.head_hash = v.column3 AND recordings.status = 'open'"
            " AND recordings.purge_state IS NULL"
        )
    return sql


def _charge_sql(dialect: Dialect, count: int) -> str:
    sql = _sql.get(("charges", count))
    if sql is None:
        # A day's first upload makes its row; later ones add only if the sum stays within the limit
        # (api.ingest.try_charge's conditional UPDATE), so a refused charge changes no row.
        sql = _sql["charges", count] = (
            "INSERT INTO device_usage (device_id, day, uploaded_bytes, uploads)"
            f" VALUES {values_sql(dialect, len(_CHARGE_COLUMNS), count)}"
            " ON CONFLICT (device_id, day) DO UPDATE SET"
            " uploaded_bytes = device_usage.uploaded_bytes + excluded.uploaded_bytes,"
            " uploads = device_usage.uploads + excluded.uploads"
            " WHERE device_usage.uploaded_bytes + excluded.uploaded_bytes <= ?"
        )
    return sql


def _write_moves(connection: Connection, moves: list[Move]) -> None:
    dialect = connection.dialect
    for start in range(0, len(moves), MAX_ROWS):
        chunk = moves[start : start + MAX_ROWS]
        rows = (move.values() for move in chunk)
        moved = connection.exec_driver_sql(_move_sql(dialect, len(chunk)), bound(dialect, _MOVE_COLUMNS, rows))
        if moved.rowcount != len(chunk):  # (two moves of one chain in a batch: only the first can match)
            raise Shortfall(f"{len(chunk) - moved.rowcount} of {len(chunk)} chain moves found their chain moved")


def _write_charges(connection: Connection, charges: list[Charge]) -> None:
    totals: dict[tuple[str, date], list[int]] = {}
    limit = min(c.limit for c in charges)  # one service's quota: the same for every job of a batch
    for c in charges:
        total = totals.setdefault((c.device_id, c.day), [0, 0])
        total[0] += c.size
        total[1] += 1
    if any(size > limit for size, _ in totals.values()):  # a new day row is not checked by the WHERE
        raise Shortfall("a device's uploads in this batch exceed its daily quota together")
    days = list(totals.items())
    for start in range(0, len(days), MAX_ROWS):
        chunk = days[start : start + MAX_ROWS]
        rows = ((device, day, size, uploads) for (device, day), (size, uploads) in chunk)
        params = (*bound(connection.dialect, _CHARGE_COLUMNS, rows), limit)
        charged = connection.exec_driver_sql(_charge_sql(connection.dialect, len(chunk)), params)
        if charged.rowcount != len(chunk):
            raise Shortfall(f"{len(chunk) - charged.rowcount} of {len(chunk)} devices' charges exceed today's quota")
