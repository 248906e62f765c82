"""Models and migrations agree, on SQLite and on PostgreSQL; upgrading is idempotent.

A migration missing from api/migrations/versions shows up here as a non-empty
autogenerate diff, the same diff `alembic revision --autogenerate` would write.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import insert, text
from sqlalchemy.exc import DBAPIError

from api import migrate
from api.core.db import make_engine
from api.core.models import AccessLog, Base, utcnow
from retention import models as _retention_tables  # noqa: F401  (registers them on Base.metadata)
from tests.conftest import cli_env, countersign
from tests.support.backends import BACKENDS, pg_url_for


def _postgres_reachable() -> bool:
    try:
        with BACKENDS.admin().connect() as connection:
            connection.execute(text("SELECT 1"))
    except DBAPIError:
        return False
    return True


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of each kind (PostgreSQL: a fresh schema, whatever the test backend)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    if not _postgres_reachable():
        pytest.skip("PostgreSQL is not answering (scripts/ensure-postgres.sh starts the local cluster)")
    allocation = BACKENDS.allocate_schema()
    try:
        yield pg_url_for(allocation.schema or "")
    finally:
        BACKENDS.release(allocation)


def test_migrations_match_the_models(empty_url: str) -> None:
    migrate.upgrade(empty_url)
    engine = make_engine(empty_url)
    try:
        with engine.connect() as connection:
            diff = compare_metadata(MigrationContext.configure(connection, opts={"compare_type": True}), Base.metadata)
    finally:
        engine.dispose()
    assert diff == [], f"models and migrations differ; add a revision for: {diff}"


def test_upgrade_twice_is_a_no_op_and_keeps_the_guards(empty_url: str) -> None:
    migrate.upgrade(empty_url)
    assert migrate.current(empty_url) == migrate.head()
    migrate.upgrade(empty_url)  # nothing pending: must neither fail nor re-create anything
    assert migrate.current(empty_url) == migrate.head()
    engine = make_engine(empty_url)
    row = {"seq": 1, "at": utcnow(), "actor": "t", "action": "t", "outcome": "allowed", "detail": {}}
    try:
        with engine.begin() as connection:
            connection.execute(insert(AccessLog).values(**row, entry_hash=b"e", chain_hash=b"c", seal=b"s"))
        with pytest.raises(DBAPIError, match="append-only"), engine.begin() as connection:
            connection.execute(text("DELETE FROM access_log"))
    finally:
        engine.dispose()


def test_cli_db_upgrade_and_current(tmp_path: Path) -> None:
    """`countersign db` with the service settings (the test backend's database, through cli_env)."""
    data = tmp_path / "server"
    env = cli_env()
    first = countersign("db", "upgrade", "--data", str(data), env=env)
    assert f"to {migrate.head()}" in first.stdout
    again = countersign("db", "upgrade", "--data", str(data), env=env)
    assert "nothing to do" in again.stdout
    shown = countersign("db", "current", "--data", str(data), env=env)
    assert f"database: {migrate.head()}" in shown.stdout and "up to date" in shown.stdout
