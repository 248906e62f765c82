"""Opening hours as an administrator writes them: "mon-fri 08:30-17:15; sat 09:00-12:00"."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_SPAN = re.compile(r"^([a-z]{3})(?:-([a-z]{3}))?\s+(\d{2}):(\d{2})-(\d{2}):(\d{2})$")


class HoursError(ValueError):
    """Opening hours or a time zone that cannot be read."""


@dataclass(frozen=True)
class Span:
    days: frozenset[int]  # Monday = 0
    start: time
    end: time


def parse(text: str) -> tuple[Span, ...]:
    spans = []
    for part in (p.strip().lower() for p in text.split(";")):
        found = _SPAN.match(part)
        if not found or found.group(1) not in DAYS or (found.group(2) or found.group(1)) not in DAYS:
            raise HoursError(f"opening hours {part!r}: write e.g. 'mon-fri 08:30-17:15; sat 09:00-12:00'")
        first, last = DAYS.index(found.group(1)), DAYS.index(found.group(2) or found.group(1))
        try:
            start = time(int(found.group(3)), int(found.group(4)))
            end = time(int(found.group(5)), int(found.group(6)))
        except ValueError as exc:
            raise HoursError(f"opening hours {part!r}: {exc}") from None
        if end <= start:
            raise HoursError(f"opening hours {part!r}: the end must be after the start")
        days = range(first, last + 1) if first <= last else [*range(first, 7), *range(0, last + 1)]
        spans.append(Span(frozenset(days), start, end))
    return tuple(spans)


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:  # OSError: a name that is a directory, say
        raise HoursError(f"unknown time zone {name!r}") from exc


def is_open(text: str | None, timezone: str, at: datetime) -> bool:
    """Whether the counter is staffed at `at` (never, when no hours are set: nobody expects a heartbeat)."""
    if not text:
        return False
    local = at.astimezone(zone(timezone))
    return any(local.weekday() in s.days and s.start <= local.time() < s.end for s in parse(text))
