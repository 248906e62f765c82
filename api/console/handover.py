"""Officers' hand-over of evidence: approving or cancelling early deletions, exporting a bundle.

GET /console/deletions lists the open deletion requests of the officer's sites (the API's GET
/v1/deletions); its Approve and Cancel forms, and the same forms on a recording's page, call the
API's own approve and cancel (POST /v1/deletions/{id}/approve, .../cancel), so its rules are the
console's: a second officer of the site approves, never the requester; nothing is deleted while
held; another site's request looks like nothing at all (404). The console adds only a
confirmation box in front of the approval, since it destroys evidence at once.

POST /console/recordings/{id}/export is the API's POST /v1/evidence/{id}/export, its answer (the
encrypted zip) sent as a download. Only a recipient's public key is accepted here: a passphrase
export needs the key derived from the passphrase on the officer's own machine (the CLI does it),
and a browser form would send the passphrase itself to the service.
"""

from __future__ import annotations

import re
import uuid

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy import select

from api.console import render
from api.console.csrf import Form
from api.console.guard import PREFIX, Refused, as_page, officer_form, see_other, signed_in_officer
from api.core.deps import ServicesDep
from api.core.models import User
from api.routes.export import ExportBody, export_bundle
from evidence.errors import IntegrityError
from retention.routes.deletions import approve, cancel, list_deletions
from retention.schemas import CancelBody

router = APIRouter(prefix=PREFIX, include_in_schema=False)
PUBLIC_KEY = re.compile(r"^[0-9a-f]{64}$")


def _back(form: dict[str, str]) -> str:
    """Where a deletion form returns to: the recording it was sent from, else the deletions page."""
    try:
        return f"{PREFIX}/recordings/{uuid.UUID(form.get('back', ''))}"
    except ValueError:
        return f"{PREFIX}/deletions"


@router.get("/deletions")
def deletions_page(request: Request, services: ServicesDep) -> Response:
    with services.sessions() as session:
        user = signed_in_officer(services, request, session)
        with as_page(user):
            requests = list_deletions(officer=user.principal, session=session, state="open")
        ids = {r.requested_by.removeprefix("user:") for r in requests}
        names = {f"user:{i}": n for i, n in session.execute(select(User.id, User.name).where(User.id.in_(ids)))}
    return render.page("deletions.html", user=user, requests=requests, names=names)


@router.post("/deletions/{request_id}/approve")
def approve_deletion(request_id: uuid.UUID, request: Request, services: ServicesDep, form: Form) -> Response:
    """POST /v1/deletions/{id}/approve once the officer ticked the confirmation: the recording goes now."""
    with services.sessions() as session:
        user = officer_form(services, request, session, form)
        if form.get("confirm") != "yes":
            raise Refused(422, "Tick the box to confirm that this recording is to be deleted now.", user)
        with as_page(user):
            approve(request_id, request, user.principal, session, services)
    return see_other(f"{PREFIX}/deletions")  # the recording is gone: its page would only say so


@router.post("/deletions/{request_id}/cancel")
def cancel_deletion(request_id: uuid.UUID, request: Request, services: ServicesDep, form: Form) -> Response:
    """POST /v1/deletions/{id}/cancel: any officer of the site, the requester too, with a reason (logged)."""
    with services.sessions() as session:
        user = officer_form(services, request, session, form)
        with as_page(user):
            body = CancelBody(reason=form.get("reason", ""))
            cancel(request_id, body, request, user.principal, session, services)
    return see_other(_back(form))


@router.post("/recordings/{recording_id}/export")
def export(recording_id: uuid.UUID, request: Request, services: ServicesDep, form: Form) -> Response:
    """POST /v1/evidence/{id}/export, to the recipient's public key; the bundle comes back as a download."""
    with services.sessions() as session:
        user = officer_form(services, request, session, form)
        key = "".join(form.get("recipient_public_key", "").split()).lower()
        if not PUBLIC_KEY.match(key):
            raise Refused(
                422,
                "The recipient's public key is 64 hexadecimal characters: the line `python verify.py keygen` prints.",
                user,
            )
        with as_page(user):
            body = ExportBody(
                purpose=form.get("purpose", ""),
                case_ref=form.get("case_ref", ""),
                recipient=form.get("recipient", "").strip() or None,
                recipient_public_key=key,
                kdf=None,  # a public key, never a passphrase's (see the module's docstring)
            )
            try:
                bundle = export_bundle(recording_id, body, request, user.principal, session, services)
            except IntegrityError as exc:  # audited by the API; its app answers 409 too, nothing is released
                raise Refused(409, f"Integrity check failed, so nothing was exported: {exc}", user) from exc
    bundle.headers["Cache-Control"] = "no-store"
    return bundle
