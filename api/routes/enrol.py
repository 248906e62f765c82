"""Device enrolment: a one-time code buys a device token for a locally generated key."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from sqlalchemy import select

from api.core.audit import record_committed, record_event
from api.core.deps import AnyPrincipal, ServicesDep, SessionDep, client_address, stranger_failed, too_many
from api.core.keys import CURRENT, OFFLINE, PREVIOUS, RETIRED, SERVICE
from api.core.models import Device, EvidenceKey, NoticeRow, utcnow
from api.core.responses import AUTHENTICATED, BODY, STORAGE_FULL, TOO_MANY, answers
from api.core.tokens import new_token, token_hash
from api.notice_audio import audio_index
from api.schemas import EnrolRequest, EnrolResponse, EvidenceKeyPublic, NoticePublic
from evidence.audit_actions import Action
from evidence.text import neutral

router = APIRouter(prefix="/v1", tags=["devices"])
PUBLISHED_STATES = (CURRENT, PREVIOUS, RETIRED)
ENROL_REFUSED = {403: "The enrolment code is unknown, already used or expired.", 429: TOO_MANY, 507: STORAGE_FULL}


def active_notices(session: SessionDep) -> list[NoticePublic]:
    rows = session.scalars(select(NoticeRow).where(NoticeRow.active).order_by(NoticeRow.id, NoticeRow.language))
    readings = audio_index(session)  # whether each has a spoken reading, and its hash (recorder.notice_audio)
    out = []
    for n in rows:
        sha = readings.get((n.id, n.version, n.language))
        out.append(
            NoticePublic(
                id=n.id,
                version=n.version,
                language=n.language,
                title=n.title,
                text=n.text,
                sha256=n.sha256,
                audio=sha is not None,
                audio_sha256=sha,
            )
        )
    return out


def evidence_keys(session: SessionDep) -> list[EvidenceKeyPublic]:
    """Every key not destroyed, each saying whether devices seal to it (seal_to): the current
    service key and offline keys do; previous and retired keys are listed so that a device still
    holding one can tell why it may no longer use it."""
    rows = list(
        session.scalars(
            select(EvidenceKey)
            .where(EvidenceKey.state.in_(PUBLISHED_STATES))
            .order_by(EvidenceKey.created_at, EvidenceKey.key_id)
        )
    )
    superseded = next((k.created_at for k in rows if k.state == CURRENT and k.custody == SERVICE), None)
    out = []
    for k in rows:
        seal_to = k.state == CURRENT or (k.custody == OFFLINE and k.state == PREVIOUS)
        until = None if seal_to else (k.retired_at if k.state == RETIRED else superseded)
        out.append(
            EvidenceKeyPublic(
                key_id=k.key_id,
                public_key=k.public_key.hex(),
                state=k.state,
                custody=k.custody,
                seal_to=seal_to,
                valid_until=until,
            )
        )
    return out


@router.post("/enrol", response_model=EnrolResponse, responses=answers(BODY, ENROL_REFUSED))
def enrol(body: EnrolRequest, request: Request, session: SessionDep, services: ServicesDep) -> EnrolResponse:
    address = client_address(request)
    wait = services.failures.blocked(address)
    if wait:  # an address guessing codes is stopped before its next guess is even looked at
        raise too_many(wait)
    device = session.scalar(select(Device).where(Device.enrol_code_hash == token_hash(body.code.upper())))
    now = utcnow()
    if device is None or device.enrol_expires_at is None or device.enrol_expires_at < now:
        # Unknown, used and expired codes look alike to the caller; the log tells them apart.
        reason = "unknown or used code" if device is None else "expired code"
        if stranger_failed(services, request).log:
            record_committed(
                services.sessions,
                actor="anonymous",
                action=Action.DEVICE_ENROL,
                target=f"device:{device.id}" if device else None,
                outcome="denied",
                detail={"reason": reason, "client": neutral(address, 64)},
            )
        raise HTTPException(403, "enrolment code is unknown, already used or expired")
    token = new_token("csd")
    device.public_key = bytes.fromhex(body.public_key)
    device.token_hash = token_hash(token)
    device.enrol_code_hash = None  # one use only
    device.enrol_expires_at = None
    device.enrolled_at = now
    # The device's identity goes into the tamper-evident log: reads trust its key and site only as
    # recorded here (api.anchors), never as the devices table says.
    record_event(
        session,
        actor=f"device:{device.id}",
        action=Action.DEVICE_ENROL,
        target=f"device:{device.id}",
        detail={"site": device.site_id, "public_key": body.public_key.lower()},
    )
    session.commit()
    return EnrolResponse(
        device_id=device.id,
        site=device.site_id,
        token=token,
        evidence_keys=evidence_keys(session),
        notices=active_notices(session),
        service_public_key=bytes(services.keys.signing_key.verify_key).hex() if services.keys.signing_key else "",
    )


@router.get("/notices", response_model=list[NoticePublic], responses=AUTHENTICATED)
def notices(_principal: AnyPrincipal, session: SessionDep) -> list[NoticePublic]:
    return active_notices(session)


@router.get("/keys", response_model=list[EvidenceKeyPublic], responses=AUTHENTICATED)
def keys(_principal: AnyPrincipal, session: SessionDep) -> list[EvidenceKeyPublic]:
    """Evidence public keys: a device seals each recording's data key to every key with seal_to
    (the current key, offline keys) and refreshes this list before each recording."""
    return evidence_keys(session)
