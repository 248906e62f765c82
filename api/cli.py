"""`countersign server ...`: initialise and run the service."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from api.bootstrap import AlreadyInitialised, init_data_dir
from api.core.keys import KeyFileError
from api.core.settings import Settings, SettingsError
from api.migrate import upgrade

app = typer.Typer(no_args_is_help=True, help="Initialise and run the Countersign service.")

DataDir = Annotated[Path, typer.Option("--data", envvar="COUNTERSIGN_DATA_DIR", help="Service data directory.")]


def settings_for(data: Path) -> Settings:
    return Settings(data_dir=data)


@app.command()
def init(
    data: DataDir,
    admin_name: Annotated[str, typer.Option(help="Name of the first admin.")] = "admin",
    exist_ok: Annotated[bool, typer.Option(help="Succeed quietly if already initialised (containers).")] = False,
) -> None:
    """Create the database, the evidence key pair, the service signing key and a first admin token."""
    settings = settings_for(data)
    try:
        result = init_data_dir(settings, admin_name)
    except AlreadyInitialised as exc:
        if exist_ok:
            # Containers run this on every start: an existing deployment gets pending migrations.
            upgrade(settings.sqlalchemy_url)
            typer.echo(f"{data} is already initialised; schema upgraded to the latest revision")
            return
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from exc
    except SettingsError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from exc
    if settings.development:
        typer.secho("development mode: private keys are NOT passphrase-protected", fg=typer.colors.YELLOW, err=True)
    typer.echo(f"initialised {data}")
    typer.echo(f"evidence key id:     {result.evidence_key_id}")
    typer.echo(f"service public key:  {result.service_public_key}")
    typer.echo(f"admin token (shown once, store it safely): {result.admin_token}")


@app.command()
def run(
    data: DataDir,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="uvicorn worker processes.")] = 1,
) -> None:
    """Serve the API with uvicorn (OpenAPI docs at /docs, health at /healthz)."""
    import uvicorn

    settings = settings_for(data)
    try:
        settings.passphrase()
        from api.app import create_app

        app_ = create_app(settings) if workers == 1 else None
    except (SettingsError, KeyFileError) as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from exc
    if app_ is not None:
        uvicorn.run(app_, host=host, port=port, log_level="info")
    else:
        os.environ["COUNTERSIGN_DATA_DIR"] = str(data)
        uvicorn.run("api.asgi:app", host=host, port=port, workers=workers, factory=False, log_level="info")
