"""`countersign evidence ...`: officers search, inspect and retrieve evidence."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from client import export
from client.admin import DEFAULT_SERVER, Server, Token
from client.download import (
    AudioMismatch,
    audio_problem,
    fetch_to,
    move_into_place,
    part_file,
    refuse_existing,
    usage_error,
)
from client.errors import fail
from client.http import ApiClient
from client.output import echo, echo_audit, echo_json, when
from client.tls import add_tls_options

# What an output file's name says it holds; the service speaks these two formats.
AUDIO_SUFFIXES = {".flac": "flac", ".wav": "wav"}

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
        echo(
            f"{r['id']}  {when(r['started_at'])}  {r['site']:<16} {r['status']:<11} "
            f"{r['segment_count']:>4} seg  {r['incident_category'] or '-'}"
        )


@app.command()
def show(recording_id: str, server: Server = DEFAULT_SERVER, token: Token = None) -> None:
    """Show one recording's metadata, consent record and segments."""
    echo_json(ApiClient(server, token).json("GET", f"/v1/evidence/{recording_id}"))


def _audio_format(output: Path, given: str | None) -> str:
    """The format to ask for: --format if given (it must agree with a .flac/.wav name), else the name's."""
    named = AUDIO_SUFFIXES.get(output.suffix.lower())
    if given is None:
        return named or "flac"
    if given not in ("flac", "wav"):
        raise usage_error("--format must be flac or wav")
    if named is not None and named != given:
        raise usage_error(
            f"--format {given} does not match {output.name} (a {named.upper()} file name); "
            f"drop --format or name the file .{given}"
        )
    return given


@app.command()
def get(
    recording_id: str,
    purpose: Annotated[str, typer.Option(help="Why you need it (at least 10 characters; logged before release).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the audio (.flac or .wav).")],
    format: Annotated[
        str | None, typer.Option(help="flac or wav (default: from the output's extension, else flac).")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace the output file if it exists.")] = False,
    server: Server = DEFAULT_SERVER,
    token: Token = None,
) -> None:
    """Verify, decrypt and download a recording's audio.

    The audio is written to a temporary file next to the output and renamed only once the
    whole response has arrived and its sizes match what the service announced, so a failed
    transfer (or a read the service cut off because a segment failed a check mid-stream)
    never leaves a plausible audio file.
    """
    fmt = _audio_format(output, format)
    refuse_existing(output, force)
    client = ApiClient(server, token)
    with part_file(output) as part:
        body = {"purpose": purpose, "format": fmt}
        size, headers = fetch_to(client, part, "POST", f"/v1/evidence/{recording_id}/audio", json=body)
        problem = audio_problem(part, fmt, headers.get("x-countersign-frames"))
        if problem is not None:
            raise fail(AudioMismatch(f"{problem}; nothing was written"))
        move_into_place(part, output, force)
    entry = headers.get("x-countersign-access-log")
    echo(f"wrote {output} ({fmt.upper()}, {size} bytes; access log entry {entry})")


@app.command()
def custody(recording_id: str, server: Server = DEFAULT_SERVER, token: Token = None) -> None:
    """Chain of custody: every logged event about one recording, oldest first."""
    echo_audit(ApiClient(server, token).json("GET", f"/v1/audit/custody/{recording_id}"))


@app.command()
def flag(
    recording_id: str,
    category: Annotated[str, typer.Option(help="Incident category, e.g. verbal-abuse.")],
    server: Server = DEFAULT_SERVER,
    token: Token = None,
) -> None:
    """Flag a recording as an incident (it is then kept under the incident policy)."""
    r = ApiClient(server, token).json("POST", f"/v1/evidence/{recording_id}/flag", json={"category": category})
    echo(f"{r['id']} flagged {r['incident_category']}; retain until {r['retain_until']} ({r['retain_reason']})")


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
    echo(f"{r['id']} retained until {r['retain_until']} ({r['retain_reason']})")


@app.command()
def delete(
    recording_id: str,
    reason: Annotated[str, typer.Option(help="Why it must go before its time (at least 10 characters; logged).")],
    server: Server = DEFAULT_SERVER,
    token: Token = None,
) -> None:
    """Ask for a recording to be deleted before its time. A second officer of the site approves it
    (`evidence approve-deletion`), or, unless it is an incident, it goes after the grace period."""
    r = ApiClient(server, token).json("POST", f"/v1/evidence/{recording_id}/deletion", json={"reason": reason})
    echo(f"deletion requested: {r['id']} for recording {r['recording_id']}")
    if r["needs_approval"]:
        echo("an incident: it is deleted only when a second officer approves it")
    else:
        echo(f"it is deleted when a second officer approves it, or after {r['not_before']} unless cancelled")


@app.command()
def deletions(
    all_: Annotated[bool, typer.Option("--all", help="Also those carried out or cancelled.")] = False,
    server: Server = DEFAULT_SERVER,
    token: Token = None,
) -> None:
    """Deletion requests of your sites, waiting for a second officer or for their grace period."""
    rows = ApiClient(server, token).json("GET", "/v1/deletions", params={"state": "all" if all_ else "open"})
    if not rows:
        echo("no deletion requests" if all_ else "no open deletion requests")
        return
    echo(f"{'request':<36}  {'recording':<36}  {'state':<9}  {'not before':<16}  requested by / reason")
    for r in rows:
        echo(
            f"{r['id']:<36}  {r['recording_id']:<36}  {r['state']:<9}  {when(r['not_before']):<16}  "
            f"{r['requested_by']}: {r['reason']}"
        )


@app.command("approve-deletion")
def approve_deletion(request_id: str, server: Server = DEFAULT_SERVER, token: Token = None) -> None:
    """Approve another officer's deletion request: the recording is deleted now (never while held)."""
    r = ApiClient(server, token).json("POST", f"/v1/deletions/{request_id}/approve")
    if r["state"] == "purged":
        echo(f"{r['recording_id']} deleted: keys destroyed, objects removed, tombstone signed")
    else:
        echo(f"{r['recording_id']} keys destroyed (unreadable); the next retention run removes its objects")


@app.command("cancel-deletion")
def cancel_deletion(
    request_id: str,
    reason: Annotated[str, typer.Option(help="Why it must not be deleted (logged).")],
    server: Server = DEFAULT_SERVER,
    token: Token = None,
) -> None:
    """Cancel a deletion request before it is carried out."""
    r = ApiClient(server, token).json("POST", f"/v1/deletions/{request_id}/cancel", json={"reason": reason})
    echo(f"deletion request {r['id']} cancelled; recording {r['recording_id']} stays")


@app.command()
def tombstone(recording_id: str, server: Server = DEFAULT_SERVER, token: Token = None) -> None:
    """What remains of a deleted recording, with its signed deletion record."""
    echo_json(ApiClient(server, token).json("GET", f"/v1/evidence/{recording_id}/tombstone"))


app.command("export")(export.export)
add_tls_options(app)  # --ca-file and --pin on every command above with --server: keep last
