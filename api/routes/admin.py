"""Administration: sites, users, devices. Administrators manage; they never read evidence."""

from __future__ import annotations

import uuid
from datetime import timedelta

from fastapi import APIRouter, HTTPException
from sqlalchemy import select

from api.core.audit import record_event
from api.core.models import Device, Site, User, UserSite, utcnow
from api.core.tokens import new_enrolment_code, new_token, token_hash
from api.deps import AdminDep, ServicesDep, SessionDep
from api.schemas import (
    DeviceCreate,
    DeviceCreated,
    DevicePublic,
    SiteCreate,
    SitePublic,
    UserCreate,
    UserCreated,
    UserPublic,
)
from evidence.audit_actions import Action

router = APIRouter(prefix="/v1", tags=["admin"])


def _require_site(session: SessionDep, site_id: str) -> Site:
    site = session.get(Site, site_id)
    if site is None:
        raise HTTPException(404, f"no site {site_id!r}")
    return site


@router.post("/sites", status_code=201, response_model=SitePublic)
def add_site(body: SiteCreate, admin: AdminDep, session: SessionDep) -> SitePublic:
    if session.get(Site, body.id) is not None:
        raise HTTPException(409, f"site {body.id!r} exists")
    session.add(Site(id=body.id, name=body.name or body.id))
    record_event(session, actor=admin.actor, action=Action.SITE_CREATE, target=f"site:{body.id}")
    session.commit()
    return SitePublic(id=body.id, name=body.name or body.id)


@router.get("/sites", response_model=list[SitePublic])
def list_sites(_admin: AdminDep, session: SessionDep) -> list[SitePublic]:
    return [SitePublic(id=s.id, name=s.name) for s in session.scalars(select(Site).order_by(Site.id))]


def _user_public(user: User) -> UserPublic:
    return UserPublic(id=user.id, name=user.name, role=user.role, sites=user.site_ids)


@router.post("/users", status_code=201, response_model=UserCreated)
def add_user(body: UserCreate, admin: AdminDep, session: SessionDep) -> UserCreated:
    if session.scalar(select(User).where(User.name == body.name)) is not None:
        raise HTTPException(409, f"user {body.name!r} exists")
    if body.role == "officer" and not body.sites:
        raise HTTPException(422, "an officer needs at least one site (--site)")
    for site_id in body.sites:
        _require_site(session, site_id)
    token = new_token("csu")
    user = User(id=str(uuid.uuid4()), name=body.name, role=body.role, token_hash=token_hash(token))
    user.sites = [UserSite(site_id=s) for s in sorted(set(body.sites))]
    session.add(user)
    record_event(
        session, actor=admin.actor, action=Action.USER_CREATE, target=f"user:{user.id}", detail={"role": body.role}
    )
    session.commit()
    return UserCreated(**_user_public(user).model_dump(), token=token)


@router.get("/users", response_model=list[UserPublic])
def list_users(_admin: AdminDep, session: SessionDep) -> list[UserPublic]:
    return [_user_public(u) for u in session.scalars(select(User).order_by(User.name))]


@router.post("/devices", status_code=201, response_model=DeviceCreated)
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


@router.get("/devices", response_model=list[DevicePublic])
def list_devices(_admin: AdminDep, session: SessionDep) -> list[DevicePublic]:
    return [
        DevicePublic(id=d.id, name=d.name, site=d.site_id, enrolled=d.enrolled_at is not None)
        for d in session.scalars(select(Device).order_by(Device.name))
    ]
