"""Admins provision notices: a new version of a text, and each version's spoken reading.

GET /v1/notices (api/routes/enrol.py) lists the active notices with whether each has a reading
and its SHA-256; devices fetch the reading from GET .../audio (recorder.notice_audio). Every change
is an audit entry (api.notice_audio). See README "Notice audio".
"""

from __future__ import annotations

import hashlib
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Request, Response
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.exc import IntegrityError as DBIntegrityError

from api.core.deps import AdminDep, Principal, ServicesDep, SessionDep, require
from api.core.models import NoticeAudio
from api.core.responses import AUTHED, BODY, INPUT, answers, json_refusals
from api.notice_audio import (
    CONTENT_TYPE,
    MAX_BYTES,
    NoticeRefused,
    add_version,
    normalised,
    notice_row,
    store_reading,
    synthesise,
)
from api.schemas import NoticeAudioPublic, NoticeCreate, NoticePublic

router = APIRouter(prefix="/v1/notices", tags=["notices"])
AUDIO = "/{notice_id}/versions/{version}/{language}/audio"
NoticeId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
Version = Annotated[int, Path(ge=1, le=2**31 - 1)]
Language = Annotated[str, Path(pattern=r"^(ja|en)$")]
DeviceOrAdmin = Annotated[Principal, Depends(require("device", "admin"))]
NO_NOTICE = {404: "No such notice version in that language."}
# 422 stays INPUT's (field errors, or a sentence): here also audio libsndfile cannot decode, an empty
# body, more than MAX_SECONDS, or an odd rate or channel count. Nothing is stored on any refusal.
BAD_AUDIO = {413: f"The audio is larger than {MAX_BYTES} bytes: nothing was stored."}


def _refused(exc: NoticeRefused) -> HTTPException:
    return HTTPException(exc.status, exc.detail)


def _audio_public(row: NoticeAudio) -> NoticeAudioPublic:
    return NoticeAudioPublic(
        notice_id=row.notice_id,
        version=row.version,
        language=row.language,
        sha256=row.sha256,
        size=row.size,
        content_type=row.content_type,
        seconds=row.seconds,
        source=row.source,
        created_at=row.created_at,
        created_by=row.created_by,
    )


@router.post(
    "",
    status_code=201,
    response_model=NoticePublic,
    responses=answers(AUTHED, BODY, {409: "The latest version already has this text, or a version was just added."}),
)
def add_notice(body: NoticeCreate, admin: AdminDep, session: SessionDep) -> NoticePublic:
    """Add a new version of a notice text in a language (its number: the highest so far + 1).

    Earlier versions are never changed: consent records name the version and hash they showed."""
    try:
        row = add_version(session, body.id, body.language, body.title, body.text, admin.actor)
        session.commit()
    except NoticeRefused as exc:
        raise _refused(exc) from None
    except DBIntegrityError:  # two admins added a version at the same moment: the primary key chose one
        session.rollback()
        raise HTTPException(409, "another version of this notice was added at the same time; try again") from None
    return NoticePublic(
        id=row.id, version=row.version, language=row.language, title=row.title, text=row.text, sha256=row.sha256
    )


@router.put(
    AUDIO,
    response_model=NoticeAudioPublic,
    responses=answers(AUTHED, INPUT, NO_NOTICE, BAD_AUDIO),
    openapi_extra={"requestBody": {"required": True, "content": {"audio/wav": {}, "application/octet-stream": {}}}},
)
async def upload_audio(
    notice_id: NoticeId,
    version: Version,
    language: Language,
    request: Request,
    admin: AdminDep,
    services: ServicesDep,
) -> NoticeAudioPublic:
    """Upload the spoken reading of a notice version (WAV, FLAC or Ogg; stored as 16-bit PCM WAV).

    422: not audio libsndfile decodes, empty, longer than 5 minutes, or an odd rate or channel count.

    The body is read (at most MAX_BYTES, by the middleware) before authentication; nothing is
    stored unless it decodes and is within the limits."""
    data = await request.body()

    def store() -> NoticeAudioPublic:
        try:
            reading = normalised(data)
        except NoticeRefused as exc:
            raise _refused(exc) from None
        with services.sessions() as session:
            try:
                notice = notice_row(session, notice_id, version, language)
            except NoticeRefused as exc:
                raise _refused(exc) from None
            uploaded = hashlib.sha256(data).hexdigest()
            row = store_reading(session, notice, reading, "upload", admin.actor, uploaded_sha256=uploaded)
            session.commit()
            return _audio_public(row)

    return await run_in_threadpool(store)  # decoding and the database block: off the event loop


@router.post(
    AUDIO + "/generate",
    response_model=NoticeAudioPublic,
    responses=answers(
        AUTHED,
        INPUT,
        NO_NOTICE,
        {503: "espeak-ng is missing or failed."},  # 422 (INPUT) also: the reading would exceed MAX_SECONDS
    ),
)
def generate_audio(
    notice_id: NoticeId, version: Version, language: Language, admin: AdminDep, session: SessionDep
) -> NoticeAudioPublic:
    """Generate the reading of a notice version with espeak-ng (voice ja or en), replacing any."""
    try:
        notice = notice_row(session, notice_id, version, language)
        reading = normalised(synthesise(notice.text, language))
    except NoticeRefused as exc:
        raise _refused(exc) from None
    row = store_reading(session, notice, reading, "espeak-ng", admin.actor)
    session.commit()
    return _audio_public(row)


@router.get(
    AUDIO,
    response_class=Response,
    responses=answers(
        {200: {"description": "The reading, 16-bit PCM WAV.", "content": {CONTENT_TYPE: {}}}},
        json_refusals(answers(AUTHED, INPUT, {404: "No such notice version, or it has no reading yet."})),
    ),
)
def get_audio(
    notice_id: NoticeId, version: Version, language: Language, _caller: DeviceOrAdmin, session: SessionDep
) -> Response:
    """A notice version's reading (devices and admins); X-Content-SHA256 is the hash GET /v1/notices lists."""
    row = session.get(NoticeAudio, (notice_id, version, language))
    if row is None:
        raise HTTPException(404, f"notice {notice_id} version {version} ({language}) has no reading")
    return Response(
        row.data,
        media_type=CONTENT_TYPE,
        headers={
            "X-Content-SHA256": row.sha256,
            "Content-Disposition": f'attachment; filename="{notice_id}.{language}.v{version}.wav"',
        },
    )
