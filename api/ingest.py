"""Accepting evidence from devices: recording headers and segments.

Every check that makes evidence trustworthy happens here, before anything is
stored: the device's signature, the chain, the consent record, the size.
Uploads are idempotent so a device can always retry: the same index with the
same bytes succeeds again, different bytes are a conflict.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import NoReturn, Protocol, cast

import nacl.signing
from fastapi import HTTPException
from sqlalchemy import Table, and_, bindparam, exists, func, literal_column, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError as DBIntegrityError
from sqlalchemy.orm import Session, lazyload

from api.core.audit import record_event
from api.core.batch_rows import insert_row
from api.core.group_commit import Refusal
from api.core.keys import check_sealed_to
from api.core.models import (
    AccessLog,
    Device,
    DeviceUsage,
    EvidenceKey,
    NoticeRow,
    Recording,
    SealedKey,
    Segment,
    utcnow,
)
from api.core.settings import Settings
from api.core.storage import BlobStore
from api.core.storage.interface import ObjectExists, segment_key
from api.schemas import RecordingCreate
from consent.records import ConsentError, ConsentRecord
from evidence.audit_actions import Action
from evidence.chain import (
    SegmentStatement,
    SignedSegment,
    canonical_json,
    header_hash,
    verify_header,
    verify_segment,
)
from evidence.envelope import check_envelope
from evidence.errors import EvidenceError, FormatError
from evidence.wire import HeaderError, RecordingHeader
from retention.holds_sync import active_on_site, held_by_active
from retention.models import Hold
from retention.store import FACT_COLUMNS, facts_from_row, refresh_retention

SEALED_KEY_BYTES = 32 + 48  # data key + crypto_box_seal overhead (ephemeral pk + MAC)


def _reject(status: int, detail: str) -> HTTPException:
    return HTTPException(status_code=status, detail=detail)


def _parse_header(body: RecordingCreate, device: Device) -> tuple[RecordingHeader, ConsentRecord]:
    """The strict wire parser first (evidence.wire), then what only the service can check."""
    try:
        header = RecordingHeader.parse(body.header)
        if header.device_id != device.id:
            raise HeaderError("header names another device")
        consent = ConsentRecord.from_dict(header.consent)
    except ConsentError as exc:
        raise _reject(422, f"invalid consent record: {exc}") from exc
    except FormatError as exc:
        raise _reject(422, f"invalid recording header: {exc.detail}") from exc
    except (KeyError, TypeError, ValueError, AttributeError) as exc:  # a consent value from_dict did not foresee
        raise _reject(422, f"invalid recording header: {exc}") from exc
    return header, consent


def _check_consent(session: Session, consent: ConsentRecord) -> None:
    row = session.get(NoticeRow, (consent.notice_id, consent.notice_version, consent.language))
    if row is None or row.sha256 != consent.notice_sha256:
        raise _reject(422, "consent record names a notice version this service does not know")


def _verify_key(device: Device | Signer) -> nacl.signing.VerifyKey:
    if device.public_key is None:
        raise _reject(403, "device is not enrolled")
    return nacl.signing.VerifyKey(device.public_key)


# --------------------------------------------------------------------------- per-device quotas
#
# A device is authenticated, so what it may cost the service is bounded per device: how many
# recordings it holds open, how many bytes it sends per UTC day (segment bodies and recording
# headers: a create-interrupt loop is bounded too), and how large one signed header may be.
# A refusal stores nothing. It is logged (api:access:denied, target device:<id>) only the
# first time each quota refuses that device in a UTC day: enough for an admin to see a
# misbehaving device, and a device retrying all day cannot grow the log.


@dataclass(frozen=True)
class Quotas:
    """Per-device limits (COUNTERSIGN_MAX_OPEN_RECORDINGS, _DEVICE_BYTES_PER_DAY, _MAX_HEADER_BYTES)."""

    open_recordings: int
    bytes_per_day: int
    header_bytes: int

    @classmethod
    def from_settings(cls, settings: Settings) -> Quotas:
        return cls(settings.max_open_recordings, settings.device_bytes_per_day, settings.max_header_bytes)


def _utc_day(now: datetime) -> date:
    return now.astimezone(UTC).date()


def _seconds_to_next_utc_day(now: datetime) -> int:
    midnight = datetime.combine(_utc_day(now) + timedelta(days=1), time(), tzinfo=UTC)
    return max(1, int((midnight - now).total_seconds()) + 1)


def _refuse(
    session: Session, device_id: str, quota: str, status: int, detail: str, headers: dict[str, str] | None = None
) -> HTTPException:
    """Undo whatever this request wrote, log the first refusal of the day by this quota, and answer."""
    session.rollback()
    now = utcnow()
    since = datetime.combine(_utc_day(now), time(), tzinfo=UTC)
    target = f"device:{device_id}"
    # Indexed on target: a device has a few entries of its own (admin changes, these refusals).
    earlier = session.scalars(
        select(AccessLog.detail).where(
            AccessLog.target == target, AccessLog.action == Action.ACCESS_DENIED, AccessLog.at >= since
        )
    )
    if not any(entry.get("quota") == quota for entry in earlier):
        record_event(
            session, actor=target, action=Action.ACCESS_DENIED, target=target, outcome="denied",
            detail={"status": status, "quota": quota, "reason": detail, "logged": "once per device, quota and UTC day"},
        )  # fmt: skip
        session.commit()
    return HTTPException(status_code=status, detail=detail, headers=headers)


def _start_day(session: Session, device_id: str, day: date, size: int) -> bool:
    """Insert today's row already charged with `size`; False if another upload made it first."""
    values = {"device_id": device_id, "day": day, "uploaded_bytes": size, "uploads": 1}
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    first = insert(DeviceUsage).values(**values).on_conflict_do_nothing().returning(DeviceUsage.uploads)
    return session.connection().execute(first).first() is not None  # (rowcount is -1 here on psycopg)


def try_charge(session: Session, device_id: str, size: int, quotas: Quotas) -> int | None:
    """Charge `size` bytes to the device's day (UTC); None if charged, else the bytes already sent today.

    One conditional UPDATE on the (device, day) row in the caller's transaction: it adds only
    if the sum stays within the quota, so racing uploads cannot both slip under it, and a
    refused or failed request rolls its charge back with everything else. A refusal writes
    nothing. Its row lock (the database's write lock on SQLite) also serialises a device's
    recording creations, which is what makes the open-recording count exact.
    """
    day = _utc_day(utcnow())
    params = {"device": device_id, "on_day": day, "size": size, "limit": quotas.bytes_per_day}

    def bump() -> bool:
        changed: int = session.connection().execute(_CHARGE, params).rowcount
        return changed == 1

    if bump():
        return None
    # No row yet today (the first upload of the day makes it), or one made meanwhile by a racing upload.
    if size <= quotas.bytes_per_day and (_start_day(session, device_id, day, size) or bump()):
        return None
    key = (DeviceUsage.device_id == device_id, DeviceUsage.day == day)
    return session.scalar(select(DeviceUsage.uploaded_bytes).where(*key)) or 0


# Built once with bound parameters: building it per upload (ORM attribute operators, a new cache
# key each time) was a seventh of the server's GIL time in the ingest profile.
_CHARGE = (
    update(cast(Table, DeviceUsage.__table__))
    .where(
        DeviceUsage.device_id == bindparam("device"),
        DeviceUsage.day == bindparam("on_day"),
        DeviceUsage.uploaded_bytes + bindparam("size") <= bindparam("limit"),
    )
    .values(uploaded_bytes=DeviceUsage.uploaded_bytes + bindparam("size"), uploads=DeviceUsage.uploads + 1)
)


def over_quota(
    session: Session, device_id: str, used: int, size: int, quotas: Quotas, what: str, now: datetime
) -> HTTPException:
    """The 429 for a device that has sent `used` bytes today and asks for `size` more (logged once a day)."""
    wait = _seconds_to_next_utc_day(now)
    return _refuse(
        session, device_id, "bytes_per_day", 429,
        f"daily upload quota reached: this device has sent {used} of its {quotas.bytes_per_day} bytes "
        f"today (UTC) and this {what} of {size} bytes would pass it; retry after 00:00 UTC",
        {"Retry-After": str(wait)},
    )  # fmt: skip


def _open_count(session: Session, device_id: str, quotas: Quotas) -> int:
    # Reads only ix_recordings_device_open (open recordings), and stops counting at the limit. The
    # status is a literal, not a parameter, so even a generic (prepared) plan can use that partial index.
    is_open = Recording.status == literal_column("'open'")
    open_ids = select(Recording.id).where(Recording.device_id == device_id, is_open)
    return session.scalar(select(func.count()).select_from(open_ids.limit(quotas.open_recordings).subquery())) or 0


def _refuse_open(session: Session, device_id: str, count: int) -> HTTPException:
    return _refuse(
        session, device_id, "open_recordings", 429,
        f"this device already has {count} open recordings, the most it may hold open; "
        "finish or interrupt one before opening another",
    )  # fmt: skip


class OpenQuotaFull(Exception):
    """The open-recordings quota, counted after the charge, was full (a racing creation took the last place)."""

    def __init__(self, count: int) -> None:
        super().__init__(f"{count} recordings open")
        self.count = count


def _check_header_size(session: Session, device_id: str, body: RecordingCreate, quotas: Quotas) -> int:
    size = len(canonical_json(body.header))  # exactly the JSON the device signed (and the database keeps)
    if size > quotas.header_bytes:
        raise _refuse(
            session, device_id, "header_bytes", 413,
            f"recording header is {size} bytes; at most {quotas.header_bytes} are accepted",
        )  # fmt: skip
    return size


@dataclass(frozen=True)
class CheckedRecording:
    """A recording's creation that has passed every check but the charges (check_recording)."""

    device_id: str
    site_id: str
    body: RecordingCreate
    header: RecordingHeader
    consent: ConsentRecord
    signature: bytes
    header_size: int

    @property
    def objected(self) -> bool:
        return self.consent.outcome == "objected"


def create_recording(
    session: Session, device: Device, body: RecordingCreate, quotas: Quotas | None = None
) -> tuple[Recording, bool]:
    """Register a recording (or an objection record). Returns (recording, created).

    With `quotas` (the service always passes them) the header's size is checked first, before
    any parsing or signature work, and a new recording is charged to the device's daily bytes
    and, unless it is an objection record (closed at once), to its open recordings.
    The service splits the same two steps across a read session and a group commit
    (api.routes.ingest); this is both in one transaction, for callers that have one.
    """
    checked = check_recording(session, device, body, quotas)
    if isinstance(checked, Recording):
        return checked, False
    try:
        return write_recording(session, checked, quotas)
    except Refusal as refusal:
        if isinstance(refusal.error, HTTPException):
            raise refusal.error from None
        raise refuse_recording(session, checked, refusal.error, quotas) from None
    except OpenQuotaFull as exc:
        raise refuse_recording(session, checked, exc, quotas) from None


def check_recording(
    session: Session, device: Device, body: RecordingCreate, quotas: Quotas | None = None
) -> CheckedRecording | Recording:
    """Everything before the writes (reads only): the checked creation, or the existing recording
    for an idempotent repeat. Refusals are HTTPExceptions (a quota's is logged, in its own commit)."""
    device_id = device.id
    header_size = _check_header_size(session, device_id, body, quotas) if quotas is not None else 0
    header, consent = _parse_header(body, device)
    recording_id = header.recording_id
    signature = bytes.fromhex(body.header_signature)
    try:
        verify_header(_verify_key(device), body.header, signature)
    except EvidenceError as exc:
        raise _reject(422, str(exc)) from exc
    _check_consent(session, consent)

    existing = session.get(Recording, str(recording_id))
    if existing is not None:
        if (
            existing.device_id == device.id
            and existing.header == body.header
            and existing.header_signature == signature
        ):
            return existing
        raise _reject(409, "a different recording already has this id")

    objected = consent.outcome == "objected"
    if objected and body.sealed_keys:
        raise _reject(422, "an objection record carries no audio and no data keys")
    if not objected:
        if not body.sealed_keys:
            raise _reject(422, "a recording needs its data key sealed to an evidence key")
        known = set(session.scalars(select(EvidenceKey.key_id)))
        for sealed in body.sealed_keys:
            if sealed.key_id not in known or len(sealed.sealed) != 2 * SEALED_KEY_BYTES:
                raise _reject(422, f"sealed key for unknown evidence key or malformed: {sealed.key_id}")
        check_sealed_to(session, [s.key_id for s in body.sealed_keys])  # not only to retired/destroyed keys
        # A first count here refuses a device at its limit before any write; the exact count
        # follows the charge in write_recording (the charge's lock serialises the device's creations).
        if quotas is not None and (count := _open_count(session, device_id, quotas)) >= quotas.open_recordings:
            raise _refuse_open(session, device_id, count)
    return CheckedRecording(device_id, device.site_id, body, header, consent, signature, header_size)


def write_recording(
    session: Session, checked: CheckedRecording, quotas: Quotas | None = None
) -> tuple[Recording, bool]:
    """The writes of a checked creation; a job for api.core.group_commit (or the caller's transaction).

    The charge comes first: its refusal writes nothing (`Refusal(OverQuota)`). The open-recordings
    count after it is exact; if full, `OpenQuotaFull` after a write, for the caller to roll back.
    The recording is looked up again first: a creation that raced this one (queued before it, or
    committed before a failed batch's job is run again alone) makes this a repeat, or a 409.
    Returns (recording, created).
    """
    body, device_id = checked.body, checked.device_id
    rid = str(checked.header.recording_id)
    # The same request twice at once (a device retrying an opening still queued): the first
    # creates, the second finds it here, in the same writer's order, and is a repeat.
    existing = session.get(Recording, rid)
    if existing is not None:
        if existing.device_id == device_id and existing.header_signature == checked.signature:
            return existing, False
        raise Refusal(_reject(409, "a different recording already has this id"))
    if quotas is not None:
        used = try_charge(session, device_id, checked.header_size, quotas)  # locks the device's day row
        if used is not None:
            raise Refusal(OverQuota(used))
        if not checked.objected and (count := _open_count(session, device_id, quotas)) >= quotas.open_recordings:
            raise OpenQuotaFull(count)
    recording = Recording(
        id=rid,
        device_id=device_id,
        site_id=checked.site_id,
        started_at=checked.header.started,
        status="objected" if checked.objected else "open",
        header=body.header,
        header_signature=checked.signature,
        consent_outcome=checked.consent.outcome,
        head_hash=header_hash(body.header),
        ended_at=utcnow() if checked.objected else None,
        sealed_keys=[SealedKey(key_id=s.key_id, sealed=bytes.fromhex(s.sealed)) for s in body.sealed_keys],
    )
    refresh_retention(session, recording)  # retain-until is known from the start (retention/)
    session.add(recording)
    consent = checked.consent
    record_event(
        session,
        actor=f"device:{device_id}",
        action=Action.CONSENT_OBJECTED if checked.objected else Action.RECORDING_CREATE,
        target=f"recording:{recording.id}",
        detail={"notice": f"{consent.notice_id}/v{consent.notice_version}/{consent.language}"},
    )
    # Within the job: a conflict (the same id created meanwhile by another process) fails here, not
    # in another job's statement or at the batch's commit; run again alone, the job then finds it.
    try:
        session.flush()
    except DBIntegrityError as exc:
        raise _reject(409, "this recording was created concurrently; retry") from exc
    return recording, True


def refuse_recording(
    session: Session, checked: CheckedRecording, error: BaseException, quotas: Quotas | None
) -> HTTPException:
    """The answer for a creation its charges refused (rolls the session back, logs once a day)."""
    assert quotas is not None  # only the charges refuse
    if isinstance(error, OverQuota):
        what = "recording header"
        return over_quota(session, checked.device_id, error.used, checked.header_size, quotas, what, utcnow())
    if isinstance(error, OpenQuotaFull):
        return _refuse_open(session, checked.device_id, error.count)
    raise error


@dataclass(frozen=True)
class SegmentUpload:
    index: int
    final: bool
    plaintext_sha256: bytes
    prev_hash: bytes
    signature: bytes
    body: bytes


def own_recording(session: Session, device_id: str, recording_id: uuid.UUID) -> Recording:
    recording = session.get(Recording, str(recording_id), options=[lazyload(Recording.sealed_keys)])
    if recording is None or recording.device_id != device_id:
        _not_ours(session, device_id, str(recording_id), None if recording is None else recording.device_id)
    assert recording is not None
    return recording


def _not_ours(session: Session, device_id: str, recording_id: str, owner: str | None) -> NoReturn:
    """404 for an absent recording or another device's; the latter is logged (answered alike: no probing)."""
    if owner is not None and owner != device_id:
        record_event(
            session, actor=f"device:{device_id}", action=Action.ACCESS_DENIED, target=f"recording:{recording_id}",
            outcome="denied", detail={"status": 404, "reason": "recording belongs to another device"},
        )  # fmt: skip
        session.commit()
    raise _reject(404, "no such recording for this device")


class Signer(Protocol):
    """Who uploads: a device's id and Ed25519 verify key (api.core.deps.Principal, or a Device row)."""

    @property
    def id(self) -> str: ...

    @property
    def public_key(self) -> bytes | None: ...


# Everything an upload checks, in one statement: the recording's chain head and state (with the
# facts a legal hold is matched on), the segment already stored at this index if any, the
# device's bytes today (the quota's first look; the charge itself is the conditional UPDATE), and
# whether its site has an active hold at all.
_UPLOAD_STATE = (
    select(
        *FACT_COLUMNS,
        Recording.segment_count,
        Recording.head_hash,
        Recording.purge_state,
        Segment.ciphertext_sha256,
        Segment.signature,
        Segment.final,
        DeviceUsage.uploaded_bytes,
        # Whether any hold of the recording's site is active: only then is the hold lookup run
        # (holds are rare; the lookup was one statement and a twentieth of the GIL per upload).
        exists(select(Hold.id).where(active_on_site(Recording.site_id))).correlate(Recording).label("site_holds"),
    )
    .outerjoin(Segment, and_(Segment.recording_id == Recording.id, Segment.index == bindparam("index")))
    .outerjoin(DeviceUsage, and_(DeviceUsage.device_id == Recording.device_id, DeviceUsage.day == bindparam("day")))
    .where(Recording.id == bindparam("rid"))
)


@dataclass(frozen=True)
class CheckedSegment:
    """A segment that has verified and whose object is stored: what its rows will say."""

    recording_id: str
    device_id: str
    index: int
    final: bool
    ciphertext_sha256: bytes
    plaintext_sha256: bytes
    prev_hash: bytes
    signature: bytes
    size: int
    object_key: str
    link_hash: bytes  # the chain head after this segment
    received_at: datetime


class OverQuota(Exception):
    """The daily byte quota refused a segment at its charge (`used` bytes were already sent today)."""

    def __init__(self, used: int) -> None:
        super().__init__(f"{used} bytes already sent today")
        self.used = used


def add_segment(
    session: Session,
    store: BlobStore,
    device: Signer,
    recording_id: uuid.UUID,
    up: SegmentUpload,
    quotas: Quotas | None = None,
) -> bool:
    """Verify and store one segment in the caller's transaction. True if it was new, False for a repeat.

    The service splits the same two steps across a read session and a group commit
    (api.routes.ingest); this is both in one transaction, for callers that have one.
    """
    checked = check_segment(session, store, device, recording_id, up, quotas)
    if checked is None:
        return False
    try:
        write_segment(session, checked, quotas)
    except Refusal as refusal:
        raise refusal.error from None
    except OverQuota as exc:
        raise refuse_over_quota(session, checked, exc.used, quotas) from None
    return True


def check_segment(
    session: Session,
    store: BlobStore,
    device: Signer,
    recording_id: uuid.UUID,
    up: SegmentUpload,
    quotas: Quotas | None = None,
) -> CheckedSegment | None:
    """Everything before the writes: read, verify, store the object. None for an idempotent repeat.

    Statements: one read of everything checked (above), and the legal-hold lookup only if the
    site has an active hold; no writes (a refusal of another device's recording is logged, in its
    own commit). The object is written (fsync) here, before any row names it, so no database lock
    is held across it (on SQLite the write lock is the whole database's) and a crash leaves an
    orphan object, never a row without data; never over other bytes (see the put below).

    An idempotent repeat is answered before the daily byte quota (it adds nothing). A new segment is
    checked against the quota once it has verified, before anything is stored, and charged in
    write_segment: an upload refused there (only one that raced another of the same device at the
    quota's edge) leaves an unreferenced object, as a crash does.
    """
    rid = str(recording_id)
    ciphertext_sha256 = hashlib.sha256(up.body).digest()
    now = utcnow()
    # Core execution on the session's connection and transaction (no ORM compile step): every
    # statement of an upload below is a Core statement, and no ORM object is pending to autoflush.
    connection = session.connection()
    row = connection.execute(_UPLOAD_STATE, {"rid": rid, "index": up.index, "day": _utc_day(now)}).first()
    if row is None or row.device_id != device.id:
        _not_ours(session, device.id, rid, None if row is None else row.device_id)
    if row.ciphertext_sha256 is not None:
        same = row.ciphertext_sha256 == ciphertext_sha256 and row.signature == up.signature and row.final == up.final
        if same:
            return None
        raise _reject(409, f"segment {up.index} was already received with different content")
    if row.purge_state is not None:
        raise _reject(410, "this recording has been deleted; it accepts no more segments")
    if row.status == "objected":
        raise _reject(409, "the customer objected: this recording accepts no audio")
    if row.status != "open":
        raise _reject(409, f"recording is {row.status}; it accepts no more segments")
    if up.index != row.segment_count:
        raise _reject(409, f"expected segment {row.segment_count}, got {up.index}")
    if up.prev_hash != row.head_hash:
        raise _reject(409, f"segment {up.index} does not follow the last segment received")
    try:
        check_envelope(up.body)
        statement = SegmentStatement(
            recording_id, up.index, up.final, ciphertext_sha256, up.plaintext_sha256, up.prev_hash
        )
        verify_segment(_verify_key(device), SignedSegment(statement, up.signature), row.head_hash, recording_id)
    except EvidenceError as exc:
        raise _reject(422, str(exc)) from exc

    used = row.uploaded_bytes or 0
    if quotas is not None and used + len(up.body) > quotas.bytes_per_day:
        raise over_quota(session, device.id, used, len(up.body), quotas, f"segment {up.index}", now)
    key = segment_key(rid, up.index)
    try:
        # Before the row: a crash leaves an orphan object, never a row without data. Never over other
        # bytes: two different copies of one index racing (a device's key used twice) would otherwise
        # let the loser's bytes replace the winner's under the winner's row.
        store.put(key, up.body, replace=False)
    except ObjectExists as exc:
        raise _reject(
            409, f"segment {up.index}: other bytes for this index are being stored or were left by an earlier attempt"
        ) from exc
    # Then the store's legal hold, if a hold covers the recording, still before the row: a crash
    # leaves a held orphan, never a held recording with an unheld segment (retention.holds_sync).
    if row.site_holds and held_by_active(session, facts_from_row(row)):
        store.set_legal_hold(key, True)
    return CheckedSegment(
        recording_id=rid,
        device_id=device.id,
        index=up.index,
        final=up.final,
        ciphertext_sha256=ciphertext_sha256,
        plaintext_sha256=up.plaintext_sha256,
        prev_hash=up.prev_hash,
        signature=up.signature,
        size=len(up.body),
        object_key=key,
        link_hash=statement.link_hash(),
        received_at=now,
    )


def write_segment(session: Session, checked: CheckedSegment, quotas: Quotas | None = None) -> None:
    """The writes of one checked segment; a job for api.core.group_commit (or the caller's transaction).

    Statements: the chain head's compare-and-set, the quota charge, the segment row, the audit
    entry (three; in a group-commit batch only its INSERT after the batch's first, the head's
    statements being shared: api.core.audit.APPEND_BATCH). The compare-and-set comes first and
    re-checks, under the write lock (SQLite's, or the row's on PostgreSQL), everything
    check_segment relied on that another request can change: still open, not deleted, this index
    next, this head. If it moves nothing, nothing was written: `Refusal` (409), and the device
    retries (its retry gets the precise reason). A quota refusal at the charge comes after that
    write: `OverQuota`, for the caller to roll back.
    """
    rid, now = checked.recording_id, checked.received_at
    connection = session.connection()
    moved = connection.execute(
        _MOVE_CHAIN,
        {
            "rid": rid,
            "index": checked.index,
            "prev": checked.prev_hash,
            "count": checked.index + 1,
            "head": checked.link_hash,
            "now": now,
            "status": "complete" if checked.final else "open",
            "ended": now if checked.final else None,
        },
    )
    if moved.rowcount != 1:
        raise Refusal(_reject(409, f"segment {checked.index} raced another upload or a change to the recording; retry"))
    if quotas is not None:
        used = try_charge(session, checked.device_id, checked.size, quotas)
        if used is not None:
            raise OverQuota(used)
    row = {
        "recording_id": rid,
        "index": checked.index,
        "final": checked.final,
        "ciphertext_sha256": checked.ciphertext_sha256,
        "plaintext_sha256": checked.plaintext_sha256,
        "prev_hash": checked.prev_hash,
        "signature": checked.signature,
        "size": checked.size,
        "object_key": checked.object_key,
        "received_at": now,
    }
    try:
        insert_row(session, _SEGMENTS, row)  # in a group-commit batch, with the batch's others (api.core.batch_rows)
    except DBIntegrityError as exc:  # cannot follow the compare-and-set above unless the rows disagree
        raise _reject(409, f"segment {checked.index} was stored concurrently; retry") from exc
    record_event(
        session,
        actor=f"device:{checked.device_id}",
        action=Action.SEGMENT_UPLOAD,
        target=f"recording:{rid}",
        detail={"index": checked.index, "final": checked.final, "sha256": checked.ciphertext_sha256.hex()},
    )


def refuse_over_quota(session: Session, checked: CheckedSegment, used: int, quotas: Quotas | None) -> HTTPException:
    """The 429 for a segment its charge refused (rolls the session back, logs once a day)."""
    assert quotas is not None  # only a charge raises OverQuota
    return over_quota(
        session, checked.device_id, used, checked.size, quotas, f"segment {checked.index}", checked.received_at
    )


# On the tables, not the mapped classes: plain Core statements, no ORM unit-of-work around them.
_SEGMENTS = cast(Table, Segment.__table__)
_MOVE_CHAIN = (
    update(cast(Table, Recording.__table__))
    .where(
        Recording.id == bindparam("rid"),
        Recording.segment_count == bindparam("index"),
        Recording.head_hash == bindparam("prev"),
        Recording.status == literal_column("'open'"),
        Recording.purge_state.is_(None),
    )
    .values(
        segment_count=bindparam("count"),
        head_hash=bindparam("head"),
        last_activity_at=bindparam("now"),
        status=bindparam("status"),
        ended_at=bindparam("ended"),
    )
)
