"""Administration: sites, users, devices. Administrators manage; they never read evidence."""

from __future__ import annotations

import uuid
from datetime import timedelta

from fastapi import APIRouter, HTTPException
from sqlalchemy import select

from api.core.audit import record_event
from api.core.deps import AdminDep, AnyPrincipal, Principal, ServicesDep, SessionDep
from api.core.models import Device, Site, User, UserSite, utcnow
from api.core.responses import AUTHED, AUTHENTICATED, BODY, answers
from api.core.tokens import new_enrolment_code, new_token, token_hash
from api.grants import NEEDS_APPROVAL
from api.schemas import (
    AccessChange,
    DeviceCreate,
    DeviceCreated,
    DevicePublic,
    SiteCreate,
    SitePublic,
    TokenRotated,
    UserCreate,
    UserCreated,
    UserPublic,
)
from evidence.audit_actions import Action

router = APIRouter(prefix="/v1", tags=["admin"])
NO_SITE = {404: "No such site."}
NO_USER = {404: "No such user."}
NO_DEVICE = {404: "No such device."}


def _require_site(session: SessionDep, site_id: str) -> Site:
    site = session.get(Site, site_id)
    if site is None:
        raise HTTPException(404, f"no site {site_id!r}")
    return site


@router.post(
    "/sites", status_code=201, response_model=SitePublic, responses=answers(AUTHED, BODY, {409: "The site exists."})
)
def add_site(body: SiteCreate, admin: AdminDep, session: SessionDep) -> SitePublic:
    if session.get(Site, body.id) is not None:
        raise HTTPException(409, f"site {body.id!r} exists")
    session.add(Site(id=body.id, name=body.name or body.id))
    record_event(session, actor=admin.actor, action=Action.SITE_CREATE, target=f"site:{body.id}")
    session.commit()
    return SitePublic(id=body.id, name=body.name or body.id)


@router.get("/sites", response_model=list[SitePublic], responses=AUTHED)
def list_sites(_admin: AdminDep, session: SessionDep) -> list[SitePublic]:
    return [SitePublic(id=s.id, name=s.name) for s in session.scalars(select(Site).order_by(Site.id))]


def user_public(user: User) -> UserPublic:
    return UserPublic(
        id=user.id,
        name=user.name,
        role=user.role,
        sites=user.site_ids,
        disabled=user.disabled,
        pending_approval=user.pending_approval,
        approved_by=user.approved_by,
    )


@router.post(
    "/users",
    status_code=201,
    response_model=UserCreated,
    responses=answers(AUTHED, BODY, NO_SITE, {409: "A user of that name exists."}),
)
def add_user(body: UserCreate, admin: AdminDep, session: SessionDep) -> UserCreated:
    if session.scalar(select(User).where(User.name == body.name)) is not None:
        raise HTTPException(409, f"user {body.name!r} exists")
    if body.role == "officer" and not body.sites:
        raise HTTPException(422, "an officer needs at least one site (--site)")
    for site_id in body.sites:
        _require_site(session, site_id)
    token = new_token("csu")
    # An officer's or auditor's token works only once a second person approves (api/grants.py).
    pending = body.role in NEEDS_APPROVAL
    user = User(
        id=str(uuid.uuid4()), name=body.name, role=body.role, token_hash=token_hash(token), pending_approval=pending
    )
    user.sites = [UserSite(site_id=s) for s in sorted(set(body.sites))]
    session.add(user)
    record_event(
        session,
        actor=admin.actor,
        action=Action.USER_CREATE,
        target=f"user:{user.id}",
        detail={"role": body.role, "sites": sorted(set(body.sites)), "pending_approval": pending},
    )
    session.commit()
    return UserCreated(**user_public(user).model_dump(), token=token)


@router.get("/users", response_model=list[UserPublic], responses=AUTHED)
def list_users(_admin: AdminDep, session: SessionDep) -> list[UserPublic]:
    return [user_public(u) for u in session.scalars(select(User).order_by(User.name))]


@router.post("/devices", status_code=201, response_model=DeviceCreated, responses=answers(AUTHED, BODY, NO_SITE))
def add_device(body: DeviceCreate, admin: AdminDep, session: SessionDep, services: ServicesDep) -> DeviceCreated:
    _require_site(session, body.site)
    code = new_enrolment_code()
    expires = utcnow() + timedelta(seconds=services.settings.enrolment_ttl_seconds)
    device = Device(
        id=str(uuid.uuid4()),
        name=body.name,
        site_id=body.site,
        enrol_code_hash=token_hash(code),
        enrol_expires_at=expires,
    )
    session.add(device)
    record_event(session, actor=admin.actor, action=Action.DEVICE_CREATE, target=f"device:{device.id}")
    session.commit()
    return DeviceCreated(
        id=device.id,
        name=device.name,
        site=device.site_id,
        enrolled=False,
        enrolment_code=code,
        enrolment_expires_at=expires,
    )


def device_public(d: Device) -> DevicePublic:
    return DevicePublic(id=d.id, name=d.name, site=d.site_id, enrolled=d.enrolled_at is not None, disabled=d.disabled)


@router.get("/devices", response_model=list[DevicePublic], responses=AUTHED)
def list_devices(_admin: AdminDep, session: SessionDep) -> list[DevicePublic]:
    return [device_public(d) for d in session.scalars(select(Device).order_by(Device.name))]


# --------------------------------------------------------------------------- revoking and restoring access
# Disabling is immediate (every request authenticates afresh) and keeps everything the user or
# device did: a revoked device's uploads are refused, what it uploaded before stays evidence.


def _user(session: SessionDep, user_id: str) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise HTTPException(404, "no such user")
    return user


def _device(session: SessionDep, device_id: str) -> Device:
    device = session.get(Device, device_id)
    if device is None:
        raise HTTPException(404, "no such device")
    return device


def _switch(session: SessionDep, admin: Principal, row: User | Device, disabled: bool, reason: str) -> None:
    """Disable or enable a user or a device, audited with the admin's reason."""
    kind = "user" if isinstance(row, User) else "device"
    row.disabled = disabled
    action = {
        ("user", True): Action.USER_DISABLE,
        ("user", False): Action.USER_ENABLE,
        ("device", True): Action.DEVICE_DISABLE,
        ("device", False): Action.DEVICE_ENABLE,
    }[(kind, disabled)]
    record_event(session, actor=admin.actor, action=action, target=f"{kind}:{row.id}", purpose=reason)
    session.commit()


@router.post(
    "/users/{user_id}/disable",
    response_model=UserPublic,
    responses=answers(AUTHED, BODY, NO_USER, {409: "Administrators cannot disable themselves."}),
)
def disable_user(user_id: str, body: AccessChange, admin: AdminDep, session: SessionDep) -> UserPublic:
    user = _user(session, user_id)
    if user.id == admin.id:
        raise HTTPException(409, "you cannot disable yourself; another admin can")
    _switch(session, admin, user, True, body.reason)
    return user_public(user)


@router.post("/users/{user_id}/enable", response_model=UserPublic, responses=answers(AUTHED, BODY, NO_USER))
def enable_user(user_id: str, body: AccessChange, admin: AdminDep, session: SessionDep) -> UserPublic:
    user = _user(session, user_id)
    _switch(session, admin, user, False, body.reason)
    return user_public(user)


@router.post("/devices/{device_id}/disable", response_model=DevicePublic, responses=answers(AUTHED, BODY, NO_DEVICE))
def disable_device(device_id: str, body: AccessChange, admin: AdminDep, session: SessionDep) -> DevicePublic:
    device = _device(session, device_id)
    _switch(session, admin, device, True, body.reason)
    return device_public(device)


@router.post("/devices/{device_id}/enable", response_model=DevicePublic, responses=answers(AUTHED, BODY, NO_DEVICE))
def enable_device(device_id: str, body: AccessChange, admin: AdminDep, session: SessionDep) -> DevicePublic:
    device = _device(session, device_id)
    _switch(session, admin, device, False, body.reason)
    return device_public(device)


@router.post(
    "/token",
    response_model=TokenRotated,
    responses=answers(AUTHENTICATED, {404: "The account is gone (deleted just now)."}),
)
def rotate_own_token(principal: AnyPrincipal, session: SessionDep) -> TokenRotated:
    """Replace the caller's own token (users and devices). Nobody can mint a token for someone else:
    an administrator who could would hold that officer's access to evidence."""
    token = new_token("csd" if principal.kind == "device" else "csu")
    row: Device | User | None = session.get(Device, principal.id) if principal.kind == "device" else None
    if principal.kind != "device":
        row = session.get(User, principal.id)
    if row is None:  # authenticated a moment ago; gone since
        raise HTTPException(404, "no such account")
    row.token_hash = token_hash(token)
    record_event(session, actor=principal.actor, action=Action.TOKEN_ROTATE, target=principal.actor)
    session.commit()
    return TokenRotated(token=token)
