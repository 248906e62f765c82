"""How the client CLIs print what the service answers: one place, so every command reads alike.

Tables have a header and columns measured by display width (a Japanese name takes two
columns a character), numbers right-aligned; times are shown in one local zone (--tz, else
COUNTERSIGN_TZ, else Asia/Tokyo) with the zone named; `--json` prints the service's answer
as it came, for scripts. Nothing the service says reaches the terminal as a control character.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import typer

from client.errors import ClientError, fail
from evidence import display
from evidence.display import DEFAULT_ZONE, cell, duration, pad, table, width
from evidence.errors import ExitCode
from evidence.text import forbidden, printable

__all__ = ["DEFAULT_ZONE", "cell", "duration", "pad", "table", "width"]  # re-exported for the commands

TZ_ENV = "COUNTERSIGN_TZ"

Json = Annotated[bool, typer.Option("--json", help="Print the service's answer as JSON (for scripts).")]
Tz = Annotated[
    str | None,
    typer.Option("--tz", envvar=TZ_ENV, help=f"Time zone to show times in (IANA name; default {DEFAULT_ZONE})."),
]

_zone: list[ZoneInfo] = []  # the zone this command shows times in (use_zone); Asia/Tokyo until set


class UnknownZone(ClientError):
    """Unknown time zone"""

    exit_code = ExitCode.USAGE


def use_zone(name: str | None) -> ZoneInfo:
    """Show times in this zone (None: the default) for the rest of the command; exit 2 if unknown."""
    try:
        tz = display.zone(name)
    except ValueError as exc:
        raise fail(UnknownZone(str(exc))) from exc
    _zone[:] = [tz]
    return tz


def _current_zone() -> ZoneInfo:
    return _zone[0] if _zone else use_zone(None)


def local(value: str | None) -> str:
    """An ISO time from the service as local time to the second, zone named: 2026-04-01 18:30:15 JST."""
    return display.local(value, _current_zone())


def local_date(value: str | None) -> str:
    """The local date of an ISO time (a retain-until date): 2033-04-01."""
    return display.local_date(value, _current_zone())


def echo_table(headers: Sequence[str], rows: Sequence[Sequence[object]], empty: str | None = None) -> None:
    """Print a table (or, with no rows and an `empty` message, that message)."""
    if not rows and empty is not None:
        echo(empty)
        return
    for line in table(headers, rows):
        echo(line)


def echo_fields(fields: Sequence[tuple[str, object]]) -> None:
    """A `key: value` block, the keys padded to one width (show commands)."""
    keys = max((width(k) for k, _ in fields), default=0) + 1
    for key, value in fields:
        echo(f"{pad(key + ':', keys)} {cell(value)}")


def echo(text: str = "") -> None:
    """Print a line made of what the service answered: no control or invisible character reaches
    the terminal as itself (a name or a purpose cannot retitle the window or clear the screen)."""
    typer.echo(printable(text))


def when(value: str | None) -> str:
    """An ISO time to the second, as the service wrote it; `-` when there is none."""
    return value[:19] if value else "-"


def actor(e: Mapping[str, Any]) -> str:
    """Who: `olivia (user)`, `counter-n1 (device)` when the service named them; the raw actor otherwise."""
    name = e.get("actor_name")
    if not name:
        return str(e["actor"])
    kind = str(e["actor"]).partition(":")[0]
    return f"{name} ({kind})"


AUDIT_HEADER = {
    "seq": "SEQ",
    "at": "TIME",
    "outcome": "OUTCOME",
    "action": "ACTION",
    "actor": "ACTOR",
    "target": "TARGET",
    "purpose": "PURPOSE",
}


def audit_line(e: Mapping[str, Any]) -> str:
    """One access-log entry: seq, local time, outcome, action, who (named), target, the stated purpose.

    Fixed columns, not measured per listing: `audit log`, `evidence custody` and anything else
    that prints the log print an entry as the same line, so an auditor can compare listings.
    """
    header = e is AUDIT_HEADER
    at = str(e["at"]) if header else local(e["at"])
    who = str(e["actor"]) if header else actor(e)
    purpose = str(e["purpose"]) if header else (f'purpose="{e["purpose"]}"' if e.get("purpose") else "")
    seq = f"{e['seq']:>6}"
    head = f"{seq}  {pad(at, 23)}  {pad(str(e['outcome']), 7)}  {pad(str(e['action']), 26)}  {pad(who, 28)}"
    return cell(f"{head}  {e.get('target') or '-'}  {purpose}".rstrip())


def echo_audit(entries: Sequence[Mapping[str, Any]], empty: str = "no entries") -> None:
    """The log as a headed listing of audit_line()s."""
    if not entries:
        echo(empty)
        return
    echo(audit_line(AUDIT_HEADER))
    for entry in entries:
        echo(audit_line(entry))


def echo_json(document: Any) -> None:
    """A JSON answer as the service gave it, indented, non-ASCII (Japanese names) left readable."""
    text = json.dumps(document, indent=2, ensure_ascii=False)
    # Inside JSON strings: any invisible character becomes its \\u escape, so the JSON stays valid.
    typer.echo("".join(json.dumps(ch)[1:-1] if forbidden(ch) and ch != "\n" else ch for ch in text))
