"""The retention decision: a pure function, like borg's prune.

``decide(facts, rules, holds, now)`` says whether one recording must be kept
(and why: which hold, which rule) or may be purged (and which rule expired
it). It reads no clock, no database and no settings: everything it needs is
in its arguments, so it can be tested exhaustively and the purge job can call
it again inside the transaction that shreds, on fresh facts.

The precedence it implements is documented in ``retention.policy``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from retention.policy import INCIDENT, Category, Rule


@dataclass(frozen=True)
class RecordingFacts:
    """What retention needs to know about a recording (not an ORM row)."""

    id: str
    site: str
    device: str
    started_at: datetime
    status: str  # open | complete | interrupted | objected
    incident_category: str | None = None
    extended_until: datetime | None = None  # an officer's explicit extension

    @property
    def base_category(self) -> Category:
        if self.status == "objected":
            return "objection"
        if self.status == "interrupted":
            return "interrupted"
        return "routine"

    @property
    def categories(self) -> frozenset[Category]:
        flagged: frozenset[Category] = frozenset({INCIDENT}) if self.incident_category else frozenset()
        return frozenset({self.base_category}) | flagged


@dataclass(frozen=True)
class HoldFacts:
    """A legal hold: explicit recordings and/or a scope that also catches later recordings."""

    id: str
    case_ref: str
    active: bool = True
    recording_ids: frozenset[str] = frozenset()
    scoped: bool = False  # False: only the explicit recordings
    site: str | None = None
    device: str | None = None
    started_from: datetime | None = None  # inclusive
    started_to: datetime | None = None  # exclusive
    incident_category: str | None = None


def hold_covers(hold: HoldFacts, facts: RecordingFacts) -> bool:
    if not hold.active:
        return False
    if facts.id in hold.recording_ids:
        return True
    if not hold.scoped:
        return False
    return (
        (hold.site is None or hold.site == facts.site)
        and (hold.device is None or hold.device == facts.device)
        and (hold.started_from is None or facts.started_at >= hold.started_from)
        and (hold.started_to is None or facts.started_at < hold.started_to)
        and (hold.incident_category is None or hold.incident_category == facts.incident_category)
    )


@dataclass(frozen=True)
class Schedule:
    """When a recording may go, ignoring holds: ``until`` None means never automatically."""

    until: datetime | None
    reason: str  # why it is kept until then
    rule: str | None  # the deletion rule that expires it (None if none applies)


def applicable_rules(facts: RecordingFacts, rules: Iterable[Rule]) -> list[Rule]:
    cats = facts.categories
    return [r for r in rules if r.category in cats and (r.site is None or r.site == facts.site)]


def _explicitness(rule: Rule) -> tuple[bool, bool]:
    # A flag is a person's judgement about this very recording: more explicit
    # than any rule about a whole site, which is more explicit than a default.
    return (rule.category == INCIDENT, rule.site is not None)


def retain_until(facts: RecordingFacts, rules: Iterable[Rule]) -> Schedule:
    """The date from which the recording may be purged, and why (policy.py, principles 2-5)."""
    applicable = applicable_rules(facts, rules)
    start = facts.started_at

    retains: list[tuple[datetime, str]] = [
        (start + timedelta(days=r.retain_days), f"retain: {r.describe()}")
        for r in applicable
        if r.retain_days is not None
    ]
    if facts.extended_until is not None:
        retains.append((facts.extended_until, f"retain: extended by an officer to {facts.extended_until:%Y-%m-%d}"))
    longest = max(retains, key=lambda t: t[0], default=None)

    deletes = [r for r in applicable if r.delete_days is not None]
    if not deletes:
        reason = longest[1] if longest else "no rule applies"
        return Schedule(None, f"{reason}; no deletion rule applies, kept until an officer deletes it", None)
    top = max(_explicitness(r) for r in deletes)
    chosen = min((r for r in deletes if _explicitness(r) == top), key=lambda r: (r.delete_days, r.label))
    assert chosen.delete_days is not None
    delete_at = start + timedelta(days=chosen.delete_days)
    if longest is not None and longest[0] > delete_at:
        return Schedule(longest[0], longest[1], chosen.label)
    return Schedule(delete_at, f"delete: {chosen.describe()}", chosen.label)


@dataclass(frozen=True)
class Keep:
    reason: str
    until: datetime | None = None  # earliest purge date, if it is a date that keeps it
    holds: tuple[str, ...] = field(default=())  # case references, if holds keep it

    @property
    def held(self) -> bool:
        return bool(self.holds)


@dataclass(frozen=True)
class Purge:
    reason: str
    rule: str


Decision = Keep | Purge


def covering_holds(facts: RecordingFacts, holds: Iterable[HoldFacts]) -> list[HoldFacts]:
    return [h for h in holds if hold_covers(h, facts)]


def decide(facts: RecordingFacts, rules: Sequence[Rule], holds: Iterable[HoldFacts], now: datetime) -> Decision:
    held = covering_holds(facts, holds)
    if held:
        refs = tuple(sorted({h.case_ref for h in held}))
        return Keep(f"held: {', '.join(refs)}", holds=refs)
    if facts.status == "open":
        # Still receiving segments; a silent one becomes "interrupted" first.
        return Keep("still recording")
    schedule = retain_until(facts, rules)
    if schedule.until is None or now < schedule.until:
        return Keep(schedule.reason, until=schedule.until)
    assert schedule.rule is not None
    return Purge(f"expired {schedule.until:%Y-%m-%d} ({schedule.reason})", schedule.rule)
