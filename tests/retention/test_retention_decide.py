"""retention.decide: named cases for every precedence rule, an exhaustive grid, and hypothesis properties.

The oracle (tests/retention_reference.py) states the rules as a yes/no question
at one instant; decide() computes a date. They must agree everywhere.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from retention.decide import HoldFacts, Keep, Purge, RecordingFacts, decide, hold_covers, retain_until
from retention.policy import CATEGORIES, SHIPPED_DEFAULTS, PolicyError, Rule, effective_rules
from tests.support.retention_reference import ref_covers, ref_may_purge

T0 = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)
US = timedelta(microseconds=1)


def rec(
    status: str = "complete",
    incident: str | None = None,
    site: str = "north",
    device: str = "dev-1",
    extended: datetime | None = None,
    rid: str = "r1",
    started: datetime = T0,
) -> RecordingFacts:
    return RecordingFacts(rid, site, device, started, status, incident, extended)


def until(facts: RecordingFacts, rules: tuple[Rule, ...] = SHIPPED_DEFAULTS) -> datetime | None:
    return retain_until(facts, rules).until


# --------------------------------------------------------------------------- named cases


@pytest.mark.parametrize(
    ("facts", "days"),
    [
        pytest.param(rec("complete"), 30, id="routine-30"),
        pytest.param(rec("interrupted"), 30, id="interrupted-30"),
        pytest.param(rec("objected"), 90, id="objection-90"),
        pytest.param(rec("complete", "verbal-abuse"), 1095, id="incident-1095"),
        pytest.param(rec("interrupted", "threat"), 1095, id="interrupted-incident-1095"),
        pytest.param(rec("objected", "threat"), 1095, id="objection-incident-1095"),
    ],
)
def test_shipped_defaults(facts: RecordingFacts, days: int) -> None:
    schedule = retain_until(facts, SHIPPED_DEFAULTS)
    assert schedule.until == T0 + days * DAY
    assert schedule.rule is not None and schedule.rule.startswith("default/")
    assert decide(facts, SHIPPED_DEFAULTS, [], T0 + days * DAY - US) == Keep(schedule.reason, until=schedule.until)
    purge = decide(facts, SHIPPED_DEFAULTS, [], T0 + days * DAY)
    assert isinstance(purge, Purge) and purge.rule == schedule.rule


def R(category: str, site: str | None = None, retain: int | None = None, delete: int | None = None) -> Rule:
    return Rule(category, site, retain, delete)  # type: ignore[arg-type]


PRECEDENCE = [
    # (id, rules, facts, expected days from start or None, expected rule label)
    (
        "site-shorter-delete-wins",
        [R("routine", delete=30), R("routine", "north", delete=14)],
        rec(),
        14,
        "site north/routine",
    ),
    (
        "site-longer-delete-wins",
        [R("routine", delete=30), R("routine", "north", delete=60)],
        rec(),
        60,
        "site north/routine",
    ),
    (
        "other-site-rule-ignored",
        [R("routine", delete=30), R("routine", "south", delete=5)],
        rec(),
        30,
        "default/routine",
    ),
    ("retain-beats-delete", [R("routine", retain=7), R("routine", "north", delete=3)], rec(), 7, "site north/routine"),
    (
        "site-retain-beats-default-delete",
        [R("routine", delete=30), R("routine", "north", retain=400)],
        rec(),
        400,
        "default/routine",
    ),
    (
        "longest-retention-wins",
        [R("routine", retain=100, delete=1), R("routine", "north", retain=50)],
        rec(),
        100,
        "default/routine",
    ),
    (
        "default-floor-not-undercut",
        [R("incident", retain=1095), R("incident", "north", delete=365)],
        rec(incident="x"),
        1095,
        "site north/incident",
    ),
    (
        "flag-beats-base-delete",
        [R("routine", delete=30), R("incident", delete=1095)],
        rec(incident="x"),
        1095,
        "default/incident",
    ),
    (
        "flag-beats-site-base-delete",
        [R("routine", "north", delete=10), R("incident", delete=1095)],
        rec(incident="x"),
        1095,
        "default/incident",
    ),
    (
        "site-incident-beats-default-incident",
        [R("incident", delete=1095), R("incident", "north", delete=365)],
        rec(incident="x"),
        365,
        "site north/incident",
    ),
    (
        "base-retain-still-counts-when-flagged",
        [R("routine", retain=2000, delete=30), R("incident", delete=1095)],
        rec(incident="x"),
        2000,
        "default/incident",
    ),
    ("shortest-among-equals", [R("routine", delete=40), R("routine", delete=20)], rec(), 20, "default/routine"),
    ("retain-only-never-deleted", [R("routine", retain=30)], rec(), None, None),
    ("no-rule-never-deleted", [R("objection", delete=5)], rec(), None, None),
    ("zero-retain-is-no-floor", [R("routine", retain=0, delete=3)], rec(), 3, "default/routine"),
]


@pytest.mark.parametrize(("rules", "facts", "days", "rule"), [pytest.param(*c[1:], id=c[0]) for c in PRECEDENCE])
def test_precedence(rules: list[Rule], facts: RecordingFacts, days: int | None, rule: str | None) -> None:
    schedule = retain_until(facts, rules)
    assert schedule.until == (None if days is None else T0 + days * DAY)
    assert schedule.rule == rule
    far = T0 + 10_000 * DAY
    assert isinstance(decide(facts, rules, [], far), Purge) == (days is not None)
    for probe in (T0, far) if days is None else (T0 + days * DAY - US, T0 + days * DAY):
        assert isinstance(decide(facts, rules, [], probe), Purge) == ref_may_purge(facts, rules, [], probe)


def test_extension_beats_policy_and_policy_never_shortens_it() -> None:
    later = T0 + 400 * DAY
    facts = rec(extended=later)
    assert until(facts) == later
    assert "extended by an officer" in retain_until(facts, SHIPPED_DEFAULTS).reason
    assert until(facts, (R("routine", delete=5),)) == later  # a shorter policy later
    assert until(rec(extended=T0 + 5 * DAY)) == T0 + 30 * DAY  # an extension shorter than policy changes nothing
    assert until(rec(extended=later), (R("routine", retain=30),)) is None  # extension is retention, not deletion


def test_open_recording_is_kept() -> None:
    assert decide(rec("open"), SHIPPED_DEFAULTS, [], T0 + 10_000 * DAY) == Keep("still recording")


def test_reasons_name_the_rule() -> None:
    purge = decide(rec(), SHIPPED_DEFAULTS, [], T0 + 31 * DAY)
    assert isinstance(purge, Purge)
    assert purge.rule == "default/routine" and "default/routine: delete after 30 d" in purge.reason
    keep = decide(rec(incident="x"), SHIPPED_DEFAULTS, [], T0)
    assert isinstance(keep, Keep) and "default/incident" in keep.reason and keep.until == T0 + 1095 * DAY


# --------------------------------------------------------------------------- holds


def hold(**fields: object) -> HoldFacts:
    return HoldFacts(**{"id": "h1", "case_ref": "CASE-1", **fields})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("h", "covers"),
    [
        pytest.param(hold(recording_ids=frozenset({"r1"})), True, id="explicit"),
        pytest.param(hold(recording_ids=frozenset({"r2"})), False, id="explicit-other"),
        pytest.param(hold(recording_ids=frozenset({"r1"}), active=False), False, id="released"),
        pytest.param(hold(site="north"), False, id="not-scoped-site-only-owner"),
        pytest.param(hold(scoped=True, site="north"), True, id="site"),
        pytest.param(hold(scoped=True, site="south"), False, id="other-site"),
        pytest.param(hold(scoped=True, site="north", device="dev-1"), True, id="device"),
        pytest.param(hold(scoped=True, site="north", device="dev-2"), False, id="other-device"),
        pytest.param(hold(scoped=True, site="north", started_from=T0), True, id="from-inclusive"),
        pytest.param(hold(scoped=True, site="north", started_from=T0 + US), False, id="from-after"),
        pytest.param(hold(scoped=True, site="north", started_to=T0), False, id="to-exclusive"),
        pytest.param(hold(scoped=True, site="north", started_to=T0 + US), True, id="to-after"),
        pytest.param(hold(scoped=True, site="north", incident_category="threat"), True, id="category"),
        pytest.param(hold(scoped=True, site="north", incident_category="noise"), False, id="other-category"),
        pytest.param(hold(scoped=True, site="south", recording_ids=frozenset({"r1"})), True, id="explicit-or-scope"),
    ],
)
def test_hold_covers(h: HoldFacts, covers: bool) -> None:
    facts = rec(incident="threat")
    assert hold_covers(h, facts) is covers
    assert ref_covers(h, facts) is covers
    verdict = decide(facts, SHIPPED_DEFAULTS, [h], T0 + 100_000 * DAY)  # far past every date
    assert isinstance(verdict, Keep) is covers
    if covers:
        assert verdict == Keep("held: CASE-1", holds=("CASE-1",))


def test_several_holds_any_active_one_holds() -> None:
    h1 = hold(recording_ids=frozenset({"r1"}))
    h2 = HoldFacts("h2", "CASE-2", scoped=True, site="north")
    h3 = HoldFacts("h3", "CASE-3", active=False, recording_ids=frozenset({"r1"}))
    far = T0 + 100_000 * DAY
    assert decide(rec(), SHIPPED_DEFAULTS, [h1, h2, h3], far) == Keep(
        "held: CASE-1, CASE-2", holds=("CASE-1", "CASE-2")
    )
    assert decide(rec(), SHIPPED_DEFAULTS, [h2, h3], far).holds == ("CASE-2",)  # type: ignore[union-attr]
    assert isinstance(decide(rec(), SHIPPED_DEFAULTS, [h3], far), Purge)


def test_rule_validation() -> None:
    with pytest.raises(PolicyError, match="unknown category"):
        R("shouting", delete=1)
    with pytest.raises(PolicyError, match="retain period, a delete period"):
        R("routine")
    with pytest.raises(PolicyError, match="delete_days"):
        R("routine", delete=0)
    with pytest.raises(PolicyError, match="retain_days"):
        R("routine", retain=-1)


def test_effective_rules_stored_replace_shipped() -> None:
    rules = effective_rules([R("routine", delete=7), R("routine", "north", delete=3)])
    assert R("routine", delete=7) in rules and R("routine", delete=30) not in rules
    assert R("routine", "north", delete=3) in rules
    assert {r.category for r in rules if r.site is None} == set(CATEGORIES)


# --------------------------------------------------------------------------- exhaustive grid

# Every slot (category x scope) independently absent or one of three rule shapes.
SLOTS = [("routine", None), ("routine", "north"), ("incident", None), ("incident", "north"), ("interrupted", None)]
SHAPES: list[tuple[int | None, int | None] | None] = [None, (None, 20), (10, None), (40, 5)]
# Every boundary the shapes and extensions can produce (5, 10, 15, 20, 40, 50 days), either side of it.
NOWS = [T0 + d * DAY + e for d in (0, 5, 10, 15, 20, 40, 50) for e in (-US, timedelta(0))]


def _rule_sets() -> list[tuple[Rule, ...]]:
    sets = []
    for shapes in itertools.product(SHAPES, repeat=len(SLOTS)):
        sets.append(
            tuple(R(cat, site, *shape) for (cat, site), shape in zip(SLOTS, shapes, strict=True) if shape is not None)
        )
    return sets


def test_exhaustive_grid_agrees_with_reference() -> None:
    """1024 rule sets x 12 recordings x 14 instants x 3 hold states: decide() == reference; its date is exact."""
    recordings = [
        rec(status, incident, extended=ext)
        for status in ("complete", "interrupted")
        for incident in (None, "threat")
        for ext in (None, T0 + 15 * DAY, T0 + 50 * DAY)
    ]
    holds = [[], [hold(scoped=True, site="north")], [hold(scoped=True, site="north", active=False)]]
    checked = 0
    for rules in _rule_sets():
        for facts in recordings:
            schedule = retain_until(facts, rules)
            for hs in holds:
                for now in NOWS:
                    verdict = decide(facts, rules, hs, now)
                    expected = ref_may_purge(facts, rules, hs, now)
                    assert isinstance(verdict, Purge) is expected, (rules, facts, hs, now, verdict)
                    if not hs or not hs[0].active:
                        # The stored date is exactly where the answer flips.
                        assert expected is (schedule.until is not None and now >= schedule.until)
                    checked += 1
    assert checked == 1024 * 12 * 3 * len(NOWS)


# --------------------------------------------------------------------------- hypothesis

days = st.integers(min_value=0, max_value=4000)
maybe_days = st.none() | days
sites = st.sampled_from(["north", "south"])


@st.composite
def rules_st(draw: st.DrawFn) -> list[Rule]:
    out = []
    for _ in range(draw(st.integers(0, 8))):
        retain, delete = draw(maybe_days), draw(st.none() | st.integers(1, 4000))
        if retain is None and delete is None:
            continue
        out.append(R(draw(st.sampled_from(CATEGORIES)), draw(st.none() | sites), retain, delete))
    return out


instants = st.integers(min_value=-400, max_value=5000).map(lambda d: T0 + d * DAY) | st.builds(
    lambda d, s: T0 + d * DAY + timedelta(seconds=s), st.integers(-10, 5000), st.integers(0, 86399)
)
facts_st = st.builds(
    RecordingFacts,
    id=st.sampled_from(["r1", "r2"]),
    site=sites,
    device=st.sampled_from(["dev-1", "dev-2"]),
    started_at=instants,
    status=st.sampled_from(["open", "complete", "interrupted", "objected"]),
    incident_category=st.none() | st.sampled_from(["threat", "noise"]),
    extended_until=st.none() | instants,
)
holds_st = st.lists(
    st.builds(
        HoldFacts,
        id=st.just("h"),
        case_ref=st.sampled_from(["C-1", "C-2", "C-3"]),
        active=st.booleans(),
        recording_ids=st.frozensets(st.sampled_from(["r1", "r2"]), max_size=2),
        scoped=st.booleans(),
        site=st.none() | sites,
        device=st.none() | st.sampled_from(["dev-1", "dev-2"]),
        started_from=st.none() | instants,
        started_to=st.none() | instants,
        incident_category=st.none() | st.sampled_from(["threat", "noise"]),
    ),
    max_size=3,
)


@settings(max_examples=400, deadline=None)
@given(facts=facts_st, rules=rules_st(), holds=holds_st, now=instants)
def test_decide_agrees_with_reference(
    facts: RecordingFacts, rules: list[Rule], holds: list[HoldFacts], now: datetime
) -> None:
    verdict = decide(facts, rules, holds, now)
    assert isinstance(verdict, Purge) is ref_may_purge(facts, rules, holds, now)
    if isinstance(verdict, Keep) and any(ref_covers(h, facts) for h in holds):
        assert verdict.held and set(verdict.holds) == {h.case_ref for h in holds if ref_covers(h, facts)}


@settings(max_examples=300, deadline=None)
@given(facts=facts_st, rules=rules_st(), now=instants, later=st.integers(0, 5000))
def test_once_purgeable_stays_purgeable(facts: RecordingFacts, rules: list[Rule], now: datetime, later: int) -> None:
    if isinstance(decide(facts, rules, [], now), Purge):
        assert isinstance(decide(facts, rules, [], now + later * DAY), Purge)


@settings(max_examples=300, deadline=None)
@given(facts=facts_st, rules=rules_st(), holds=holds_st, now=instants)
def test_a_hold_only_ever_keeps(
    facts: RecordingFacts, rules: list[Rule], holds: list[HoldFacts], now: datetime
) -> None:
    if isinstance(decide(facts, rules, holds, now), Keep) and not isinstance(decide(facts, rules, [], now), Keep):
        assert any(hold_covers(h, facts) for h in holds)
    covering = HoldFacts("hx", "C-X", recording_ids=frozenset({facts.id}))
    assert isinstance(decide(facts, rules, [*holds, covering], now), Keep)


@settings(max_examples=300, deadline=None)
@given(facts=facts_st, rules=rules_st(), new_rules=rules_st(), ext=instants)
def test_no_policy_shortens_an_extension(
    facts: RecordingFacts, rules: list[Rule], new_rules: list[Rule], ext: datetime
) -> None:
    extended = RecordingFacts(**{**facts.__dict__, "extended_until": ext})
    for rs in (rules, new_rules):
        schedule = retain_until(extended, rs)
        assert schedule.until is None or schedule.until >= ext


@settings(max_examples=300, deadline=None)
@given(facts=facts_st, rules=rules_st(), extra_retain=days, category=st.sampled_from(CATEGORIES))
def test_adding_a_retain_rule_never_brings_a_date_forward(
    facts: RecordingFacts, rules: list[Rule], extra_retain: int, category: str
) -> None:
    before = retain_until(facts, rules).until
    after = retain_until(facts, [*rules, R(category, None, extra_retain, None)]).until
    assert (before is None and after is None) or (before is not None and after is not None and after >= before)
