"""An independent statement of the retention rules, used as the oracle for retention.decide.

decide() computes a *date* and compares it with now; this reference asks a
*yes/no question* at one instant, principle by principle, the way the
precedence is written in the issue and in retention/policy.py. Two different
shapes for one specification: if they agree everywhere tests look, both are
probably right.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from retention.decide import HoldFacts, RecordingFacts
from retention.policy import Rule


def ref_categories(facts: RecordingFacts) -> set[str]:
    cats = {
        "objection" if facts.status == "objected" else "interrupted" if facts.status == "interrupted" else "routine"
    }
    if facts.incident_category is not None and facts.incident_category != "":
        cats.add("incident")
    return cats


def ref_covers(hold: HoldFacts, facts: RecordingFacts) -> bool:
    if not hold.active:
        return False
    explicit = facts.id in hold.recording_ids
    in_scope = hold.scoped and all(
        [
            hold.site in (None, facts.site),
            hold.device in (None, facts.device),
            hold.started_from is None or hold.started_from <= facts.started_at,
            hold.started_to is None or facts.started_at < hold.started_to,
            hold.incident_category in (None, facts.incident_category),
        ]
    )
    return explicit or in_scope


def ref_may_purge(facts: RecordingFacts, rules: Sequence[Rule], holds: Iterable[HoldFacts], now: datetime) -> bool:
    # 1. A hold beats everything.
    if any(ref_covers(h, facts) for h in holds):
        return False
    if facts.status == "open":
        return False
    cats = ref_categories(facts)
    applicable = [r for r in rules if r.category in cats and r.site in (None, facts.site)]
    start = facts.started_at
    # 2 + 3. Retention wins over deletion, and every retention counts (so the longest decides).
    for r in applicable:
        if r.retain_days is not None and now < start + timedelta(days=r.retain_days):
            return False
    if facts.extended_until is not None and now < facts.extended_until:
        return False
    # 4. Explicit over implicit, for deletions: incident flag > site > default.
    deletes = [r for r in applicable if r.delete_days is not None]
    if not deletes:
        return False

    def tier(r: Rule) -> int:
        return (2 if r.category == "incident" else 0) + (1 if r.site is not None else 0)

    best = max(tier(r) for r in deletes)
    # 5. Among equally explicit deletions, the shortest.
    shortest = min(r.delete_days for r in deletes if tier(r) == best and r.delete_days is not None)
    return now >= start + timedelta(days=shortest)
