"""`countersign evidence ...`: officers search, inspect and retrieve evidence."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from client import export, sealed_read
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
from client.ids import resolve_recording
from client.output import (
    Json,
    Tz,
    duration,
    echo,
    echo_audit,
    echo_fields,
    echo_json,
    echo_table,
    local,
    local_date,
    use_zone,
)
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
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many (newest first).")] = 100,
    as_json: Json = False,
    tz: Tz = None,
    server: Server = DEFAULT_SERVER,
    token: Token = None,
) -> None:
    """List recordings in your sites, newest first (times in --tz, Asia/Tokyo by default)."""
    use_zone(tz)
    given = {"site": site, "since": since, "until": until, "incident": incident, "limit": limit}
    params = {k: v for k, v in given.items() if v is not None}
    rows = ApiClient(server, token).json("GET", "/v1/evidence", params=params)
    if as_json:
        echo_json(rows)
        return
    headers = ("ID", "STARTED", "DURATION", "SITE", "DEVICE", "STAFF", "STATUS", "INCIDENT", "HELD", "RETAIN UNTIL")
    table = [
        (
            r["id"][:8],
            local(r["started_at"]),
            _audio_column(r),
            r["site"],
            r.get("device_name") or r["device_id"][:8],
            r.get("staff_code") or "-",
            r["status"],
            r["incident_category"] or "-",
            ", ".join(r.get("held_by") or []) or "-",
            local_date(r.get("retain_until")),
        )
        for r in rows
    ]
    echo_table(headers, table, empty="no recordings")


# A recording without audio says why, in the list as in `show`: it is what it is, not a failure.
NO_AUDIO = {"objection": "objection: nothing recorded", "none": "no audio captured"}


def _audio_column(r: dict[str, object]) -> str:
    said = NO_AUDIO.get(str(r.get("audio", "recorded")))
    if said is not None:
        return said
    seconds = r.get("duration_seconds")
    return duration(float(seconds)) if isinstance(seconds, int | float) else f"{r['segment_count']} seg"


RecordingRef = Annotated[str, typer.Argument(help="The recording's id, or its first characters (at least 4).")]


@app.command()
def show(
    recording_id: RecordingRef,
    as_json: Json = False,
    tz: Tz = None,
    server: Server = DEFAULT_SERVER,
    token: Token = None,
) -> None:
    """Show one recording: when, where, who, its consent record, chain, retention and holds."""
    use_zone(tz)
    client = ApiClient(server, token)
    r = client.json("GET", f"/v1/evidence/{resolve_recording(client, recording_id)}")
    if as_json:
        echo_json(r)
        return
    consent = r.get("consent") or {}
    segments = r.get("segments") or []
    finals = [s for s in segments if s.get("final")]
    chain = f"{len(segments)} segment(s) received, hash-linked from the signed header" + (
        ", final segment received" if finals else ", no final segment yet"
    )
    echo_fields(
        [
            ("id", r["id"]),
            ("site", r["site"]),
            ("device", f"{r.get('device_name') or '-'} ({r['device_id']})"),
            ("started", local(r["started_at"])),
            ("ended", local(r.get("ended_at"))),
            ("duration", _audio_column(r)),
            ("status", r["status"]),
            ("incident", r.get("incident_category") or "-"),
            ("consent", consent.get("outcome") or r.get("consent_outcome")),
            ("  notice", f"{consent.get('notice_id', '-')} v{consent.get('notice_version', '-')}"),
            ("  language", consent.get("language")),
            ("  method", consent.get("method")),
            ("  staff", consent.get("staff_code")),
            ("  presented", local(consent.get("presented_at"))),
            ("  decided", local(consent.get("decided_at"))),
            ("  notice sha256", consent.get("notice_sha256")),
            ("chain", chain),
            ("retain until", local(r.get("retain_until"))),
            ("  reason", r.get("retain_reason") or "-"),
            ("holds", ", ".join(r.get("held_by") or []) or "none"),
        ]
    )
    if segments:
        echo()
        rows = [
            (s["index"], "yes" if s["final"] else "", s["size"], local(s["received_at"]), s["ciphertext_sha256"][:16])
            for s in segments
        ]
        echo_table(("SEGMENT", "FINAL", "BYTES", "RECEIVED", "CIPHERTEXT SHA-256"), rows)


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
    recording_id: RecordingRef,
    purpose: Annotated[str, typer.Option(help="Why you need it (at least 10 characters; logged before release).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the audio (.flac or .wav).")],
    format: Annotated[
        str | None, typer.Option(help="flac or wav (default: from the output's extension, else flac).")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace the output file if it exists.")] = False,
    key: Annotated[
        Path | None,
        typer.Option(
            help="The organisation's offline key file (recovery-ID.key): fetch the recording encrypted and "
            "decrypt it here (zero-knowledge mode, where the service cannot decrypt)."
        ),
    ] = None,
    passphrase_file: Annotated[
        Path | None, typer.Option(help="With --key: file whose first line is its passphrase (else it is asked for).")
    ] = None,
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
    offline = sealed_read.offline_key(key, passphrase_file) if key is not None else None
    client = ApiClient(server, token)
    recording_id = resolve_recording(client, recording_id)
    if offline is not None:
        done = sealed_read.get_sealed(client, recording_id, purpose, offline, output, fmt, force)
        echo(
            f"wrote {output} ({fmt.upper()}, {done.size} bytes, {done.segments} segments verified and decrypted "
            f"with offline key {offline.key_id}; access log entry {done.access_log})"
        )
        if not done.final:
            echo("note: no final segment: the recording was interrupted; it verifies up to its last segment")
        return
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
def custody(
    recording_id: RecordingRef,
    as_json: Json = False,
    tz: Tz = None,
    server: Server = DEFAULT_SERVER,
    token: Token = None,
) -> None:
    """Chain of custody: every logged event about one recording, oldest first, who by name."""
    use_zone(tz)
    client = ApiClient(server, token)
    entries = client.json("GET", f"/v1/audit/custody/{resolve_recording(client, recording_id)}")
    if as_json:
        echo_json(entries)
    else:
        echo_audit(entries)


@app.command()
def flag(
    recording_id: RecordingRef,
    category: Annotated[str, typer.Option(help="Incident category, e.g. verbal-abuse.")],
    server: Server = DEFAULT_SERVER,
    token: Token = None,
) -> None:
    """Flag a recording as an incident (it is then kept under the incident policy)."""
    client = ApiClient(server, token)
    url = f"/v1/evidence/{resolve_recording(client, recording_id)}/flag"
    r = client.json("POST", url, json={"category": category})
    echo(f"{r['id']} flagged {r['incident_category']}; retain until {r['retain_until']} ({r['retain_reason']})")


@app.command()
def extend(
    recording_id: RecordingRef,
    until: Annotated[str, typer.Option(help="ISO date-time with zone, e.g. 2030-04-01T00:00:00+09:00.")],
    reason: Annotated[str, typer.Option(help="Why it must be kept longer (at least 10 characters; logged).")],
    server: Server = DEFAULT_SERVER,
    token: Token = None,
) -> None:
    """Keep a recording at least until a date; later policy changes never shorten it."""
    body = {"until": until, "reason": reason}
    client = ApiClient(server, token)
    r = client.json("POST", f"/v1/evidence/{resolve_recording(client, recording_id)}/extend", json=body)
    echo(f"{r['id']} retained until {r['retain_until']} ({r['retain_reason']})")


@app.command()
def delete(
    recording_id: RecordingRef,
    reason: Annotated[str, typer.Option(help="Why it must go before its time (at least 10 characters; logged).")],
    server: Server = DEFAULT_SERVER,
    token: Token = None,
) -> None:
    """Ask for a recording to be deleted before its time. A second officer of the site approves it
    (`evidence approve-deletion`), or, unless it is an incident, it goes after the grace period."""
    client = ApiClient(server, token)
    url = f"/v1/evidence/{resolve_recording(client, recording_id)}/deletion"
    r = client.json("POST", url, json={"reason": reason})
    echo(f"deletion requested: {r['id']} for recording {r['recording_id']}")
    if r["needs_approval"]:
        echo("an incident: it is deleted only when a second officer approves it")
    else:
        echo(f"it is deleted when a second officer approves it, or after {r['not_before']} unless cancelled")


@app.command()
def deletions(
    all_: Annotated[bool, typer.Option("--all", help="Also those carried out or cancelled.")] = False,
    as_json: Json = False,
    tz: Tz = None,
    server: Server = DEFAULT_SERVER,
    token: Token = None,
) -> None:
    """Deletion requests of your sites, waiting for a second officer or for their grace period."""
    use_zone(tz)
    rows = ApiClient(server, token).json("GET", "/v1/deletions", params={"state": "all" if all_ else "open"})
    if as_json:
        echo_json(rows)
        return
    if not rows:
        echo("no deletion requests" if all_ else "no open deletion requests")
        return
    table = [
        (r["id"], r["recording_id"][:8], r["state"], local(r["not_before"]), f"{r['requested_by']}: {r['reason']}")
        for r in rows
    ]
    echo_table(("REQUEST", "RECORDING", "STATE", "NOT BEFORE", "REQUESTED BY: REASON"), table)


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
