"""`countersign db ...`: schema migrations with the service's own settings."""

from __future__ import annotations

import typer

from api import migrate
from api.cli import DataDir, settings_for

app = typer.Typer(no_args_is_help=True, help="Database schema: apply and show migrations.")


@app.command()
def upgrade(data: DataDir) -> None:
    """Apply pending migrations (database from COUNTERSIGN_DATABASE_URL, else SQLite in --data)."""
    settings = settings_for(data)
    if settings.database_url is None:
        data.mkdir(parents=True, exist_ok=True, mode=0o700)  # SQLite will not create the folder
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
    revision = migrate.current(settings.sqlalchemy_url)
    head = migrate.head()
    state = "up to date" if revision == head else "upgrade pending: run 'countersign db upgrade'"
    typer.echo(f"database: {revision or 'empty'}; code: {head} ({state})")
