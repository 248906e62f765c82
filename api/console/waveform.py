"""The player page's waveform: GET /console/recordings/{id}/waveform.svg, drawn from the verified audio.

The picture is derived from the audio, so it is released only as the audio is: to the signed-in
officer whose recording is in scope, under this session's listening grant (the audited read with
its purpose, api/console/listen.py); without a grant it is a logged 403, never a picture. It is
read through api.retrieval.prepare_audio, so every check runs before the first sample is looked
at, and a failure is audited as GET .../audio audits it (a 409 page).

The peaks are computed over the WAV bytes the audio route would send, a segment at a time, into a
fixed number of buckets: memory stays flat however long the recording. The SVG holds numbers only
(no text anyone typed), and its x axis is in seconds (viewBox width = duration) so the page's
script can map a click to a time.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

import numpy as np
import numpy.typing as npt
from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from api.console import listen
from api.console.guard import PREFIX, Refused, as_page, signed_in_officer
from api.console.sessions import ConsoleUser
from api.core.audit import record_event
from api.core.deps import ServicesDep, deny, live, recording_in_scope
from api.retrieval import prepare_audio
from evidence import audio
from evidence.audit_actions import Action
from evidence.errors import EvidenceError, IntegrityError, NoAudio
from retention.lifecycle import shown_status

router = APIRouter(prefix=PREFIX, include_in_schema=False)
BUCKETS = 900  # about one per pixel of the player's width: finer shows nothing more, coarser hides a shout
# The drawing is scaled to the loudest peak (quiet speech would otherwise be a flat line), but
# never past this fraction of full scale, so hiss in a silent recording is not drawn as a shout.
QUIETEST_SCALE = 0.01
HEADERS = {
    "Cache-Control": "no-store",  # derived from the audio: kept by no cache, as the audio is not
    # Opened on its own, the picture is a document: it may load and run nothing.
    "Content-Security-Policy": "default-src 'none'",
}
Peaks = npt.NDArray[np.float64]


@router.get("/recordings/{recording_id}/waveform.svg")
def waveform(recording_id: uuid.UUID, request: Request, services: ServicesDep) -> Response:
    with services.sessions() as session:
        user = signed_in_officer(services, request, session)
        with as_page(user):
            recording = live(recording_in_scope(request, services, session, user.principal, recording_id))
        grant = listen.granted(session, user, recording.id)
        if grant is None:
            deny(services, request, 403, "console waveform without a listening grant", user.principal.actor)
            raise Refused(403, "State a purpose on the recording's page first.", user)
        seq, target = grant.read_seq, f"recording:{recording.id}"
        shown = shown_status(recording, services.settings.interrupted_after_seconds)
        try:
            verified = prepare_audio(session, services.store, services.keys, recording, "wav", shown)
        except (IntegrityError, NoAudio) as exc:
            session.rollback()
            _failed(session, user, target, seq, exc)
            raise Refused(409, str(exc), user) from exc
    # Decoding runs after the request's session is closed (as the audio route's stream does): a
    # long recording holds no database connection while its segments are opened.
    try:
        lows, highs = peaks(verified.chunks(), verified.frames, verified.channels, BUCKETS)
    except EvidenceError as exc:  # a segment failing its checks once opened: the picture is withheld too
        with services.sessions() as session:
            _failed(session, user, target, seq, exc)
        raise Refused(409, str(exc), user) from exc
    body = svg(lows, highs, verified.frames / verified.rate)
    return Response(body, media_type="image/svg+xml", headers={**HEADERS, "X-Countersign-Access-Log": str(seq)})


def _failed(session: Session, user: ConsoleUser, target: str, seq: int, exc: EvidenceError) -> None:
    """The audit entry GET .../audio writes for the same failure (integrity failed, or no audio), committed."""
    failed = not isinstance(exc, NoAudio)
    record_event(
        session,
        actor=user.principal.actor,
        action=Action.EVIDENCE_INTEGRITY if failed else Action.EVIDENCE_NO_AUDIO,
        target=target,
        outcome="failed" if failed else "allowed",
        detail={"error": str(exc), "read": seq, "via": "console", "view": "waveform"},
    )
    session.commit()


def peaks(wav: Iterable[bytes], frames: int, channels: int, buckets: int) -> tuple[Peaks, Peaks]:
    """The lowest and highest sample (of any channel) in each of `buckets` runs of frames, as fractions of
    full scale, from a 16-bit PCM WAV of `frames` frames streamed in chunks of any size (its 44-byte header
    first). Fewer buckets than asked when there are fewer frames; one silent bucket when there are none."""
    count = max(1, min(buckets, frames))
    lows = np.full(count, np.iinfo(np.int16).max, dtype=np.int32)
    highs = np.full(count, np.iinfo(np.int16).min, dtype=np.int32)
    block = 2 * channels
    header = audio.WAV_HEADER_BYTES
    carry = b""  # a frame split between two chunks (the audio route's chunks are whole segments, but a
    done = 0  # WAV stream owes its reader no alignment)
    for chunk in wav:
        if header:
            cut = min(header, len(chunk))
            chunk, header = chunk[cut:], header - cut
        data = carry + chunk if carry else chunk
        whole = len(data) - len(data) % block
        carry = data[whole:]
        if not whole:
            continue
        samples = np.frombuffer(data, dtype="<i2", count=whole // 2).reshape(-1, channels)
        # Frame f belongs to bucket floor(f * count / frames); a chunk spans a few buckets, in order.
        index = np.arange(done, done + len(samples), dtype=np.int64) * count // max(frames, 1)
        np.minimum(index, count - 1, out=index)  # frames past the stated count (none, if verified) go last
        starts = np.flatnonzero(np.diff(index)) + 1
        starts = np.concatenate(([0], starts))
        ids = index[starts]
        lows[ids] = np.minimum(lows[ids], np.minimum.reduceat(samples.min(axis=1), starts))
        highs[ids] = np.maximum(highs[ids], np.maximum.reduceat(samples.max(axis=1), starts))
        done += len(samples)
    empty = lows > highs  # a bucket no frame reached: drawn as silence
    lows[empty], highs[empty] = 0, 0
    scale = float(-np.iinfo(np.int16).min)
    return lows / scale, highs / scale


def svg(lows: Peaks, highs: Peaks, seconds: float) -> str:
    """The envelope as one filled polygon (highs left to right, lows back), x in seconds, y up = louder."""
    width = seconds if seconds > 0 else 1.0  # a viewBox needs a width; a recording without frames shows a line
    count = len(highs)
    step = width / count
    xs = [0.0] + [(i + 0.5) * step for i in range(count)] + [width]
    top = [highs[0], *highs, highs[-1]]
    bottom = [lows[0], *lows, lows[-1]]
    # SVG's y grows downwards: a sample's value v is drawn at y = -v.
    upper = [f"{x:.5f},{-float(v):.5f}" for x, v in zip(xs, top, strict=True)]
    lower = [f"{x:.5f},{-float(v):.5f}" for x, v in zip(reversed(xs), reversed(bottom), strict=True)]
    reach = max(QUIETEST_SCALE, float(np.max(np.abs(highs))), float(np.max(np.abs(lows))))
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" width="900" height="96" preserveAspectRatio="none"'
        f' viewBox="0 {-reach:.5f} {width:.5f} {2 * reach:.5f}" data-seconds="{width:.5f}">'
        f'<line x1="0" y1="0" x2="{width:.5f}" y2="0" stroke="#8a8f98" stroke-width="1"'
        ' vector-effect="non-scaling-stroke"/>'
        f'<polygon id="envelope" fill="#2b5797" points="{" ".join(upper + lower)}"/>'
        "</svg>"
    )
