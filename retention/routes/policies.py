"""Retention policies: administrators set them (they never read or delete evidence).

Setting or clearing a rule recomputes, in the same transaction, the stored
retain-until date of every live recording the rule can apply to, and one audit
entry records the change and how many dates moved. Precedence between rules
is documented in retention.policy.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from sqlalchemy import select

from api.core.audit import record_event
from api.core.deps import AdminDep, SessionDep
from api.core.models import Site, utcnow
from api.core.responses import AUTHED, BODY, INPUT, answers
from evidence.audit_actions import Action
from retention.models import RetentionPolicy
from retention.policy import SHIPPED_DEFAULTS, PolicyError, Rule
from retention.schemas import CategoryName, PolicyChange, PolicyPublic, PolicySet
from retention.store import DEFAULT_SCOPE, recompute_for_rule

router = APIRouter(prefix="/v1/policies", tags=["policies"])
NO_SITE = {404: "No such site."}
NO_RULE = {404: "No stored rule for that category there."}


def _stored_public(row: RetentionPolicy) -> PolicyPublic:
    return PolicyPublic(
        category=row.category,
        site=None if row.scope == DEFAULT_SCOPE else row.scope,
        retain_days=row.retain_days,
        delete_days=row.delete_days,
        source="stored",
        updated_at=row.updated_at,
        updated_by=row.updated_by,
    )


def _shipped_public(rule: Rule) -> PolicyPublic:
    return PolicyPublic(
        category=rule.category, site=None, retain_days=rule.retain_days, delete_days=rule.delete_days, source="shipped"
    )


def _in_force(session: SessionDep, scope: str, category: str) -> PolicyPublic | None:
    row = session.get(RetentionPolicy, (scope, category))
    if row is not None:
        return _stored_public(row)
    if scope == DEFAULT_SCOPE:
        return next(_shipped_public(r) for r in SHIPPED_DEFAULTS if r.category == category)
    return None


def _rule_dict(p: PolicyPublic | None) -> dict[str, object] | None:
    return None if p is None else {"retain_days": p.retain_days, "delete_days": p.delete_days, "source": p.source}


@router.get("", response_model=list[PolicyPublic], responses=answers(AUTHED, INPUT))
def show_policies(_admin: AdminDep, session: SessionDep, site: str | None = None) -> list[PolicyPublic]:
    """The rules in force: defaults (stored or shipped) and every site's explicit rules."""
    stored = list(session.scalars(select(RetentionPolicy)))
    stored_defaults = {r.category for r in stored if r.scope == DEFAULT_SCOPE}
    rules = [_shipped_public(r) for r in SHIPPED_DEFAULTS if r.category not in stored_defaults]
    rules += [_stored_public(r) for r in stored if site is None or r.scope in (site, DEFAULT_SCOPE)]
    return sorted(rules, key=lambda p: (p.site or "", p.category))


@router.put("", response_model=PolicyChange, responses=answers(AUTHED, BODY, NO_SITE))
def set_policy(body: PolicySet, admin: AdminDep, session: SessionDep) -> PolicyChange:
    """Set the rule for a category, by default or at one site; recompute affected recordings."""
    try:
        Rule(body.category, body.site, body.retain_days, body.delete_days)
    except PolicyError as exc:
        raise HTTPException(422, str(exc)) from exc
    if body.site is not None and session.get(Site, body.site) is None:
        raise HTTPException(404, f"no site {body.site!r}")
    scope = body.site or DEFAULT_SCOPE
    before = _in_force(session, scope, body.category)
    row = session.get(RetentionPolicy, (scope, body.category))
    if row is None:
        row = RetentionPolicy(scope=scope, category=body.category, updated_by=admin.actor)
        session.add(row)
    row.retain_days, row.delete_days = body.retain_days, body.delete_days
    row.updated_at, row.updated_by = utcnow(), admin.actor
    session.flush()
    recomputed = recompute_for_rule(session, body.site, body.category)
    after = _stored_public(row)
    record_event(
        session,
        actor=admin.actor,
        action=Action.POLICY_SET,
        target=f"policy:{scope}/{body.category}",
        detail={"before": _rule_dict(before), "after": _rule_dict(after), "recomputed": recomputed},
    )
    session.commit()
    return PolicyChange(rule=after, recomputed=recomputed)


@router.delete("", response_model=PolicyChange, responses=answers(AUTHED, INPUT, NO_RULE))
def clear_policy(
    category: CategoryName,
    admin: AdminDep,
    session: SessionDep,
    site: Annotated[str | None, Query(description="Omit to restore the shipped default.")] = None,
) -> PolicyChange:
    """Remove a stored rule: a site falls back to the default, a stored default to the shipped one."""
    scope = site or DEFAULT_SCOPE
    row = session.get(RetentionPolicy, (scope, category))
    if row is None:
        raise HTTPException(404, f"no stored rule for {category} at {'the default' if site is None else site}")
    before = _stored_public(row)
    session.delete(row)
    session.flush()
    recomputed = recompute_for_rule(session, site, category)
    after = _in_force(session, scope, category)
    record_event(
        session,
        actor=admin.actor,
        action=Action.POLICY_CLEAR,
        target=f"policy:{scope}/{category}",
        detail={"before": _rule_dict(before), "after": _rule_dict(after), "recomputed": recomputed},
    )
    session.commit()
    return PolicyChange(rule=after, recomputed=recomputed)
