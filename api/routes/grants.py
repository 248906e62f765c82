"""Approving access: a second person confirms an officer's or auditor's grant (rules in api/grants.py)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request

from api import grants
from api.core.deps import Principal, ServicesDep, SessionDep, deny, require
from api.core.models import User
from api.core.responses import AUTHED, INPUT, answers
from api.routes.admin import user_public
from api.schemas import UserPublic

router = APIRouter(prefix="/v1", tags=["admin"])
Approver = Annotated[Principal, Depends(require("officer", "auditor"))]


@router.get("/grants", response_model=list[UserPublic], responses=answers(AUTHED, INPUT))
def pending_grants(approver: Approver, session: SessionDep) -> list[UserPublic]:
    """Officers and auditors awaiting approval that the caller could approve."""
    return [user_public(u) for u in grants.pending_for(session, approver.role, approver.sites)]


@router.post(
    "/users/{user_id}/approve",
    response_model=UserPublic,
    responses=answers(
        AUTHED,
        INPUT,
        {404: "No such user.", 409: "The user's access is not waiting for approval."},
    ),
)
def approve_grant(
    user_id: str, request: Request, approver: Approver, session: SessionDep, services: ServicesDep
) -> UserPublic:
    """Approve an officer's or auditor's access (an auditor, or an officer of every site it names)."""
    user = session.get(User, user_id)
    if user is None:
        raise HTTPException(404, "no such user")
    why = grants.may_approve(approver.role, approver.sites, approver.id, user)
    if why is not None:
        raise deny(services, request, 403, why, approver.actor)
    try:
        grants.approve(session, user, approver=approver.actor)
    except grants.GrantRefused as exc:
        raise HTTPException(exc.status, str(exc)) from exc
    session.commit()
    return user_public(user)
