"""Listening in the console: an audited purpose first, then a short grant for this session and recording.

The purpose form writes the evidence:read entry (with the purpose) and commits it before the
grant exists, so the entry precedes the first byte as in POST /v1/evidence/{id}/audio. The grant
lets the <audio> element fetch the WAV by HTTP ranges (seeking) for GRANT_FOR without asking
again; without a grant, no byte is sent. Each range is read through api.retrieval.prepare_audio,
so every check runs before each answer's first byte, as for the API.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from api.console.sessions import ConsoleUser
from api.core.audit import record_event
from api.core.models import ConsoleListenGrant, Recording, utcnow
from api.core.services import Services
from api.retrieval import VerifiedAudio
from api.routes.evidence import released
from evidence.audit_actions import Action

GRANT_FOR = timedelta(minutes=10)
PURPOSE_MAX = 500
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def grant(session: Session, user: ConsoleUser, recording: Recording, purpose: str) -> int:
    """Log the read with its purpose and grant this session the audio; commits; the entry's seq."""
    seq = record_event(
        session,
        actor=user.principal.actor,
        action=Action.EVIDENCE_READ,
        target=f"recording:{recording.id}",
        purpose=purpose,
        detail={"format": "wav", "via": "console", "grant_seconds": int(GRANT_FOR.total_seconds())},
    ).seq
    session.execute(
        delete(ConsoleListenGrant).where(
            ConsoleListenGrant.session_hash == user.session_hash, ConsoleListenGrant.recording_id == recording.id
        )
    )
    session.add(
        ConsoleListenGrant(
            session_hash=user.session_hash, recording_id=recording.id, read_seq=seq, expires_at=utcnow() + GRANT_FOR
        )
    )
    session.commit()
    return seq


def granted(session: Session, user: ConsoleUser, recording_id: str) -> ConsoleListenGrant | None:
    row = session.scalar(
        select(ConsoleListenGrant).where(
            ConsoleListenGrant.session_hash == user.session_hash, ConsoleListenGrant.recording_id == recording_id
        )
    )
    return row if row is not None and row.expires_at > utcnow() else None


def byte_range(header: str | None, length: int) -> tuple[int, int] | None:
    """(first, last) inclusive for a single `bytes=` range; None for no header; ValueError if unsatisfiable."""
    if header is None:
        return None
    match = _RANGE.match(header.strip())
    if match is None or (not match.group(1) and not match.group(2)):
        raise ValueError("only one bytes range is served")
    if match.group(1):
        first = int(match.group(1))
        last = min(int(match.group(2)), length - 1) if match.group(2) else length - 1
    else:  # the last N bytes
        first, last = max(0, length - int(match.group(2))), length - 1
    if first > last or first >= length:
        raise ValueError("range not satisfiable")
    return first, last


def sliced(
    verified: VerifiedAudio, first: int, last: int, services: Services, actor: str, target: str, seq: int
) -> Iterator[bytes]:
    """Bytes first..last of the verified WAV. A segment failing its checks mid-stream is logged and the
    response is cut short, by the API's own stream wrapper (api.routes.evidence.released)."""
    offset = 0
    for chunk in released(verified.chunks(), services, actor, target, seq, via="console"):
        end = offset + len(chunk)
        if end > first and offset <= last:
            yield chunk[max(0, first - offset) : last + 1 - offset]
        offset = end
        if offset > last:
            break
