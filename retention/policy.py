"""Retention categories, rules, and the defaults Countersign ships with.

A *rule* applies to one category of recording, either everywhere (the default,
``site=None``) or at one site (an explicit rule). It can say two things, each
counted in days from the start of the recording:

* ``retain_days``: keep the recording at least this long (a legal minimum);
* ``delete_days``: delete it once it is this old (data minimisation).

How several applicable rules combine follows Microsoft Purview's principles of
retention, in this order (``retention.decide`` implements them):

1. **A hold beats everything.** A recording covered by an active legal hold is
   kept, whatever the rules say.
2. **Retention wins over deletion.** A recording is never deleted while any
   applicable retain period (or an officer's explicit extension) still runs.
3. **The longest retention wins.** Of all applicable retain periods, site and
   default alike, the latest end counts. An officer's extension is one more
   retain period, so a shorter policy never shortens it.
4. **Explicit wins over implicit, for deletion.** Of the applicable delete
   periods, only the most explicit count: the incident rule (someone flagged
   this recording) over the rule for its ordinary category, and a site's rule
   over the default.
5. **Among equally explicit deletions, the shortest wins.**

The recording is deleted at the later of (its deletion date from 4-5) and (the
end of its longest retention from 2-3). With no applicable delete period it is
never deleted automatically (an officer may still delete it, hold permitting).

Consequences worth knowing: a *default* retain period is an organisation-wide
floor that no site can undercut; a site can shorten or lengthen the default
*deletion* period for its recordings. The shipped defaults have no retain
floors, so sites are free to choose; add floors where the law sets a minimum.

Categories: an incident-flagged recording is both ``incident`` and its ordinary
category (``routine``, ``interrupted`` or ``objection``); by principle 4 its
incident deletion period is the one that counts.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, get_args

Category = Literal["routine", "incident", "objection", "interrupted"]
CATEGORIES: tuple[Category, ...] = get_args(Category)
INCIDENT: Category = "incident"

MAX_DAYS = 36_500  # a century: anything longer is a typo, not a policy


class PolicyError(ValueError):
    """A retention rule that makes no sense."""


@dataclass(frozen=True, order=True)
class Rule:
    category: Category
    site: str | None = None  # None: the default for every site
    retain_days: int | None = None
    delete_days: int | None = None

    def __post_init__(self) -> None:
        if self.category not in CATEGORIES:
            raise PolicyError(f"unknown category {self.category!r} (one of {', '.join(CATEGORIES)})")
        if self.retain_days is None and self.delete_days is None:
            raise PolicyError("a rule needs a retain period, a delete period, or both")
        for name, value, low in (("retain_days", self.retain_days, 0), ("delete_days", self.delete_days, 1)):
            if value is not None and not (low <= value <= MAX_DAYS):
                raise PolicyError(f"{name} must be between {low} and {MAX_DAYS}")

    @property
    def scope(self) -> str:
        return "default" if self.site is None else f"site {self.site}"

    @property
    def label(self) -> str:
        """Short, stable name used in reasons, tombstones and the audit log."""
        return f"{self.scope}/{self.category}"

    def describe(self) -> str:
        parts = []
        if self.retain_days is not None:
            parts.append(f"retain {self.retain_days} d")
        if self.delete_days is not None:
            parts.append(f"delete after {self.delete_days} d")
        return f"{self.label}: {', '.join(parts)}"


# Shipped defaults (README "Retention"). Delete-only, so a site may shorten or
# lengthen them; incidents keep three years, the limitation period for tort
# claims in Japan (Civil Code art. 724), so evidence outlives a claim.
SHIPPED_DEFAULTS: tuple[Rule, ...] = (
    Rule("routine", delete_days=30),
    Rule("interrupted", delete_days=30),
    Rule("objection", delete_days=90),
    Rule("incident", delete_days=1095),
)


def effective_rules(stored: Iterable[Rule]) -> tuple[Rule, ...]:
    """The rules in force: what the administrators stored, plus shipped defaults they did not replace.

    A stored default for a category replaces the shipped default for it; at
    most one stored rule per (site, category) is kept (the last one given).
    """
    by_key: dict[tuple[str | None, str], Rule] = {(r.site, r.category): r for r in SHIPPED_DEFAULTS}
    for rule in stored:
        by_key[(rule.site, rule.category)] = rule
    return tuple(sorted(by_key.values(), key=lambda r: (r.site or "", r.category)))
