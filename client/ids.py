"""Short recording ids: an officer may type the first characters of an id (at least 4) instead of all 36.

The prefix is resolved by the service (GET /v1/evidence?id_prefix=...), within the caller's
sites like every search, so a prefix never reveals that another site's recording exists: it
matches nothing there. A full id is used as given, without a lookup (auditors, who search no
sites, give full ids).
"""

from __future__ import annotations

import re
import uuid

import typer

from client.errors import ClientError, RequestRefused, fail
from client.http import ApiClient, error_detail
from client.output import local
from evidence.errors import ExitCode
from evidence.text import printable

PREFIX = re.compile(r"[0-9a-f][0-9a-f-]{3,35}")
MIN_PREFIX = 4
SHOWN = 10  # matches listed when a prefix is ambiguous


class BadRecordingId(ClientError):
    """Not a recording id"""

    exit_code = ExitCode.USAGE


class NoSuchRecording(ClientError):
    """No such recording"""


class AmbiguousId(ClientError):
    """Ambiguous recording id"""

    exit_code = ExitCode.USAGE


def full_id(ref: str) -> str | None:
    """The canonical form of a whole id (with or without hyphens, any case), else None."""
    try:
        return str(uuid.UUID(ref.strip())) if len(ref.strip()) in (32, 36) else None
    except ValueError:
        return None


def resolve_recording(client: ApiClient, ref: str) -> str:
    """The one recording of the caller's sites whose id starts with `ref`; exit with a clear error otherwise."""
    whole = full_id(ref)
    if whole is not None:
        return whole
    prefix = ref.strip().lower()
    if not PREFIX.fullmatch(prefix):
        raise fail(
            BadRecordingId(
                f"{ref!r} is not a recording id: give the id or at least its first {MIN_PREFIX} hex characters"
            )
        )
    response = client.request("GET", "/v1/evidence", params={"id_prefix": prefix, "limit": SHOWN + 1})
    if response.status_code == 403:
        raise fail(RequestRefused(f"403: {error_detail(response)} (short ids are for officers: give the full id)"))
    if response.status_code >= 400:
        raise fail(RequestRefused(f"{response.status_code}: {error_detail(response)}"))
    matches = response.json()
    if not matches:
        raise fail(NoSuchRecording(f"no recording in your sites has an id starting with {prefix}"))
    if len(matches) > 1:
        count = f"more than {SHOWN}" if len(matches) > SHOWN else str(len(matches))
        typer.secho(
            f"error: ambiguous: {count} recordings start with {prefix}; give more characters:",
            fg=typer.colors.RED,
            err=True,
        )
        for r in matches[:SHOWN]:
            typer.echo(printable(f"  {r['id']}  {local(r['started_at'])}  {r['site']}"), err=True)
        raise typer.Exit(AmbiguousId.exit_code)
    found: str = matches[0]["id"]
    return found
