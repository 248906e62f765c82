"""The notices' spoken readings on the device: fetched with the notices, checked, kept at 0600.

GET /v1/notices lists each active notice with `audio_sha256` (null: no reading provisioned). A
reading is fetched from GET /v1/notices/{id}/versions/{version}/{language}/audio into
home/notice-audio/{id}.{language}.v{version}.wav, where recorder.prompt.notice_audio looks for it,
and only if its SHA-256 is the one listed: a download altered on the way (or by a proxy or a
captive portal) is refused and never played. The write is atomic (a temporary file, fsynced, then
renamed), so the speaker never plays half a file. A reading already held with the right hash is
not fetched again; one the service no longer lists is removed.

Enrolment (recorder.enroll) fetches the readings once the home is saved; the kiosk calls
refresh_notices before each recording. Neither fails for want of a reading: the notice is then
shown, the consent record says "displayed", and staff read it aloud.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from consent.catalogue import LANGUAGES, Notice
from evidence import wire
from recorder.client import DeviceClient
from recorder.errors import ServerRefused, ServerUnreachable
from recorder.home import DeviceHome, write_private

Say = Callable[[str], None]
FOLDER = "notice-audio"
MAX_BYTES = 5 * 1024 * 1024  # the service's own limit (api.notice_audio.MAX_BYTES); more is not a reading
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # as the service's Identifier: safe in a file name


@dataclass
class Refreshed:
    """What a refresh did: the notices now held, readings fetched / kept / removed / refused."""

    notices: list[Notice] = field(default_factory=list)
    fetched: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    offline: bool = False


def audio_path(home_root: Path, notice_id: str, version: int, language: str) -> Path:
    """Where recorder.prompt.notice_audio looks for this notice version's reading."""
    return home_root / FOLDER / f"{notice_id}.{language}.v{version}.wav"


def _sha256_of(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        return None


def _named(entry: dict[str, Any]) -> tuple[str, int, str] | None:
    """(id, version, language) if they are safe to put in a file name, else None (never trusted blindly)."""
    notice_id, version, language = entry.get("id"), entry.get("version"), entry.get("language")
    if not (isinstance(notice_id, str) and _ID.fullmatch(notice_id)):
        return None
    if not (isinstance(version, int) and not isinstance(version, bool) and version >= 1):
        return None
    if language not in LANGUAGES:
        return None
    return notice_id, version, str(language)


def sync_audio(home_root: Path, client: DeviceClient, entries: list[dict[str, Any]], say: Say) -> Refreshed:
    """Bring home/notice-audio/ in line with the listing `entries` (GET /v1/notices, or enrolment's)."""
    done = Refreshed()
    for entry in entries:
        named = _named(entry)
        if named is None or "audio_sha256" not in entry:
            continue  # not a notice this device can name a file for, or a service that predates readings
        notice_id, version, language = named
        label = f"{notice_id} v{version} ({language})"
        path = audio_path(home_root, notice_id, version, language)
        want = entry.get("audio_sha256")
        if not isinstance(want, str) or not want:
            if path.exists():  # the service lists no reading for it: never play one it does not vouch for
                path.unlink()
                done.removed.append(label)
            continue
        if _sha256_of(path) == want:
            done.kept.append(label)
            continue
        try:
            data = client.notice_audio(notice_id, version, language)
        except ServerUnreachable as exc:
            say(f"notice audio {label}: the service is unreachable ({exc.detail}); will try again")
            done.offline = True
            continue
        except ServerRefused as exc:
            say(f"notice audio {label}: refused ({exc.detail})")
            done.refused.append(label)
            continue
        got = hashlib.sha256(data).hexdigest()
        if len(data) > MAX_BYTES or got != want:
            # Altered on the way (or a stale cache): not written. An older file for this version does
            # not match the listing either, so it goes too: only what the service vouches for is played.
            say(f"notice audio {label}: the download's SHA-256 {got[:12]}... is not the listed {want[:12]}...; refused")
            path.unlink(missing_ok=True)
            done.refused.append(label)
            continue
        write_private(path, data)
        done.fetched.append(label)
    return done


def refresh_notices(home: DeviceHome, client: DeviceClient, say: Say) -> Refreshed:
    """Fetch the notices and their readings (the kiosk calls this before each recording).

    The listing replaces notices.json only if every notice in it is well-formed (its text matches
    its hash); otherwise, or offline, the notices already held are kept and the refresh says why.
    """
    try:
        listing = client.notices()
    except (ServerUnreachable, ServerRefused) as exc:
        say(f"notices: cannot refresh ({exc.detail}); using the ones held")
        return Refreshed(notices=home.notices(), offline=isinstance(exc, ServerUnreachable))
    except ValueError:
        say(f"notices: GET {wire.NOTICES} did not answer JSON; using the ones held")
        return Refreshed(notices=home.notices())
    try:
        if not isinstance(listing, list) or not listing:
            raise ValueError("not a list of notices")
        notices = [Notice.from_dict(entry) for entry in listing]
    except (KeyError, TypeError, ValueError) as exc:
        say(f"notices: the service's list is not usable ({exc}); using the ones held")
        return Refreshed(notices=home.notices())
    write_private(home.root / "notices.json", json.dumps(listing, ensure_ascii=False, indent=2))
    done = sync_audio(home.root, client, listing, say)
    done.notices = notices
    return done
