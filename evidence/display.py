"""Text for people: tables measured by display width and times in a local zone.

Pure functions (no terminal, no CLI framework), shared by the client CLIs (client/output.py)
and the server-side commands that print tables (retention status). A Japanese name takes two
terminal columns a character, so widths are counted with unicodedata.east_asian_width, not len.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from evidence.text import printable

DEFAULT_ZONE = "Asia/Tokyo"


def zone(name: str | None) -> ZoneInfo:
    """The IANA zone `name` (None: Asia/Tokyo); ValueError saying why if there is no such zone."""
    name = name or DEFAULT_ZONE
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        hint = " (this system has no zone database: install the tzdata package)" if name == DEFAULT_ZONE else ""
        raise ValueError(f"unknown time zone {name!r}: use an IANA name such as Asia/Tokyo{hint}") from exc


def _parse(value: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def local(value: str | datetime | None, tz: ZoneInfo, seconds: bool = True) -> str:
    """A time as local time, zone named: 2026-04-01 18:30:15 JST; `-` for none. A string that is
    not an ISO time with a zone is shown as given rather than guessed at."""
    if value is None or value == "":
        return "-"
    moment = value if isinstance(value, datetime) else _parse(value)
    if moment is None or moment.tzinfo is None:
        return str(value)
    return moment.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S %Z" if seconds else "%Y-%m-%d %H:%M %Z")


def local_date(value: str | None, tz: ZoneInfo) -> str:
    """The local date of an ISO time (a retain-until date): 2033-04-01."""
    if not value:
        return "-"
    moment = _parse(value)
    return moment.astimezone(tz).strftime("%Y-%m-%d") if moment is not None else value


def duration(seconds: float | None) -> str:
    """0:42, 12:05, 1:02:03; `-` when unknown."""
    if seconds is None:
        return "-"
    hours, rest = divmod(round(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02}:{secs:02}" if hours else f"{minutes}:{secs:02}"


def width(text: str) -> int:
    """Columns a string takes on a terminal: wide and full-width characters two, combining marks none."""
    total = 0
    for ch in text:
        if unicodedata.combining(ch):
            continue
        total += 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
    return total


def pad(text: str, columns: int) -> str:
    """`text` padded with spaces to `columns` display columns (longer text is left whole)."""
    return text + " " * max(0, columns - width(text))


def cell(value: object) -> str:
    """A value as one table cell: `-` for none; control characters escaped (evidence.text.printable);
    a line break or tab shown as an escape, since it would break the table."""
    if value is None:
        return "-"
    return printable(str(value)).replace("\n", "\\n").replace("\t", "\\t")


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    """Lines of a table: the header, then a line a row, columns two spaces apart and padded to the
    widest cell's display width; a column whose every cell is a number is right-aligned."""
    cells = [[cell(v) for v in row] for row in rows]
    numeric = [bool(rows) and all(_number(row[i]) for row in rows) for i in range(len(headers))]
    widths = [max([width(h)] + [width(row[i]) for row in cells]) for i, h in enumerate(headers)]
    lines = []
    for row in [[cell(h) for h in headers], *cells]:
        parts = [
            " " * (widths[i] - width(text)) + text if numeric[i] else pad(text, widths[i]) for i, text in enumerate(row)
        ]
        lines.append("  ".join(parts).rstrip())
    return lines
