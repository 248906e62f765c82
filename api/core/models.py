"""Metadata tables. Evidence bytes live in the blob store; sealed data keys live here."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    and_,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(value: datetime | None) -> str | None:
    """A time as audit details and deletion records carry it (None stays None)."""
    return value.isoformat() if value is not None else None


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC on every backend (SQLite drops the zone otherwise)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime, dict[str, Any]: JSON, bytes: LargeBinary}


class Site(Base):
    __tablename__ = "sites"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class UserSite(Base):
    __tablename__ = "user_sites"
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), primary_key=True)
    site_id: Mapped[str] = mapped_column(ForeignKey("sites.id"), primary_key=True)


class User(Base):
    __tablename__ = "users"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    role: Mapped[str] = mapped_column(String(16))  # officer | admin | auditor
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    # Officers and auditors start pending: a second person approves the grant (api/grants.py).
    pending_approval: Mapped[bool] = mapped_column(Boolean, default=False)
    approved_by: Mapped[str | None] = mapped_column(String(80))
    approved_at: Mapped[datetime | None]
    sites: Mapped[list[UserSite]] = relationship(lazy="selectin", cascade="all, delete-orphan")

    @property
    def site_ids(self) -> list[str]:
        return sorted(s.site_id for s in self.sites)


class Device(Base):
    __tablename__ = "devices"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    site_id: Mapped[str] = mapped_column(ForeignKey("sites.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    enrol_code_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    enrol_expires_at: Mapped[datetime | None]
    enrolled_at: Mapped[datetime | None]
    public_key: Mapped[bytes | None]  # Ed25519 verify key, registered at enrolment
    token_hash: Mapped[str | None] = mapped_column(String(64), unique=True, index=True)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)


class NoticeRow(Base):
    __tablename__ = "notices"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    language: Mapped[str] = mapped_column(String(8), primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    text: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class EvidenceKey(Base):
    """Public halves of the evidence key pairs; private halves stay with the key custodian."""

    __tablename__ = "evidence_keys"
    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    public_key: Mapped[bytes]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # current: devices seal to it (one among service-held keys); previous: superseded by a rotation,
    # still accepted and read; retired: no longer sealed to nor accepted alone, still read until
    # destroyed; destroyed: private key file gone (api.core.keys, api.key_custody).
    state: Mapped[str] = mapped_column(String(16), default="current")
    custody: Mapped[str] = mapped_column(String(16), default="service")  # service | offline (no private half here)
    # An offline key's Ed25519 recovery verify key: it signs the recovery records of reads made with the
    # offline key without the service (`countersign keys import-recovery` checks them against it).
    recovery_verify_key: Mapped[bytes | None]
    retired_at: Mapped[datetime | None]
    destroyed_at: Mapped[datetime | None]


class Recording(Base):
    __tablename__ = "recordings"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"))  # ix_recordings_device_activity below
    site_id: Mapped[str] = mapped_column(ForeignKey("sites.id"), index=True)
    started_at: Mapped[datetime] = mapped_column(index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)  # open | complete | interrupted | objected
    header: Mapped[dict[str, Any]]  # the signed header, consent record included
    header_signature: Mapped[bytes]
    consent_outcome: Mapped[str] = mapped_column(String(16))
    incident_category: Mapped[str | None] = mapped_column(String(64))
    segment_count: Mapped[int] = mapped_column(Integer, default=0)
    head_hash: Mapped[bytes]  # link hash of the last segment accepted (the header hash at first)
    last_activity_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[datetime | None]
    # Retention (see retention/): recomputed on create, flag, extension and policy change,
    # so the purge sweep is an indexed range query (ix_recordings_due below).
    retain_until: Mapped[datetime | None]  # None: no deletion rule applies
    retain_reason: Mapped[str | None] = mapped_column(String(300))
    retain_extended_until: Mapped[datetime | None]  # an officer's explicit extension; policies never shorten it
    purge_state: Mapped[str | None] = mapped_column(String(16))  # None | shredding | purged
    sealed_keys: Mapped[list[SealedKey]] = relationship(lazy="selectin", cascade="all, delete-orphan")


class SealedKey(Base):
    """A recording's data key sealed (crypto_box_seal) to one evidence public key."""

    __tablename__ = "sealed_keys"
    recording_id: Mapped[str] = mapped_column(ForeignKey("recordings.id"), primary_key=True)
    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    sealed: Mapped[bytes]


class Segment(Base):
    __tablename__ = "segments"
    recording_id: Mapped[str] = mapped_column(ForeignKey("recordings.id"), primary_key=True)
    index: Mapped[int] = mapped_column(Integer, primary_key=True)
    final: Mapped[bool] = mapped_column(Boolean)
    ciphertext_sha256: Mapped[bytes]
    plaintext_sha256: Mapped[bytes]
    prev_hash: Mapped[bytes]
    signature: Mapped[bytes]
    size: Mapped[int] = mapped_column(Integer)
    object_key: Mapped[str] = mapped_column(String(200))
    received_at: Mapped[datetime] = mapped_column(default=utcnow)


class DeviceUsage(Base):
    """What one device sent in one UTC day: the daily byte quota's counter (api.ingest.try_charge).

    One row per device and day, bumped by a conditional UPDATE in the upload's own transaction,
    so checking the quota costs one primary-key statement however much the device has stored.
    """

    __tablename__ = "device_usage"
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)  # UTC
    uploaded_bytes: Mapped[int] = mapped_column(BigInteger, default=0)  # segment bodies and recording headers
    uploads: Mapped[int] = mapped_column(Integer, default=0)  # how many of them


class AccessLog(Base):
    """Append-only, hash-chained record of security-relevant events. Written only by api.core.audit.record_event.

    seq is assigned under the audit head's lock, so it has no gaps; chain_hash
    links each entry to all before it (see evidence.audit_log).
    """

    __tablename__ = "access_log"
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(80))  # user:<id>, device:<id>, anonymous, system
    action: Mapped[str] = mapped_column(String(64), index=True)  # source:subject:action
    target: Mapped[str | None] = mapped_column(String(200), index=True)
    outcome: Mapped[str] = mapped_column(String(16))  # allowed | denied | failed
    purpose: Mapped[str | None] = mapped_column(Text)
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
    entry_hash: Mapped[bytes]
    chain_hash: Mapped[bytes]
    seal: Mapped[bytes]  # keyed BLAKE2b of chain_hash: proves the service itself wrote the entry


class AuditHead(Base):
    """One row: the last sequence number and chain hash. Locking it serialises appends."""

    __tablename__ = "audit_head"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)  # 64-bit: 2,000 uploads/s would pass 2**31 in 12 days
    chain_hash: Mapped[bytes]
    checkpoint_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    checkpoint_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Leaves [0, nodes_filled) have every perfect Merkle subtree above them in audit_nodes.
    nodes_filled: Mapped[int] = mapped_column(BigInteger, default=0)


class AuditCheckpoint(Base):
    """A signed statement by the service: the log had this head at this time."""

    __tablename__ = "audit_checkpoints"
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    chain_hash: Mapped[bytes]
    at: Mapped[datetime]
    signature: Mapped[bytes]  # over the tree head (v2) when tree_root is set, else over the v1 checkpoint
    tree_root: Mapped[bytes | None]  # the Merkle root of the first seq entries (None: signed before the tree)


class AuditNode(Base):
    """A perfect subtree of the audit log's Merkle tree (api.core.audit_tree): level >= 1.

    Node (level, index) covers leaves [index * 2**level, (index + 1) * 2**level); the
    leaves themselves are access_log.entry_hash (leaf index = seq - 1) and are not copied.
    """

    __tablename__ = "audit_nodes"
    level: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    index: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    hash: Mapped[bytes]


# The purge sweep: "purge_state IS NULL AND retain_until <= now" and "purge_state = 'shredding'"
# are both range scans on this index, so finding nothing costs the same at 10k or 10M rows.
Index("ix_recordings_purge_due", Recording.purge_state, Recording.retain_until)

# Officer search (api.search): site + time range, newest first, and the incident list. Measured
# by bench/search.py at 1M rows in PostgreSQL: p95 in the database 6.6 -> 0.95 ms and 40 -> 0.6 ms.
_live_incidents = and_(Recording.incident_category.is_not(None), Recording.purge_state.is_(None))
Index("ix_recordings_site_started", Recording.site_id, Recording.started_at.desc())
Index(
    "ix_recordings_site_incidents",
    Recording.site_id,
    Recording.started_at.desc(),
    postgresql_where=_live_incidents,
    sqlite_where=_live_incidents,
)
# The console's narrowed search (held, status, staff, device, note: api.search.Narrowing) walks live
# recordings newest first; without it the walk reads every purged row too (bench/console_search.py).
_live = Recording.purge_state.is_(None)
Index(
    "ix_recordings_live_site_started",
    Recording.site_id,
    Recording.started_at.desc(),
    postgresql_where=_live,
    sqlite_where=_live,
)

# Per-device open-recording quota (api.ingest): counting a device's open recordings reads only
# this partial index, which holds open recordings alone (a handful per device), never its history.
_open = Recording.status == "open"
Index("ix_recordings_device_open", Recording.device_id, postgresql_where=_open, sqlite_where=_open)

# A device's recordings, and its last contact (/metrics, api.core.metrics): max(last_activity_at)
# for one device is a single probe of this index. It also serves every lookup by device_id.
Index("ix_recordings_device_activity", Recording.device_id, Recording.last_activity_at)

# At most one current service-held evidence key: two concurrent rotations cannot both win.
_current_service_key = and_(EvidenceKey.state == "current", EvidenceKey.custody == "service")
Index(
    "ix_evidence_keys_one_current",
    EvidenceKey.state,
    unique=True,
    postgresql_where=_current_service_key,
    sqlite_where=_current_service_key,
)


# --------------------------------------------------------------------------- help alerts (api/alerts)
# Here rather than in api/alerts so the one metadata the migrations compare holds them (as the core tables).


class SiteAlerting(Base):
    """A site's alerting: how long an alert waits for an acknowledgment, and when the counter is staffed."""

    __tablename__ = "site_alerting"
    site_id: Mapped[str] = mapped_column(ForeignKey("sites.id"), primary_key=True)
    escalate_after_seconds: Mapped[int] = mapped_column(Integer, default=120)
    incident_alerts: Mapped[bool] = mapped_column(Boolean, default=True)  # an incident flag raises an alert too
    opening_hours: Mapped[str | None] = mapped_column(String(200))  # "mon-fri 08:30-17:15; sat 09:00-12:00"
    timezone: Mapped[str] = mapped_column(String(64), default="Asia/Tokyo")
    incident_categories: Mapped[list[dict[str, str]] | None] = mapped_column(JSON)  # None: the built-in list
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_by: Mapped[str] = mapped_column(String(80))


class AlertContact(Base):
    """Who is told, and how: an e-mail address or a webhook URL, in an escalation tier (1 first)."""

    __tablename__ = "alert_contacts"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    site_id: Mapped[str] = mapped_column(ForeignKey("sites.id"), index=True)
    tier: Mapped[int] = mapped_column(Integer)
    channel: Mapped[str] = mapped_column(String(16))  # email | webhook
    target: Mapped[str] = mapped_column(String(500))
    # The webhook's HMAC key: kept in clear because signing needs it; returned once, at creation, never again.
    secret: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str] = mapped_column(String(80))


class Alert(Base):
    """A call for help (or an incident flag) from a counter device, until a supervisor acknowledges it."""

    __tablename__ = "alerts"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # evidence.wire.ALERT_KINDS
    site_id: Mapped[str] = mapped_column(ForeignKey("sites.id"))
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"), index=True)
    recording_id: Mapped[str | None] = mapped_column(ForeignKey("recordings.id"))
    category: Mapped[str | None] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))  # evidence.wire.ALERT_STATES
    tier: Mapped[int] = mapped_column(Integer, default=1)  # the highest tier notified so far
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    escalate_at: Mapped[datetime | None]  # when the next tier is due (None: acknowledged, or no tier left)
    escalated_at: Mapped[datetime | None]
    acknowledged_at: Mapped[datetime | None]
    acknowledged_by: Mapped[str | None] = mapped_column(String(100))  # the officer's name, as the kiosk shows it
    acknowledged_by_id: Mapped[str | None] = mapped_column(String(36))
    message: Mapped[str | None] = mapped_column(String(500))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)  # the officers' stream follows this


class AlertDelivery(Base):
    """The outbox: one notification to one contact, inserted in the transaction that made it necessary."""

    __tablename__ = "alert_deliveries"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # also the receiver's idempotency key
    alert_id: Mapped[str | None] = mapped_column(ForeignKey("alerts.id"), index=True)  # None: a device-health notice
    contact_id: Mapped[str] = mapped_column(String(36))  # no foreign key: a removed contact's history stays
    channel: Mapped[str] = mapped_column(String(16))
    target: Mapped[str] = mapped_column(String(500))
    event: Mapped[str] = mapped_column(String(32))  # alert.raised | alert.escalated | device.<condition>
    payload: Mapped[dict[str, Any]]
    state: Mapped[str] = mapped_column(String(16), default="pending")  # pending | delivered | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    claimed_until: Mapped[datetime | None]  # a worker's lease: nobody else sends it before this
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    last_error: Mapped[str | None] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[datetime | None]


class DeviceHealth(Base):
    """A device's last check-in (evidence.wire.HEARTBEAT) and which health notices are currently raised."""

    __tablename__ = "device_health"
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"), primary_key=True)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    skew_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    spool_used_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    spool_max_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    unsent_segments: Mapped[int] = mapped_column(Integer, default=0)
    raised: Mapped[dict[str, Any]] = mapped_column(default=dict)  # condition -> when it was notified


# The worker's two scans: due deliveries, and unacknowledged alerts whose next tier is due.
Index("ix_alert_deliveries_due", AlertDelivery.state, AlertDelivery.next_attempt_at)
Index("ix_alerts_escalation_due", Alert.state, Alert.escalate_at)
Index("ix_alerts_site_created", Alert.site_id, Alert.created_at.desc())


# --- notice audio: the spoken reading of one notice version in one language.
# The bytes live here, not in the blob store: a reading is ~100-500 KB (at most
# api.notice_audio.MAX_BYTES), it is not evidence, and a row written in the same transaction as its
# audit entry can never be half-provisioned. Devices fetch it with the notices (recorder.notice_audio).
class NoticeAudio(Base):
    __tablename__ = "notice_audio"
    __table_args__ = (
        ForeignKeyConstraint(
            ["notice_id", "version", "language"], ["notices.id", "notices.version", "notices.language"]
        ),
    )
    notice_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    language: Mapped[str] = mapped_column(String(8), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64))  # of `data`, as served: devices check it
    size: Mapped[int] = mapped_column(Integer)
    content_type: Mapped[str] = mapped_column(String(64))
    seconds: Mapped[float] = mapped_column(Float)
    source: Mapped[str] = mapped_column(String(16))  # upload | espeak-ng
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str] = mapped_column(String(80))


# --- the web console (api/console): a user's optional sign-in, their sessions, their listening grants.
class ConsoleLogin(Base):
    """A user's console sign-in: an Argon2id password hash and a TOTP secret (api.console.accounts)."""

    __tablename__ = "console_logins"
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), primary_key=True)
    password_hash: Mapped[str] = mapped_column(String(200))  # libsodium's $argon2id$... string
    totp_secret: Mapped[str] = mapped_column(String(64))  # base32; kept in clear because checking needs it
    last_totp_step: Mapped[int] = mapped_column(BigInteger, default=0)  # a code is never accepted twice
    failures: Mapped[int] = mapped_column(Integer, default=0)  # consecutive failed sign-ins
    locked_until: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str] = mapped_column(String(80))


class ConsoleSession(Base):
    """A signed-in browser: the cookie's SHA-256 only, with idle and absolute expiry (api.console.sessions)."""

    __tablename__ = "console_sessions"
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))  # every state-changing form carries it
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]  # absolute: signed in again after this, however active


class ConsoleListenGrant(Base):
    """After an audited purpose: this session may fetch this recording's audio (ranges too) until expires_at."""

    __tablename__ = "console_listen_grants"
    session_hash: Mapped[str] = mapped_column(ForeignKey("console_sessions.token_hash"), primary_key=True)
    recording_id: Mapped[str] = mapped_column(ForeignKey("recordings.id"), primary_key=True)
    read_seq: Mapped[int] = mapped_column(BigInteger)  # the evidence:read entry the grant stems from
    expires_at: Mapped[datetime]


class RecordingNote(Base):
    """An officer's time-stamped note on a recording (api.console.casework): shown to the site's officers only.

    Never edited nor deleted by the console; its audit entry (console:note:add) names it, not its text."""

    __tablename__ = "recording_notes"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    recording_id: Mapped[str] = mapped_column(ForeignKey("recordings.id"), index=True)
    author_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    text: Mapped[str] = mapped_column(Text)  # 1..4000 characters, no control character but newline
