"""`countersign db ...`: schema migrations with the service's own settings."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer
from sqlalchemy.exc import SQLAlchemyError

from api import migrate
from api.cli import DataDir, settings_for
from api.errors import DatabaseUnavailable, fail

app = typer.Typer(no_args_is_help=True, help="Database schema: apply and show migrations.")


@contextmanager
def _database() -> Iterator[None]:
    """A database that cannot be reached or opened is one line and exit 2, not a driver traceback."""
    try:
        yield
    except SQLAlchemyError as exc:
        orig = getattr(exc, "orig", None)  # the driver's own message, without SQLAlchemy's SQL and links
        first_line = str(orig if orig is not None else exc).strip().splitlines()
        raise fail(DatabaseUnavailable(first_line[0] if first_line else type(exc).__name__)) from exc


@app.command()
def upgrade(data: DataDir) -> None:
    """Apply pending migrations (database from COUNTERSIGN_DATABASE_URL, else SQLite in --data)."""
    settings = settings_for(data)
    if settings.database_url is None:
        data.mkdir(parents=True, exist_ok=True, mode=0o700)  # SQLite will not create the folder
    with _database():
        before = migrate.current(settings.sqlalchemy_url)
        migrate.upgrade(settings.sqlalchemy_url)
        after = migrate.current(settings.sqlalchemy_url)
    if before == after:
        typer.echo(f"database already at {after}; nothing to do")
    else:
        typer.echo(f"database upgraded from {before or 'empty'} to {after}")


@app.command()
def current(data: DataDir) -> None:
    """Show the database's migration revision and the newest this release ships."""
    settings = settings_for(data)
    with _database():
        revision = migrate.current(settings.sqlalchemy_url)
    head = migrate.head()
    state = "up to date" if revision == head else "upgrade pending: run 'countersign db upgrade'"
    typer.echo(f"database: {revision or 'empty'}; code: {head} ({state})")
