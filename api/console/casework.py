"""Officers' case work on a recording's page: notes, the incident category, keeping it longer,
asking for early deletion.

Notes are this module's own (recording_notes). An officer of the recording's site adds one; its
entry in the access log (console:note:add: the note's id and length, never its text) is appended
in the same transaction, so no note exists without its entry. Only the site's officers read notes:
they are shown on the recording page, an officer page, after the API's scope check (404 outside
their sites); admins and auditors never open it, and the log they read never holds the text.

Flagging, extending and asking for deletion call the API's own route functions (POST
/v1/evidence/{id}/flag, .../extend, .../deletion), so their rules, refusals (never while held) and audit entries
are exactly the API's; the console only adds a confirmation box in front of the deletion request.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.alerts import site as site_settings
from api.console.csrf import Form
from api.console.guard import PREFIX, Refused, as_page, local_day, officer_form, see_other
from api.core.audit import record_event
from api.core.deps import ServicesDep, live, recording_in_scope
from api.core.models import Recording, RecordingNote, User, utcnow
from api.routes.evidence import extend, flag
from evidence.audit_actions import Action
from evidence.text import TextError, check_text
from retention import deletion
from retention.routes.deletions import request_deletion
from retention.schemas import DeletionRequestBody, ExtendBody, FlagBody

NOTE_MAX = 4000
router = APIRouter(prefix=PREFIX, include_in_schema=False)


@dataclass(frozen=True)
class NoteShown:
    id: str
    created_at: datetime
    author: str
    text: str


def note_text(raw: str) -> str:
    """The note as kept: line breaks as LF (a browser sends CRLF), 1..NOTE_MAX characters, no other
    control or invisible character (evidence.text.check_text); TextError says what is wrong."""
    text = raw.replace("\r\n", "\n").replace("\r", "\n")
    return check_text(text, name="a note", min_visible=1, max_length=NOTE_MAX, multiline=True)


def notes_of(session: Session, recording_id: str) -> list[NoteShown]:
    """A recording's notes, oldest first. Only for a page that has checked the caller is an officer of its site."""
    rows = session.execute(
        select(RecordingNote, User.name)
        .join(User, User.id == RecordingNote.author_id)
        .where(RecordingNote.recording_id == recording_id)
        .order_by(RecordingNote.created_at, RecordingNote.id)
    )
    return [NoteShown(n.id, n.created_at, name, n.text) for n, name in rows]


def context(session: Session, recording: Recording) -> dict[str, Any]:
    """What the recording page shows of case work (its caller is an officer of the recording's site)."""
    categories = site_settings.categories(site_settings.alerting(session, recording.site_id))
    codes = [c["code"] for c in categories]
    if recording.incident_category and recording.incident_category not in codes:
        categories.append({"code": recording.incident_category, "en": recording.incident_category})
    return {
        "notes": notes_of(session, recording.id),
        "note_max": NOTE_MAX,
        "categories": categories,
        "deletion": deletion.open_request(session, recording.id),
    }


@router.post("/recordings/{recording_id}/notes")
def add_note(recording_id: uuid.UUID, request: Request, services: ServicesDep, form: Form) -> Response:
    with services.sessions() as session:
        user = officer_form(services, request, session, form)
        with as_page(user):
            recording = live(recording_in_scope(request, services, session, user.principal, recording_id))
        try:
            text = note_text(form.get("text", ""))
        except TextError as exc:
            raise Refused(422, f"This note cannot be kept: {exc} (1 to {NOTE_MAX} characters).", user) from exc
        note = RecordingNote(
            id=str(uuid.uuid4()), recording_id=recording.id, author_id=user.principal.id, created_at=utcnow(), text=text
        )
        try:
            session.add(note)
            record_event(
                session,
                actor=user.principal.actor,
                action=Action.CONSOLE_NOTE_ADD,
                target=f"recording:{recording.id}",
                detail={"note": note.id, "chars": len(text), "via": "console"},
            )
            session.commit()
        except Exception as exc:  # no entry, no note
            session.rollback()
            raise Refused(503, "The access log cannot be written, so the note was not kept.", user) from exc
    return see_other(f"{PREFIX}/recordings/{recording_id}")


@router.post("/recordings/{recording_id}/flag")
def flag_incident(recording_id: uuid.UUID, request: Request, services: ServicesDep, form: Form) -> Response:
    """POST /v1/evidence/{id}/flag: the category, and the retain-until date recomputed."""
    with services.sessions() as session:
        user = officer_form(services, request, session, form)
        with as_page(user):
            body = FlagBody(category=form.get("category", "").strip())
            flag(recording_id, body, request, user.principal, session, services)
    return see_other(f"{PREFIX}/recordings/{recording_id}")


@router.post("/recordings/{recording_id}/extend")
def extend_retention(recording_id: uuid.UUID, request: Request, services: ServicesDep, form: Form) -> Response:
    """POST /v1/evidence/{id}/extend: kept at least to the end of a local day; never shortened."""
    with services.sessions() as session:
        user = officer_form(services, request, session, form)
        start = local_day(form.get("until", ""), "Keep until", user)
        if start is None:
            raise Refused(422, "Keep until: a date such as 2026-04-01", user)
        until = start + timedelta(days=1, seconds=-1)  # the whole day, in the console's zone
        with as_page(user):
            body = ExtendBody(until=until, reason=form.get("reason", ""))
            extend(recording_id, body, request, user.principal, session, services)
    return see_other(f"{PREFIX}/recordings/{recording_id}")


@router.post("/recordings/{recording_id}/deletion")
def ask_deletion(recording_id: uuid.UUID, request: Request, services: ServicesDep, form: Form) -> Response:
    """POST /v1/evidence/{id}/deletion, once the officer ticked the confirmation: refused while held."""
    with services.sessions() as session:
        user = officer_form(services, request, session, form)
        if form.get("confirm") != "yes":
            raise Refused(422, "Tick the box to confirm that this recording should be deleted before its time.", user)
        with as_page(user):
            body = DeletionRequestBody(reason=form.get("reason", ""))
            request_deletion(recording_id, body, request, user.principal, session, services)
    return see_other(f"{PREFIX}/recordings/{recording_id}")
