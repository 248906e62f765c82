"""Administrators' pages: users (create, disable, enable, a new console sign-in), devices (add, with
the enrolment code and its QR code, disable, enable, last seen, spool state), sites and their
incident categories, retention policies, and notices.

Administrators only: an officer or auditor gets the logged 403 page (guard.signed_in_as). Every
change calls the API's own route function (api/routes/admin.py, alerts.py, notices.py,
retention/routes/policies.py) with the administrator as the principal, so its rules, refusals and
audit entries are exactly the API's. A new console sign-in is api.console.accounts.provision,
audited there (CONSOLE_LOGIN_SET, the administrator as actor); an officer's or auditor's access
then awaits a second person's approval again (new_credentials).

What is shown once (a new password and TOTP secret, an enrolment code) is in the answer to the
POST that made it, never stored in clear and never on a page one can open again: reloading the
list shows nothing of it. None of these pages reads recordings, audio or notes.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast, get_args

import segno
from fastapi import APIRouter, Request
from fastapi.responses import Response
from markupsafe import Markup
from sqlalchemy import select

from api.alerts.schemas import AlertingUpdate
from api.console import accounts, render
from api.console.csrf import Form
from api.console.guard import PREFIX, Refused, as_page, form_as, see_other, signed_in_as
from api.console.sessions import ConsoleUser
from api.core.audit import record_event
from api.core.deps import ServicesDep
from api.core.models import ConsoleLogin, DeviceHealth, User
from api.grants import NEEDS_APPROVAL
from api.routes.admin import (
    add_device,
    add_site,
    add_user,
    disable_device,
    disable_user,
    enable_device,
    enable_user,
    list_devices,
    list_sites,
    list_users,
)
from api.routes.alerts import set_alerting, show_alerting
from api.routes.enrol import notices
from api.routes.notices import add_notice
from api.schemas import AccessChange, DeviceCreate, NoticeCreate, SiteCreate, UserCreate
from evidence.audit_actions import Action
from retention.routes.policies import clear_policy, set_policy, show_policies
from retention.schemas import CategoryName, PolicySet

ADMIN = "admin"
# Path ids are plain strings, as the API's: an id that names nobody (a malformed one too) is the API's
# 404, on the console's page, after the role and CSRF checks.
CATEGORIES: tuple[str, ...] = get_args(CategoryName)  # a retention rule's categories
router = APIRouter(prefix=f"{PREFIX}/admin", include_in_schema=False)


def qr_svg(data: str) -> Markup:
    """`data` as a QR code, an inline SVG drawn by segno.

    Marked safe because segno builds it from the QR matrix alone: its only text is its own markup
    (numbers and path letters), never `data` itself, and it styles with stroke attributes, not a
    style attribute, so the page's style-src 'self' allows it."""
    return Markup(segno.make(data, error="m").svg_inline(scale=4, border=4, title=None))


def _sites_of(field: str) -> list[str]:
    """The sites typed in a form, comma- or space-separated ("north, south")."""
    return [s for s in field.replace(",", " ").split() if s]


def _reason(form: dict[str, str]) -> AccessChange:
    return AccessChange(reason=form.get("reason", "").strip())


# --------------------------------------------------------------------------- users


def _users_page(request: Request, services: ServicesDep, status: int = 200, **shown: Any) -> Response:
    with services.sessions() as session:
        user = signed_in_as(services, request, session, ADMIN)
        with as_page(user):
            users = list_users(user.principal, session)
            sites = list_sites(user.principal, session)
        with_login = set(session.scalars(select(ConsoleLogin.user_id)))
    return render.page("admin_users.html", status, user=user, users=users, sites=sites, with_login=with_login, **shown)


@router.get("/users")
def users_page(request: Request, services: ServicesDep) -> Response:
    return _users_page(request, services)


@router.post("/users")
def create_user(request: Request, services: ServicesDep, form: Form) -> Response:
    """POST /v1/users. Its API token is not shown: the user gets a console sign-in below, or a token
    of their own (POST /v1/token); an officer's or auditor's access still awaits a second person."""
    with services.sessions() as session:
        user = form_as(services, request, session, form, ADMIN)
        with as_page(user):
            fields = {"name": form.get("name", "").strip(), "role": form.get("role", "").strip()}
            body = UserCreate.model_validate({**fields, "sites": _sites_of(form.get("sites", ""))})
            add_user(body, user.principal, session)
    return see_other(f"{PREFIX}/admin/users")


@router.post("/users/{user_id}/disable")
def disable_user_page(user_id: str, request: Request, services: ServicesDep, form: Form) -> Response:
    with services.sessions() as session:
        user = form_as(services, request, session, form, ADMIN)
        with as_page(user):
            disable_user(user_id, _reason(form), user.principal, session)
    return see_other(f"{PREFIX}/admin/users")


@router.post("/users/{user_id}/enable")
def enable_user_page(user_id: str, request: Request, services: ServicesDep, form: Form) -> Response:
    with services.sessions() as session:
        user = form_as(services, request, session, form, ADMIN)
        with as_page(user):
            enable_user(user_id, _reason(form), user.principal, session)
    return see_other(f"{PREFIX}/admin/users")


@router.post("/users/{user_id}/credentials")
def new_credentials(user_id: str, request: Request, services: ServicesDep, form: Form) -> Response:
    """A new console password and TOTP secret (the old ones, and the user's sessions, end), shown
    once in this answer. The password is generated, so no administrator picks a weak one.

    The administrator sees what the user will sign in with. For an officer or an auditor that would
    be access to evidence or to the log by one person alone, which api/grants.py never allows: so
    their access awaits a second person's approval again (POST /v1/users/{id}/approve, as when they
    were created), in the same transaction, audited. Until then neither the new sign-in nor their
    API token works."""
    with services.sessions() as session:
        user = form_as(services, request, session, form, ADMIN)
        target = session.get(User, user_id)
        if target is None:
            raise Refused(404, "No such user.", user)
        password = secrets.token_urlsafe(18)  # 144 random bits, 24 characters
        try:
            done = accounts.provision(session, target.name, password, actor=user.principal.actor)
        except ValueError as exc:  # a role without console sign-in; WeakPassword is one too
            session.rollback()
            raise Refused(422, f"No console sign-in for {target.name}: {exc}.", user) from exc
        awaits = target.role in NEEDS_APPROVAL
        if awaits:
            target.pending_approval, target.approved_by, target.approved_at = True, None, None
            record_event(
                session,
                actor=user.principal.actor,
                action=Action.CONSOLE_LOGIN_AWAITS_APPROVAL,
                target=f"user:{target.id}",
                detail={"name": target.name, "role": target.role, "sites": target.site_ids},
            )
        session.commit()
    return render.page(
        "admin_credentials.html", user=user, password=password, done=done, qr=qr_svg(done.uri), awaits=awaits
    )


# --------------------------------------------------------------------------- devices


@dataclass(frozen=True)
class Seen:
    at: datetime
    spool: str


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} bytes"
    size = n / 1024
    for unit in ("KiB", "MiB"):
        if size < 1024:
            return f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def spool_state(h: DeviceHealth) -> str:
    """The spool as the device's last heartbeat told it: how full, and how many segments wait to be sent."""
    full = f" ({100 * h.spool_used_bytes // h.spool_max_bytes}% full)" if h.spool_max_bytes else ""
    return f"{_size(h.spool_used_bytes)} of {_size(h.spool_max_bytes)}{full}, {h.unsent_segments} unsent"


@router.get("/devices")
def devices_page(request: Request, services: ServicesDep) -> Response:
    with services.sessions() as session:
        user = signed_in_as(services, request, session, ADMIN)
        with as_page(user):
            devices = list_devices(user.principal, session)
            sites = list_sites(user.principal, session)
        health = {h.device_id: Seen(h.last_seen_at, spool_state(h)) for h in session.scalars(select(DeviceHealth))}
    return render.page("admin_devices.html", user=user, devices=devices, sites=sites, health=health)


@router.post("/devices")
def create_device(request: Request, services: ServicesDep, form: Form) -> Response:
    """POST /v1/devices: the one-time enrolment code, typed at the device or scanned from the QR code."""
    with services.sessions() as session:
        user = form_as(services, request, session, form, ADMIN)
        with as_page(user):
            body = DeviceCreate(name=form.get("name", "").strip(), site=form.get("site", "").strip())
            created = add_device(body, user.principal, session, services)
    return render.page("admin_device_added.html", user=user, device=created, qr=qr_svg(created.enrolment_code))


@router.post("/devices/{device_id}/disable")
def disable_device_page(device_id: str, request: Request, services: ServicesDep, form: Form) -> Response:
    with services.sessions() as session:
        user = form_as(services, request, session, form, ADMIN)
        with as_page(user):
            disable_device(device_id, _reason(form), user.principal, session)
    return see_other(f"{PREFIX}/admin/devices")


@router.post("/devices/{device_id}/enable")
def enable_device_page(device_id: str, request: Request, services: ServicesDep, form: Form) -> Response:
    with services.sessions() as session:
        user = form_as(services, request, session, form, ADMIN)
        with as_page(user):
            enable_device(device_id, _reason(form), user.principal, session)
    return see_other(f"{PREFIX}/admin/devices")


# --------------------------------------------------------------------------- sites


@router.get("/sites")
def sites_page(request: Request, services: ServicesDep) -> Response:
    with services.sessions() as session:
        user = signed_in_as(services, request, session, ADMIN)
        with as_page(user):
            sites = list_sites(user.principal, session)
    return render.page("admin_sites.html", user=user, sites=sites)


@router.post("/sites")
def create_site(request: Request, services: ServicesDep, form: Form) -> Response:
    with services.sessions() as session:
        user = form_as(services, request, session, form, ADMIN)
        with as_page(user):
            body = SiteCreate(id=form.get("id", "").strip(), name=form.get("name", "").strip())
            add_site(body, user.principal, session)
    return see_other(f"{PREFIX}/admin/sites")


# --------------------------------------------------------------------------- retention policies


def _days(form: dict[str, str], field: str, user: ConsoleUser) -> int | None:
    """A number of days typed in a form; None if left empty (no such limit)."""
    value = form.get(field, "").strip()
    if not value:
        return None
    if not (value.isascii() and value.isdigit() and len(value) <= 6):
        raise Refused(422, f"{field.replace('_', ' ')}: a whole number of days, or empty", user)
    return int(value)


@router.get("/policies")
def policies_page(request: Request, services: ServicesDep) -> Response:
    with services.sessions() as session:
        user = signed_in_as(services, request, session, ADMIN)
        with as_page(user):
            rules = show_policies(user.principal, session, site=None)
            sites = list_sites(user.principal, session)
    return render.page("admin_policies.html", user=user, rules=rules, sites=sites, categories=CATEGORIES)


@router.post("/policies")
def set_policy_page(request: Request, services: ServicesDep, form: Form) -> Response:
    """PUT /v1/policies: the rule for a category, by default or at one site (recomputing dates)."""
    with services.sessions() as session:
        user = form_as(services, request, session, form, ADMIN)
        retain, delete = _days(form, "retain_days", user), _days(form, "delete_days", user)
        with as_page(user):
            site = form.get("site", "").strip() or None
            body = PolicySet.model_validate(
                {"category": form.get("category", ""), "site": site, "retain_days": retain, "delete_days": delete}
            )
            set_policy(body, user.principal, session)
    return see_other(f"{PREFIX}/admin/policies")


@router.post("/policies/clear")
def clear_policy_page(request: Request, services: ServicesDep, form: Form) -> Response:
    """DELETE /v1/policies: a site falls back to the default, a stored default to the shipped one."""
    with services.sessions() as session:
        user = form_as(services, request, session, form, ADMIN)
        category = form.get("category", "")
        if category not in CATEGORIES:
            raise Refused(422, f"category: one of {', '.join(CATEGORIES)}", user)
        with as_page(user):
            site = form.get("site", "").strip() or None
            clear_policy(cast(CategoryName, category), user.principal, session, site=site)
    return see_other(f"{PREFIX}/admin/policies")


# --------------------------------------------------------------------------- notices


@router.get("/notices")
def notices_page(request: Request, services: ServicesDep) -> Response:
    with services.sessions() as session:
        user = signed_in_as(services, request, session, ADMIN)
        shown = notices(user.principal, session)
    return render.page("admin_notices.html", user=user, notices=shown)


@router.post("/notices")
def add_notice_page(request: Request, services: ServicesDep, form: Form) -> Response:
    """POST /v1/notices: a new version of a notice text (earlier versions are never changed)."""
    with services.sessions() as session:
        user = form_as(services, request, session, form, ADMIN)
        text = form.get("text", "").replace("\r\n", "\n").replace("\r", "\n")  # a browser sends CRLF
        with as_page(user):
            fields = {"id": form.get("id", "").strip(), "language": form.get("language", "")}
            body = NoticeCreate.model_validate({**fields, "title": form.get("title", "").strip(), "text": text})
            add_notice(body, user.principal, session)
    return see_other(f"{PREFIX}/admin/notices")


# --------------------------------------------------------------------------- a site's incident categories


@router.get("/sites/{site_id}/categories")
def categories_page(site_id: str, request: Request, services: ServicesDep) -> Response:
    with services.sessions() as session:
        user = signed_in_as(services, request, session, ADMIN)
        with as_page(user):
            shown = show_alerting(site_id, user.principal, session)
    return render.page("admin_categories.html", user=user, site=site_id, categories=shown["incident_categories"])


def _change_categories(
    site_id: str, request: Request, services: ServicesDep, form: dict[str, str], change: str
) -> Response:
    """PUT /v1/sites/{id}/alerting with the site's list of categories, one added or one removed."""
    with services.sessions() as session:
        user = form_as(services, request, session, form, ADMIN)
        with as_page(user):
            current = show_alerting(site_id, user.principal, session)["incident_categories"]
            code = form.get("code", "").strip()
            if change == "add":
                wanted = [*current, {"code": code, "ja": form.get("ja", "").strip(), "en": form.get("en", "").strip()}]
            else:
                wanted = [c for c in current if c["code"] != code]
                if len(wanted) == len(current):
                    raise Refused(404, f"{site_id} has no incident category {code!r}", user)
            body = AlertingUpdate.model_validate({"incident_categories": wanted})  # only this field is set
            set_alerting(site_id, body, user.principal, session)
    return see_other(f"{PREFIX}/admin/sites/{site_id}/categories")


@router.post("/sites/{site_id}/categories")
def add_category(site_id: str, request: Request, services: ServicesDep, form: Form) -> Response:
    return _change_categories(site_id, request, services, form, "add")


@router.post("/sites/{site_id}/categories/remove")
def remove_category(site_id: str, request: Request, services: ServicesDep, form: Form) -> Response:
    return _change_categories(site_id, request, services, form, "remove")
