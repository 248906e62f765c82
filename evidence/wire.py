"""The wire contract between a recorder and the service, written down once.

Both sides import this module instead of repeating string literals: the
recording header (`RecordingHeader`: what the device signs, and the strict
parser the service applies before it trusts a single field), the names of the
segment upload headers, and the URL paths of the device endpoints.

A header's `to_dict()` is exactly the dict devices have always signed
(`evidence.chain.header_bytes` hashes it), so signatures made before this
module existed still verify; any change to the fields is a format change and
needs a new FORMAT_VERSION.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from evidence import FORMAT_VERSION
from evidence.chain import HASH_BYTES, SignedSegment
from evidence.errors import FormatError

# --------------------------------------------------------------------------- paths

RECORDINGS = "/v1/recordings"
SEGMENT = RECORDINGS + "/{recording_id}/segments/{index}"
INTERRUPT = RECORDINGS + "/{recording_id}/interrupt"
INCIDENT = RECORDINGS + "/{recording_id}/incident"
ENROL = "/v1/enrol"
KEYS = "/v1/keys"
NOTICES = "/v1/notices"  # each entry says whether a spoken reading exists, and its sha256
NOTICE_AUDIO = NOTICES + "/{notice_id}/versions/{version}/{language}/audio"

# Help alerts and the device's check-in (the counter kiosk; api/alerts on the service side).
#   POST ALERTS       device: {"kind": "help" | "incident", "recording_id": str | null, "category": str | null}
#                     -> 201 ALERT_VIEW
#   GET  ALERT        the device that raised it, or an officer of its site -> ALERT_VIEW
#   POST ALERT_ACK    an officer of its site: {"message": "Sato is coming"} -> ALERT_VIEW
#   GET  ALERTS       officers: the alerts of their sites, newest first (?state=open|escalated|acknowledged)
#   GET  ALERT_STREAM officers: server-sent events, one `alert` event per ALERT_VIEW change
#   POST HEARTBEAT    device: {"clock": ISO 8601, "spool_used_bytes": int, "spool_max_bytes": int,
#                     "unsent_segments": int} -> {"server_time": ISO 8601, "skew_seconds": float}
#   GET  DEVICE_SETTINGS device: {"site": str, "incident_categories": [{"code", "ja", "en"}],
#                     "incident_alerts": bool, "escalate_after_seconds": int}
ALERTS = "/v1/alerts"
ALERT = ALERTS + "/{alert_id}"
ALERT_ACK = ALERT + "/ack"
ALERT_STREAM = ALERTS + "/stream"
HEARTBEAT = "/v1/device/heartbeat"
DEVICE_SETTINGS = "/v1/device/settings"
# Administrators: a site's alerting settings and contacts (GET/PUT; POST a contact, DELETE one).
SITE_ALERTING = "/v1/sites/{site_id}/alerting"
ALERT_CONTACTS = "/v1/sites/{site_id}/alert-contacts"
ALERT_CONTACT = ALERT_CONTACTS + "/{contact_id}"
ALERT_KINDS = ("help", "incident")
# open: the first tier was notified; escalated: a later tier was, nobody has acknowledged yet.
ALERT_STATES = ("open", "escalated", "acknowledged")
# ALERT_VIEW: {"id", "kind", "site", "device_id", "device_name", "recording_id", "category", "state",
#   "tier", "created_at", "escalated_at", "acknowledged_at", "acknowledged_by", "message"}


def notice_audio_path(notice_id: str, version: int, language: str) -> str:
    return NOTICE_AUDIO.format(notice_id=notice_id, version=version, language=language)


def alert_path(alert_id: uuid.UUID | str) -> str:
    return ALERT.format(alert_id=alert_id)


def alert_ack_path(alert_id: uuid.UUID | str) -> str:
    return ALERT_ACK.format(alert_id=alert_id)


def segment_path(recording_id: uuid.UUID | str, index: int) -> str:
    return SEGMENT.format(recording_id=recording_id, index=index)


def interrupt_path(recording_id: uuid.UUID | str) -> str:
    return INTERRUPT.format(recording_id=recording_id)


def incident_path(recording_id: uuid.UUID | str) -> str:
    return INCIDENT.format(recording_id=recording_id)


# --------------------------------------------------------------------------- recording header

SAMPLE_RATES = range(8000, 96001)
CHANNELS = range(1, 3)
MAX_SEGMENT_SECONDS = 3600.0
CODECS = ("flac",)

_BASE_FIELDS = ("version", "recording_id", "device_id", "started_at", "consent")
_AUDIO_FIELDS = ("sample_rate", "channels", "segment_seconds", "codec")
FIELDS = _BASE_FIELDS + _AUDIO_FIELDS


class HeaderError(FormatError):
    """Malformed recording header"""


def _is_int(value: object) -> bool:
    # JSON true/false arrive as bool, which Python counts as int: never an integer field here.
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    # JSON may carry NaN and Infinity (Python's parser accepts them); a huge int is finite.
    return _is_int(value) or (isinstance(value, float) and math.isfinite(value))


@dataclass(frozen=True)
class RecordingHeader:
    """The header a device signs for one recording; its hash is the chain's genesis.

    An objection record (consent outcome other than "given") needs no audio
    parameters, so they are optional there; a consented recording carries all four.
    """

    version: int
    recording_id: uuid.UUID
    device_id: str
    started_at: str  # kept as sent: the signature covers this exact text (see `started`)
    consent: dict[str, Any] = field(hash=False)  # as ConsentRecord.to_dict(); the service validates it there
    sample_rate: int | None = None
    channels: int | None = None
    segment_seconds: float | None = None  # an int stays an int: 5 and 5.0 are different signed bytes
    codec: str | None = None

    @property
    def consented(self) -> bool:
        return self.consent.get("outcome") == "given"

    @property
    def started(self) -> datetime:
        """started_at in UTC (parse() has checked it has a zone and is in range)."""
        return datetime.fromisoformat(self.started_at).astimezone(UTC)

    def to_dict(self) -> dict[str, Any]:
        """Exactly the dict the device signs (audio parameters only when present)."""
        data: dict[str, Any] = {
            "version": self.version,
            "recording_id": str(self.recording_id),
            "device_id": self.device_id,
            "started_at": self.started_at,
            "consent": dict(self.consent),
        }
        for name in _AUDIO_FIELDS:
            value = getattr(self, name)
            if value is not None:
                data[name] = value
        return data

    @classmethod
    def parse(cls, data: object) -> RecordingHeader:
        """A header from untrusted JSON; HeaderError names the first thing wrong with it."""
        if not isinstance(data, dict):
            raise HeaderError("the header must be an object")
        unknown = sorted(str(k) for k in data if k not in FIELDS)
        if unknown:
            raise HeaderError(f"unknown field(s): {', '.join(unknown)}")
        missing = [name for name in _BASE_FIELDS if name not in data]
        if missing:
            raise HeaderError(f"missing field(s): {', '.join(missing)}")
        consent = data["consent"]
        if not isinstance(consent, dict):
            raise HeaderError("consent must be an object")
        consented = consent.get("outcome") == "given"
        missing = [name for name in _AUDIO_FIELDS if consented and name not in data]
        if missing:
            raise HeaderError(f"missing field(s) of a consented recording: {', '.join(missing)}")

        version = data["version"]
        if not _is_int(version) or version != FORMAT_VERSION:
            raise HeaderError(f"header version must be {FORMAT_VERSION}")
        recording_id = _parse_uuid(data["recording_id"])
        device_id = data["device_id"]
        if not isinstance(device_id, str) or not device_id:
            raise HeaderError("device_id must be a non-empty string")
        started_at = data["started_at"]
        _check_time(started_at)

        # Objection records need no audio parameters, but any they carry must be valid too
        # (officers' listings read sample_rate back); sample rate and channels go together.
        rate, channels = data.get("sample_rate"), data.get("channels")
        if consented or "sample_rate" in data or "channels" in data:
            if not (_is_int(rate) and rate in SAMPLE_RATES):
                raise HeaderError("sample_rate must be an integer 8000-96000 (sample_rate and channels go together)")
            if not (_is_int(channels) and channels in CHANNELS):
                raise HeaderError("channels must be 1 or 2 (sample_rate and channels go together)")
        seconds: Any = data.get("segment_seconds")
        if "segment_seconds" in data and not (_is_number(seconds) and 0 < seconds <= MAX_SEGMENT_SECONDS):
            raise HeaderError(f"segment_seconds must be a number in (0, {MAX_SEGMENT_SECONDS:g}]")
        codec = data.get("codec")
        if "codec" in data and codec not in CODECS:
            raise HeaderError(f"codec must be one of {', '.join(CODECS)}")
        return cls(
            version=version,
            recording_id=recording_id,
            device_id=device_id,
            started_at=started_at,
            consent=consent,
            sample_rate=rate,
            channels=channels,
            segment_seconds=seconds,
            codec=codec,
        )


def _parse_uuid(value: object) -> uuid.UUID:
    # Only the canonical spelling: the id names spool folders, object keys and rows, and
    # two spellings of one id would be two recordings to a string comparison.
    try:
        parsed = uuid.UUID(value) if isinstance(value, str) else None
    except ValueError:
        parsed = None
    if parsed is None or str(parsed) != value:
        raise HeaderError("recording_id must be a UUID in canonical form")
    return parsed


def _check_time(value: object) -> None:
    if not isinstance(value, str):
        raise HeaderError("started_at must be an ISO 8601 time")
    try:
        started = datetime.fromisoformat(value)
    except ValueError:
        raise HeaderError("started_at must be an ISO 8601 time") from None
    if started.tzinfo is None:
        raise HeaderError("started_at needs a time zone")
    try:  # the database stores UTC: a time that cannot be expressed in UTC is refused here, not there
        started.astimezone(UTC)
    except (OverflowError, ValueError):
        raise HeaderError("started_at is out of range") from None


# --------------------------------------------------------------------------- segment upload headers

SEGMENT_FINAL = "X-Segment-Final"
PLAINTEXT_SHA256 = "X-Plaintext-Sha256"
PREV_HASH = "X-Prev-Hash"
SIGNATURE = "X-Signature"
UPLOAD_HEADER_NAMES = (SEGMENT_FINAL, PLAINTEXT_SHA256, PREV_HASH, SIGNATURE)
SIGNATURE_BYTES = 64
SEGMENT_CONTENT_TYPE = "application/octet-stream"
"""The envelope goes as the body; the statement's other fields ride in these headers
(the ciphertext hash is not sent: the service computes it from the body)."""


def upload_headers(final: bool, plaintext_sha256: str, prev_hash: str, signature: str) -> dict[str, str]:
    """The upload headers from hex fields (as a spool keeps them); not checked: the service does."""
    return {
        SEGMENT_FINAL: "1" if final else "0",
        PLAINTEXT_SHA256: plaintext_sha256,
        PREV_HASH: prev_hash,
        SIGNATURE: signature,
    }


@dataclass(frozen=True)
class UploadHeaders:
    final: bool
    plaintext_sha256: bytes
    prev_hash: bytes
    signature: bytes

    @classmethod
    def of(cls, segment: SignedSegment) -> UploadHeaders:
        st = segment.statement
        return cls(st.final, st.plaintext_sha256, st.prev_hash, segment.signature)

    def to_dict(self) -> dict[str, str]:
        return upload_headers(self.final, self.plaintext_sha256.hex(), self.prev_hash.hex(), self.signature.hex())

    @classmethod
    def parse(cls, headers: Mapping[str, str]) -> UploadHeaders:
        """From received headers (exact names); FormatError names the header that is wrong."""
        for name in UPLOAD_HEADER_NAMES:
            if name not in headers:
                raise FormatError(f"{name} is required")
        final = headers[SEGMENT_FINAL]
        if final not in ("0", "1"):
            raise FormatError(f"{SEGMENT_FINAL} must be 0 or 1")
        return cls(
            final=final == "1",
            plaintext_sha256=_hex(headers, PLAINTEXT_SHA256, HASH_BYTES),
            prev_hash=_hex(headers, PREV_HASH, HASH_BYTES),
            signature=_hex(headers, SIGNATURE, SIGNATURE_BYTES),
        )


def _hex(headers: Mapping[str, str], name: str, length: int) -> bytes:
    value = headers[name]
    if len(value) != 2 * length:
        raise FormatError(f"{name} must be {length} bytes of hex")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise FormatError(f"{name} must be {length} bytes of hex") from None
