"""Schema migrations (Alembic), driven from code so the installed package carries them.

`countersign server init` and `countersign db upgrade` both call `upgrade`; there
is no alembic.ini: the script location is this package and the database is
whatever the service settings say (COUNTERSIGN_DATABASE_URL, else SQLite in the
data directory).
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection

from api.core.db import make_engine

SCRIPT_LOCATION = Path(__file__).resolve().parent / "migrations"


def config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(SCRIPT_LOCATION))
    # env.py runs on this connection: the caller's engine (pragmas, search_path) is the one migrated.
    cfg.attributes["connection"] = connection
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Apply pending migrations up to `revision`; a no-op when the database is already there."""
    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            command.upgrade(config(connection), revision)
    finally:
        engine.dispose()


def current(url: str) -> str | None:
    """The revision the database is at (None: never migrated)."""
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def head() -> str:
    """The newest revision this code ships."""
    revision = ScriptDirectory.from_config(config()).get_current_head()
    assert revision is not None
    return revision
