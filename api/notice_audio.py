"""Notice texts and their spoken readings, as admins provision them (api/routes/notices.py).

A notice is pinned by (id, version, language) and the SHA-256 of its text: consent records name
that triple and hash, so a version's text is never changed. An organisation's own wording is a
new version (the highest in its language + 1); the earlier ones stay, for the records naming them.

A reading is not evidence: it is what the counter's speaker plays before consent. It is checked
here (libsndfile must decode it; at most MAX_BYTES and MAX_SECONDS; a sane rate and channel count)
and stored re-encoded as 16-bit PCM WAV, the one format every device plays, with no metadata
chunks carried over from whatever tool made the file. Devices check the SHA-256 of exactly those
bytes (recorder.notice_audio). Generated readings come from espeak-ng (a Debian package), its WAV
read from stdout: nothing is written to disk.
"""

from __future__ import annotations

import hashlib
import io
import subprocess
from dataclasses import dataclass

import numpy as np
import soundfile as sf
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.core.audit import record_event
from api.core.models import NoticeAudio, NoticeRow
from consent.catalogue import text_sha256
from evidence.audit_actions import Action

MAX_BYTES = 5 * 1024 * 1024  # the upload limit (api.middleware reads it for this route, before auth)
MAX_SECONDS = 300  # a notice read aloud takes well under a minute; five is generous
RATES = (8000, 64000)  # inclusive: telephone band up to studio rates
MAX_CHANNELS = 2
BLOCK_FRAMES = 65536
CONTENT_TYPE = "audio/wav"
ESPEAK = "espeak-ng"
ESPEAK_TIMEOUT = 60.0
VOICES = {"ja": "ja", "en": "en"}  # notice language -> espeak-ng voice (consent.catalogue.LANGUAGES)


class NoticeRefused(Exception):
    """A refusal with the HTTP status the route answers (never a 500 for bad input)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


@dataclass(frozen=True)
class Reading:
    wav: bytes
    seconds: float
    sha256: str


def notice_row(session: Session, notice_id: str, version: int, language: str) -> NoticeRow:
    row = session.get(NoticeRow, (notice_id, version, language))
    if row is None:
        raise NoticeRefused(404, f"no notice {notice_id} version {version} in language {language!r}")
    return row


def add_version(session: Session, notice_id: str, language: str, title: str, text: str, actor: str) -> NoticeRow:
    """The next version of a notice in a language; existing versions are never touched."""
    latest = session.scalar(
        select(NoticeRow)
        .where(NoticeRow.id == notice_id, NoticeRow.language == language)
        .order_by(NoticeRow.version.desc())
        .limit(1)
    )
    digest = text_sha256(text)
    if latest is not None and latest.sha256 == digest and latest.title == title:
        raise NoticeRefused(409, f"version {latest.version} already has exactly this title and text")
    # Versions count per (id, language): the ja and en texts of one revision can then share a number.
    version = latest.version + 1 if latest is not None else 1
    row = NoticeRow(id=notice_id, version=version, language=language, title=title, text=text, sha256=digest)
    session.add(row)
    record_event(
        session,
        actor=actor,
        action=Action.NOTICE_ADD,
        target=f"notice:{notice_id}",
        detail={"version": row.version, "language": language, "sha256": digest},
    )
    return row


def normalised(data: bytes) -> Reading:
    """The audio as the service keeps it (16-bit PCM WAV), or NoticeRefused(422) saying what is wrong."""
    if not data:
        raise NoticeRefused(422, "the body is empty: send the audio file (WAV, FLAC or Ogg)")
    if len(data) > MAX_BYTES:  # the middleware refuses it first; this keeps the function safe alone
        raise NoticeRefused(413, f"the audio is larger than {MAX_BYTES} bytes")
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            rate, channels = f.samplerate, f.channels
            if not RATES[0] <= rate <= RATES[1]:
                raise NoticeRefused(422, f"sample rate {rate} Hz is outside {RATES[0]}..{RATES[1]} Hz")
            if not 1 <= channels <= MAX_CHANNELS:
                raise NoticeRefused(422, f"{channels} channels: a notice reading is mono or stereo")
            # A header may misstate its length (espeak-ng's streamed WAV says "as long as possible"):
            # decode in blocks and stop one block past the limit, judging by what decoded.
            limit, blocks, decoded = MAX_SECONDS * rate, [], 0
            for block in f.blocks(blocksize=BLOCK_FRAMES, dtype="int16", always_2d=True):
                blocks.append(block)
                decoded += len(block)
                if decoded > limit:
                    break
    except NoticeRefused:
        raise
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError) as exc:  # libsndfile cannot decode it
        said = getattr(exc, "error_string", None) or type(exc).__name__  # not str(exc): it names a BytesIO
        raise NoticeRefused(422, f"not audio libsndfile can decode ({said})") from None
    if decoded == 0:
        raise NoticeRefused(422, "the audio holds no samples")
    if decoded > limit:
        raise NoticeRefused(422, f"the audio is longer than {MAX_SECONDS} s")
    out = io.BytesIO()
    sf.write(out, np.concatenate(blocks), rate, format="WAV", subtype="PCM_16")
    wav = out.getvalue()
    return Reading(wav, round(decoded / rate, 3), hashlib.sha256(wav).hexdigest())


def synthesise(text: str, language: str) -> bytes:
    """espeak-ng's reading of the text, as the WAV it writes to stdout (text on stdin, never argv)."""
    voice = VOICES.get(language)
    if voice is None:
        raise NoticeRefused(422, f"no speech voice for language {language!r}")
    try:
        done = subprocess.run(
            [ESPEAK, "-v", voice, "--stdout", "--stdin"],
            input=text.encode("utf-8"),
            capture_output=True,
            timeout=ESPEAK_TIMEOUT,
            check=False,
        )
    except FileNotFoundError:
        raise NoticeRefused(503, f"{ESPEAK} is not installed on the service (Debian: apt install espeak-ng)") from None
    except subprocess.TimeoutExpired:
        raise NoticeRefused(503, f"{ESPEAK} did not finish within {ESPEAK_TIMEOUT:.0f} s") from None
    if done.returncode != 0 or not done.stdout:
        said = done.stderr.decode("utf-8", "replace").strip()[:200]
        raise NoticeRefused(503, f"{ESPEAK} failed (exit {done.returncode}): {said or 'no output'}")
    return done.stdout


def store_reading(
    session: Session, notice: NoticeRow, reading: Reading, source: str, actor: str, uploaded_sha256: str | None = None
) -> NoticeAudio:
    """Set (or replace) a notice version's reading; the audit entry names the old and the new hash."""
    key = (notice.id, notice.version, notice.language)
    row = session.get(NoticeAudio, key)
    previous = row.sha256 if row is not None else None
    if row is None:
        row = NoticeAudio(notice_id=notice.id, version=notice.version, language=notice.language)
        session.add(row)
    row.sha256, row.size, row.data = reading.sha256, len(reading.wav), reading.wav
    row.content_type, row.seconds, row.source, row.created_by = CONTENT_TYPE, reading.seconds, source, actor
    detail: dict[str, object] = {
        "version": notice.version,
        "language": notice.language,
        "sha256": reading.sha256,
        "size": len(reading.wav),
        "seconds": reading.seconds,
        "source": source,
        "previous": previous,
    }
    if uploaded_sha256 is not None:
        detail["uploaded_sha256"] = uploaded_sha256  # the file as the admin sent it, before re-encoding
    record_event(session, actor=actor, action=Action.NOTICE_AUDIO_SET, target=f"notice:{notice.id}", detail=detail)
    return row


def audio_index(session: Session) -> dict[tuple[str, int, str], str]:
    """(notice id, version, language) -> the reading's sha256, without loading any audio bytes."""
    rows = session.execute(select(NoticeAudio.notice_id, NoticeAudio.version, NoticeAudio.language, NoticeAudio.sha256))
    return {(r[0], r[1], r[2]): r[3] for r in rows}
