"""Granting access to evidence takes two people.

An administrator creates officers and auditors, but their tokens work only once a
second person has approved the grant: for an officer, an auditor or an officer of
every site the grant names; for an auditor, another auditor. Nobody approves their
own grant, and administrators approve nothing, so no single administrator can give
anyone (themselves included) access to evidence or to the access log. The first
auditor of a new service is approved on the server itself
(`countersign server approve-user`, which needs the data directory and its key
passphrase, the service's root of trust anyway). Every creation and approval is an
audit entry; GET /v1/grants shows officers and auditors what awaits them.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.core.audit import record_event
from api.core.models import User, utcnow
from evidence.audit_actions import Action

NEEDS_APPROVAL = frozenset({"officer", "auditor"})


class GrantRefused(Exception):
    """This grant cannot be approved by this person"""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def may_approve(approver_role: str, approver_sites: frozenset[str], approver_id: str, user: User) -> str | None:
    """None if the approver may approve `user`'s grant; otherwise why not."""
    if approver_id == user.id:
        return "nobody approves their own access"
    if user.role == "auditor":
        return None if approver_role == "auditor" else "an auditor's access is approved by another auditor"
    if approver_role == "auditor":
        return None
    missing = set(user.site_ids) - approver_sites
    if approver_role == "officer" and not missing:
        return None
    return f"approving this is outside your scope: an auditor or an officer of {', '.join(sorted(missing))} approves"


def approve(session: Session, user: User, *, approver: str) -> None:
    if not user.pending_approval:
        raise GrantRefused(409, f"{user.name}'s access is not waiting for approval")
    user.pending_approval, user.approved_by, user.approved_at = False, approver, utcnow()
    record_event(
        session,
        actor=approver,
        action=Action.USER_APPROVE,
        target=f"user:{user.id}",
        detail={"name": user.name, "role": user.role, "sites": user.site_ids},
    )


def pending_for(session: Session, role: str, sites: frozenset[str]) -> list[User]:
    """The grants waiting that this officer or auditor could approve (and should hear about)."""
    rows = session.scalars(select(User).where(User.pending_approval.is_(True)).order_by(User.created_at))
    if role == "auditor":
        return list(rows)
    return [u for u in rows if u.role == "officer" and set(u.site_ids) & sites]
