"""`countersign evidence ...`: officers search, inspect and retrieve evidence."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from api.admin_cli import DEFAULT_SERVER, Server, Token
from api.http_client import ApiClient

app = typer.Typer(no_args_is_help=True, help="Search, inspect and retrieve evidence (officers; every read is logged).")


@app.command("list")
def list_(
    site: Annotated[str | None, typer.Option(help="Only this site.")] = None,
    since: Annotated[str | None, typer.Option(help="ISO time: started at or after.")] = None,
    until: Annotated[str | None, typer.Option(help="ISO time: started before.")] = None,
    incident: Annotated[bool | None, typer.Option("--incident/--routine", help="Only flagged / unflagged.")] = None,
    server: Server = DEFAULT_SERVER,
    token: Token = None,
) -> None:
    """List recordings in your sites, newest first."""
    params = {
        k: v for k, v in {"site": site, "since": since, "until": until, "incident": incident}.items() if v is not None
    }
    for r in ApiClient(server, token).json("GET", "/v1/evidence", params=params):
        typer.echo(
            f"{r['id']}  {r['started_at'][:19]}  {r['site']:<16} {r['status']:<11} "
            f"{r['segment_count']:>4} seg  {r['incident_category'] or '-'}"
        )


@app.command()
def show(recording_id: str, server: Server = DEFAULT_SERVER, token: Token = None) -> None:
    """Show one recording's metadata, consent record and segments."""
    typer.echo(
        json.dumps(ApiClient(server, token).json("GET", f"/v1/evidence/{recording_id}"), indent=2, ensure_ascii=False)
    )


@app.command()
def get(
    recording_id: str,
    purpose: Annotated[str, typer.Option(help="Why you need it (at least 10 characters; logged before release).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the audio.")],
    format: Annotated[str, typer.Option(help="flac or wav")] = "flac",
    server: Server = DEFAULT_SERVER,
    token: Token = None,
) -> None:
    """Verify, decrypt and download a recording's audio."""
    if format not in ("flac", "wav"):
        typer.secho("error: --format must be flac or wav", fg=typer.colors.RED, err=True)
        raise typer.Exit(2)
    response = ApiClient(server, token).call(
        "GET", f"/v1/evidence/{recording_id}/audio", params={"purpose": purpose, "format": format}
    )
    output.write_bytes(response.content)
    entry = response.headers.get("x-countersign-access-log")
    typer.echo(f"wrote {output} ({len(response.content)} bytes; access log entry {entry})")
