"""`countersign evidence ...`: officers search, inspect and retrieve evidence."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from client.admin import DEFAULT_SERVER, Server, Token
from client.http import ApiClient

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


@app.command()
def custody(recording_id: str, server: Server = DEFAULT_SERVER, token: Token = None) -> None:
    """Chain of custody: every logged event about one recording, oldest first."""
    for e in ApiClient(server, token).json("GET", f"/v1/audit/custody/{recording_id}"):
        purpose = f'  purpose="{e["purpose"]}"' if e["purpose"] else ""
        typer.echo(f"{e['seq']:>6}  {e['at'][:19]}  {e['outcome']:<7} {e['action']:<26} {e['actor']}{purpose}")


@app.command()
def flag(
    recording_id: str,
    category: Annotated[str, typer.Option(help="Incident category, e.g. verbal-abuse.")],
    server: Server = DEFAULT_SERVER,
    token: Token = None,
) -> None:
    """Flag a recording as an incident (it is then kept under the incident policy)."""
    r = ApiClient(server, token).json("POST", f"/v1/evidence/{recording_id}/flag", json={"category": category})
    typer.echo(f"{r['id']} flagged {r['incident_category']}; retain until {r['retain_until']} ({r['retain_reason']})")


@app.command()
def extend(
    recording_id: str,
    until: Annotated[str, typer.Option(help="ISO date-time with zone, e.g. 2030-04-01T00:00:00+09:00.")],
    reason: Annotated[str, typer.Option(help="Why it must be kept longer (at least 10 characters; logged).")],
    server: Server = DEFAULT_SERVER,
    token: Token = None,
) -> None:
    """Keep a recording at least until a date; later policy changes never shorten it."""
    body = {"until": until, "reason": reason}
    r = ApiClient(server, token).json("POST", f"/v1/evidence/{recording_id}/extend", json=body)
    typer.echo(f"{r['id']} retained until {r['retain_until']} ({r['retain_reason']})")


@app.command()
def delete(
    recording_id: str,
    reason: Annotated[str, typer.Option(help="Why it must go before its time (at least 10 characters; logged).")],
    server: Server = DEFAULT_SERVER,
    token: Token = None,
) -> None:
    """Delete a recording now (made by mistake, a data-subject request). Refused while any hold covers it."""
    r = ApiClient(server, token).json("DELETE", f"/v1/evidence/{recording_id}", params={"reason": reason})
    if r["state"] == "purged":
        typer.echo(f"{r['recording_id']} deleted: keys destroyed, objects removed, tombstone signed")
    else:
        typer.echo(f"{r['recording_id']} keys destroyed (unreadable); the next retention run removes its objects")


@app.command()
def tombstone(recording_id: str, server: Server = DEFAULT_SERVER, token: Token = None) -> None:
    """What remains of a deleted recording, with its signed deletion record."""
    reply = ApiClient(server, token).json("GET", f"/v1/evidence/{recording_id}/tombstone")
    typer.echo(json.dumps(reply, indent=2, ensure_ascii=False))
