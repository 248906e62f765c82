"""The console's routes under /console: sign-in and sign-out, officers' search, recording, listening, holds, alerts.

Case work on the recording page (notes, incident flag, deletion request) is api/console/casework.py;
the checks every page starts with (signed in, an officer, the form's CSRF token) are api/console/guard.py.

Each page opens its own database session, finds the signed-in user from the cookie (else a
redirect to the sign-in page), and calls the API's own route functions with that user as the
principal (search_evidence, behind GET /v1/evidence; show_evidence, create_hold, release_hold,
recording_in_scope, list_alerts, acknowledge, alert_stream), so scope checks, refusals and audit
entries are exactly the API's.
Officers only, for now: an admin or auditor gets a 403 page (logged) on every officer page, and
never a byte of audio.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, Response, StreamingResponse
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from api.alerts.schemas import AlertAck
from api.console import accounts, admin, audit_log, casework, csrf, handover, listen, render, sessions, waveform
from api.console.csrf import Form, FormRefused
from api.console.guard import (
    PREFIX,
    Refused,
    SignInNeeded,
    as_page,
    checked,
    local_day,
    officer_form,
    see_other,
    signed_in,
    signed_in_officer,
)
from api.console.sessions import ConsoleUser
from api.core.audit import record_event
from api.core.deps import ServicesDep, client_address, deny, live, recording_in_scope, stranger_failed
from api.core.keys import ZeroKnowledgeRefusal
from api.core.models import AccessLog, NoticeRow, Recording, utcnow
from api.core.services import Services
from api.retrieval import audio_state, prepare_audio, verify_recording_chain
from api.routes.alerts import acknowledge, alert_stream, list_alerts
from api.routes.audit import with_actor_names
from api.routes.evidence import search_evidence, show_evidence
from api.search import Narrowing
from evidence import audio
from evidence.audit_actions import Action
from evidence.errors import IntegrityError, NoAudio
from retention.decide import covering_holds
from retention.lifecycle import shown_status
from retention.models import Hold
from retention.routes.holds import create_hold, release_hold
from retention.schemas import HoldCreate, HoldRelease
from retention.store import active_holds, facts_of

router = APIRouter(prefix=PREFIX, include_in_schema=False)
STATIC = {
    "console.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
    "alerts.js": "text/javascript; charset=utf-8",
    "player.js": "text/javascript; charset=utf-8",
}
SEARCH_LIMIT = 100
ALERT_LIMIT = 100
# The console's alert stream ends this often (EventSource reconnects): each reconnection checks the
# session again, so a signed-out or disabled officer stops receiving alerts within a minute.
STREAM_SECONDS = 60.0
STATUSES = ("open", "complete", "interrupted", "objected")
NOTE_QUERY_MAX = 200  # the form's maxlength


# --------------------------------------------------------------------------- helpers


# --------------------------------------------------------------------------- sign-in, sign-out, home


@router.get("")
def home(request: Request, services: ServicesDep) -> Response:
    with services.sessions() as session:
        user = sessions.current(session, request)
        session.commit()
    if user is None:
        return see_other(f"{PREFIX}/sign-in")
    return render.page("home.html", user=user)


@router.get("/sign-in")
def sign_in_page(request: Request, services: ServicesDep) -> Response:
    token = csrf.login_token(request)
    response = render.page("sign_in.html", login_csrf=token, error=None)
    csrf.set_login(response, request, token)
    return response


@router.post("/sign-in")
def sign_in(request: Request, services: ServicesDep, form: Form) -> Response:
    token = request.cookies.get(csrf.LOGIN_COOKIE, "")
    if not csrf.same(token, form.get(csrf.FIELD)):
        deny(services, request, 403, "console sign-in without a valid CSRF token")
        raise Refused(403, "This sign-in form has expired; reload the page and try again.")
    client = client_address(request)
    with services.sessions() as session:
        try:
            user = accounts.sign_in(
                session, form.get("name", ""), form.get("password", ""), form.get("code", ""), client
            )
        except accounts.SignInRefused as exc:
            session.commit()  # the failure count, the lock and the log entries are the point
            verdict = stranger_failed(services, request)
            status, message = (429, "too many failed attempts; try again later") if verdict.limited else (401, str(exc))
            return render.page("sign_in.html", status, login_csrf=token, error=message)
        cookie = sessions.start(session, user.id)
        session.commit()
    response = see_other(PREFIX)
    sessions.set_cookie(response, request, cookie)
    response.delete_cookie(csrf.LOGIN_COOKIE, path=sessions.PATH, httponly=True, samesite="strict")
    return response


@router.post("/sign-out")
def sign_out(request: Request, services: ServicesDep, form: Form) -> Response:
    with services.sessions() as session:
        user = signed_in(session, request)
        checked(services, request, user, form)
        sessions.end(session, user.session_hash)
        record_event(session, actor=user.principal.actor, action=Action.CONSOLE_SIGN_OUT)
        session.commit()
    response = see_other(f"{PREFIX}/sign-in")
    sessions.clear_cookie(response, request)
    return response


# --------------------------------------------------------------------------- officers: search, recording


@router.get("/search")
def search(
    request: Request,
    services: ServicesDep,
    site: str | None = None,
    since: Annotated[str | None, Query(alias="from")] = None,
    until: Annotated[str | None, Query(alias="to")] = None,
    device: str | None = None,
    staff: str | None = None,
    incident: str | None = None,
    status: str | None = None,
    held: str | None = None,
    note: str | None = None,
) -> Response:
    with services.sessions() as session:
        user = signed_in_officer(services, request, session)
        start, end = local_day(since, "from", user), local_day(until, "to", user)
        flagged = {"yes": True, "no": False}.get(incident or "")
        if status and status not in STATUSES:
            raise Refused(422, f"status: one of {', '.join(STATUSES)}", user)
        if held and held not in ("yes", "no"):
            raise Refused(422, "held: yes or no", user)
        if note and len(note) > NOTE_QUERY_MAX:
            raise Refused(422, f"note text: at most {NOTE_QUERY_MAX} characters", user)
        # Every filter is in the one scoped SQL statement (api.search.Narrowing), so a match older than
        # any page of newest rows is found; one row past the page tells whether there are more.
        narrowing = Narrowing(
            device=(device or "").strip() or None,
            staff=(staff or "").strip() or None,
            status=status or None,
            held={"yes": True, "no": False}.get(held or ""),
            note=(note or "").strip() or None,
            stale_before=utcnow() - timedelta(seconds=services.settings.interrupted_after_seconds),
        )
        with as_page(user):
            rows = search_evidence(
                user.principal,
                session,
                services,
                site=site or None,
                since=start,
                until=end + timedelta(days=1) if end else None,
                incident=flagged,
                limit=SEARCH_LIMIT + 1,
                narrowing=narrowing,
            )
        results, more = rows[:SEARCH_LIMIT], len(rows) > SEARCH_LIMIT
    query = {"site": site or "", "from": since or "", "to": until or "", "device": device or "",
             "staff": staff or "", "incident": incident or "", "status": status or "",
             "held": held or "", "note": note or ""}  # fmt: skip
    return render.page(
        "search.html",
        user=user,
        results=results,
        query=query,
        sites=sorted(user.principal.sites),
        statuses=STATUSES,
        limit=SEARCH_LIMIT,
        more=more,
    )


def _custody(session: Session, recording_id: str) -> list[Any]:
    rows = session.scalars(
        select(AccessLog).where(AccessLog.target == f"recording:{recording_id}").order_by(AccessLog.seq)
    )
    return with_actor_names(session, rows)


@router.get("/recordings/{recording_id}")
def recording_page(recording_id: uuid.UUID, request: Request, services: ServicesDep) -> Response:
    with services.sessions() as session:
        user = signed_in_officer(services, request, session)
        with as_page(user):
            detail = show_evidence(recording_id, request, user.principal, session, services)
        recording = session.get(Recording, detail.id)
        assert recording is not None
        try:
            verify_recording_chain(session, recording)
            chain = "verified: every signature and link checks out, and the log's anchors match"
            chain_ok = True
        except IntegrityError as exc:
            chain, chain_ok = f"FAILED: {exc}", False
        consent = detail.consent
        notice = session.get(
            NoticeRow, (str(consent.get("notice_id")), consent.get("notice_version"), str(consent.get("language")))
        )
        covering = {h.id for h in covering_holds(facts_of(recording), active_holds(session))}
        holds = list(session.scalars(select(Hold).where(Hold.id.in_(covering)).order_by(Hold.created_at)))
        custody = _custody(session, recording.id)
        casework_shown = casework.context(session, recording)  # notes: only here, past the officer and scope checks
    return render.page(
        "recording.html",
        user=user,
        r=detail,
        chain=chain,
        chain_ok=chain_ok,
        notice=notice,
        notice_matches=notice is not None and notice.sha256 == consent.get("notice_sha256"),
        holds=holds,
        custody=custody,
        listenable=detail.audio == "recorded",
        **casework_shown,
    )


# --------------------------------------------------------------------------- listening


@router.post("/recordings/{recording_id}/listen")
def listen_purpose(recording_id: uuid.UUID, request: Request, services: ServicesDep, form: Form) -> Response:
    with services.sessions() as session:
        user = officer_form(services, request, session, form)
        with as_page(user):
            recording = live(recording_in_scope(request, services, session, user.principal, recording_id))
        purpose = " ".join(form.get("purpose", "").split())
        if not 3 <= len(purpose) <= listen.PURPOSE_MAX:
            raise Refused(422, f"State why you listen (3 to {listen.PURPOSE_MAX} characters): it is logged.", user)
        if audio_state(recording) != "recorded":
            raise Refused(409, "This recording holds no audio (an objection record, or nothing was captured).", user)
        if services.keys.zero_knowledge:  # refused before the log, as the API's /audio: nothing can be read here
            raise Refused(409, str(ZeroKnowledgeRefusal()), user)
        try:
            listen.grant(session, user, recording, purpose)
        except Exception as exc:  # any failure to log is a refusal to read
            session.rollback()
            raise Refused(503, "The access log cannot be written, so evidence cannot be read.", user) from exc
    return see_other(f"{PREFIX}/recordings/{recording_id}/player")


@router.get("/recordings/{recording_id}/player")
def player(recording_id: uuid.UUID, request: Request, services: ServicesDep) -> Response:
    with services.sessions() as session:
        user = signed_in_officer(services, request, session)
        with as_page(user):
            recording = live(recording_in_scope(request, services, session, user.principal, recording_id))
        grant = listen.granted(session, user, recording.id)
        if grant is None:
            return see_other(f"{PREFIX}/recordings/{recording_id}")
    return render.page("player.html", user=user, recording_id=str(recording_id), grant=grant)


@router.get("/recordings/{recording_id}/audio")
def audio_file(recording_id: uuid.UUID, request: Request, services: ServicesDep) -> Response:
    with services.sessions() as session:
        user = signed_in_officer(services, request, session)
        with as_page(user):
            recording = live(recording_in_scope(request, services, session, user.principal, recording_id))
        grant = listen.granted(session, user, recording.id)
        if grant is None:
            deny(services, request, 403, "console audio without a listening grant", user.principal.actor)
            raise Refused(403, "State a purpose on the recording's page first.", user)
        seq, target = grant.read_seq, f"recording:{recording.id}"
        shown = shown_status(recording, services.settings.interrupted_after_seconds)
        try:
            verified = prepare_audio(session, services.store, services.keys, recording, "wav", shown)
        except (IntegrityError, NoAudio) as exc:
            session.rollback()
            failed = isinstance(exc, IntegrityError)
            record_event(
                session,
                actor=user.principal.actor,
                action=Action.EVIDENCE_INTEGRITY if failed else Action.EVIDENCE_NO_AUDIO,
                target=target,
                outcome="failed" if failed else "allowed",
                detail={"error": str(exc), "read": seq, "via": "console"},
            )
            session.commit()
            raise Refused(409, str(exc), user) from exc
    assert verified.length is not None  # WAV: known before the first byte
    try:
        wanted = listen.byte_range(request.headers.get("range"), verified.length)
    except ValueError:
        return Response(status_code=416, headers={"Content-Range": f"bytes */{verified.length}"})
    first, last = wanted if wanted is not None else (0, verified.length - 1)
    headers = {
        "Accept-Ranges": "bytes",
        "Content-Length": str(last - first + 1),
        "Cache-Control": "no-store",
        "X-Countersign-Access-Log": str(seq),
    }
    if wanted is not None:
        headers["Content-Range"] = f"bytes {first}-{last}/{verified.length}"
    return StreamingResponse(
        listen.sliced(verified, first, last, services, user.principal.actor, target, seq),
        status_code=206 if wanted is not None else 200,
        media_type=audio.media_type("wav"),
        headers=headers,
    )


# --------------------------------------------------------------------------- holds


@router.post("/recordings/{recording_id}/holds")
def place_hold(recording_id: uuid.UUID, request: Request, services: ServicesDep, form: Form) -> Response:
    with services.sessions() as session:
        user = officer_form(services, request, session, form)
        with as_page(user):
            body = HoldCreate(
                case_ref=form.get("case_ref", ""), reason=form.get("reason", ""), recordings=[recording_id]
            )
            create_hold(body, request, user.principal, session, services)
    return see_other(f"{PREFIX}/recordings/{recording_id}")


@router.post("/holds/{hold_id}/release")
def release(hold_id: uuid.UUID, request: Request, services: ServicesDep, form: Form) -> Response:
    with services.sessions() as session:
        user = officer_form(services, request, session, form)
        with as_page(user):
            body = HoldRelease(reason=form.get("reason", ""))
            release_hold(hold_id, body, request, user.principal, session, services)
    try:
        back = f"{PREFIX}/recordings/{uuid.UUID(form.get('back', ''))}"
    except ValueError:
        back = f"{PREFIX}/search"
    return see_other(back)


# --------------------------------------------------------------------------- officers: help alerts


@router.get("/alerts")
def alerts_page(request: Request, services: ServicesDep) -> Response:
    with services.sessions() as session:
        user = signed_in_officer(services, request, session)
        alerts = list_alerts(principal=user.principal, session=session, state=None, limit=ALERT_LIMIT)
    return render.page("alerts.html", user=user, alerts=alerts, limit=ALERT_LIMIT)


@router.post("/alerts/{alert_id}/ack")
def ack_alert(alert_id: uuid.UUID, request: Request, services: ServicesDep, form: Form) -> Response:
    with services.sessions() as session:
        user = officer_form(services, request, session, form)
        with as_page(user):
            body = AlertAck(message=form.get("message", "").strip())
            acknowledge(alert_id, body, user.principal, session, services, request)
    return see_other(f"{PREFIX}/alerts")


def _stream_officer(services: Services, request: Request) -> ConsoleUser:
    with services.sessions() as session:
        return signed_in_officer(services, request, session)


@router.get("/alerts/stream")
async def alerts_stream(
    request: Request,
    services: ServicesDep,
    timeout: Annotated[float, Query(ge=0, le=STREAM_SECONDS)] = STREAM_SECONDS,
) -> Response:
    """The API's own stream (GET /v1/alerts/stream) for the signed-in officer's sites, by cookie."""
    user = await run_in_threadpool(_stream_officer, services, request)
    return await alert_stream(user.principal, services, request, timeout)


# --------------------------------------------------------------------------- files, and installing it all


@router.get("/static/{name}")
def static(name: str) -> FileResponse:
    media_type = STATIC.get(name)
    if media_type is None:
        raise HTTPException(404, "no such file")
    return FileResponse(render.HERE / "static" / name, media_type=media_type, headers={"Cache-Control": "no-cache"})


def install(app: FastAPI) -> None:
    """The routes, and the two console outcomes every page may end in: sign in first, or a refusal page."""
    app.include_router(router)
    app.include_router(casework.router)  # notes, incident flag, deletion request (api/console/casework.py)
    app.include_router(audit_log.router)  # auditors' log browser, status, CSV export (api/console/audit_log.py)
    app.include_router(admin.router)  # administrators' users, devices, sites (api/console/admin.py)
    app.include_router(handover.router)  # deletion approval, bundle export (api/console/handover.py)
    app.include_router(waveform.router)  # the player's waveform, under the listening grant (api/console/waveform.py)

    async def _sign_in_first(_request: Request, _exc: Exception) -> Response:
        return see_other(f"{PREFIX}/sign-in")

    async def _refused(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Refused)
        return render.page("refused.html", exc.status, user=exc.user, code=exc.status, message=exc.message)

    async def _bad_form(_request: Request, exc: Exception) -> Response:
        return render.page("refused.html", 400, code=400, message=str(exc))

    app.add_exception_handler(SignInNeeded, _sign_in_first)
    app.add_exception_handler(Refused, _refused)
    app.add_exception_handler(FormRefused, _bad_form)
