"""The retention domain's tables: policies, legal holds and tombstones of purged recordings.

They share the service's declarative base (api.core.models.Base), so one metadata
holds every table and the migrations build them together.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from api.core.models import Base, utcnow


class RetentionPolicy(Base):
    """An administrator's retention rule for one category, at one site or by default (scope "*").

    Categories without a stored default use the shipped one (retention.policy.SHIPPED_DEFAULTS).
    """

    __tablename__ = "retention_policies"
    scope: Mapped[str] = mapped_column(String(64), primary_key=True)  # "*" or a site id (no NULL: unique keys)
    category: Mapped[str] = mapped_column(String(16), primary_key=True)
    retain_days: Mapped[int | None] = mapped_column(Integer)
    delete_days: Mapped[int | None] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_by: Mapped[str] = mapped_column(String(80))


class Hold(Base):
    """A legal hold: explicit recordings and/or a scope; active until released (never expires)."""

    __tablename__ = "holds"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    case_ref: Mapped[str] = mapped_column(String(100), index=True)
    reason: Mapped[str] = mapped_column(Text)
    site_id: Mapped[str] = mapped_column(ForeignKey("sites.id"), index=True)
    scoped: Mapped[bool] = mapped_column(Boolean, default=False)  # False: only the explicit recordings
    device_id: Mapped[str | None] = mapped_column(ForeignKey("devices.id"))
    started_from: Mapped[datetime | None]
    started_to: Mapped[datetime | None]
    incident_category: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str] = mapped_column(String(80))
    released_at: Mapped[datetime | None] = mapped_column(index=True)
    released_by: Mapped[str | None] = mapped_column(String(80))
    release_reason: Mapped[str | None] = mapped_column(Text)
    recordings: Mapped[list[HoldRecording]] = relationship(lazy="selectin", cascade="all, delete-orphan")


class HoldRecording(Base):
    __tablename__ = "hold_recordings"
    hold_id: Mapped[str] = mapped_column(ForeignKey("holds.id"), primary_key=True)
    recording_id: Mapped[str] = mapped_column(ForeignKey("recordings.id"), primary_key=True, index=True)


class Tombstone(Base):
    """What remains of a purged recording: ids, times, hashes, why, and a signed deletion record.

    Written when the keys are shredded (purged_at NULL), completed when the objects are gone.
    """

    __tablename__ = "tombstones"
    recording_id: Mapped[str] = mapped_column(ForeignKey("recordings.id"), primary_key=True)
    site_id: Mapped[str] = mapped_column(String(64), index=True)
    device_id: Mapped[str] = mapped_column(String(36))
    started_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]
    categories: Mapped[list[str]] = mapped_column(JSON)
    reason: Mapped[str] = mapped_column(Text)
    rule: Mapped[str | None] = mapped_column(String(120))  # None when an officer deleted it early
    actor: Mapped[str] = mapped_column(String(80))
    sealed_key_ids: Mapped[list[str]] = mapped_column(JSON)
    shredded_at: Mapped[datetime]
    purged_at: Mapped[datetime | None]
    segment_count: Mapped[int | None] = mapped_column(Integer)
    bytes_total: Mapped[int | None] = mapped_column(BigInteger)
    head_hash: Mapped[bytes | None]
    ciphertext_digest: Mapped[bytes | None]  # sha256 over the segments' ciphertext sha256s, in order
    record: Mapped[dict[str, Any] | None]  # the deletion record, as signed
    signature: Mapped[bytes | None]  # Ed25519 by the service signing key


class DeletionRequest(Base):
    """An officer's request to delete a recording before its time: carried out only by a second
    officer's approval, or by the retention job once its grace period has passed uncancelled
    (never for an incident, which always needs the second officer). See retention/deletion.py.
    """

    __tablename__ = "deletion_requests"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    recording_id: Mapped[str] = mapped_column(ForeignKey("recordings.id"), index=True)
    site_id: Mapped[str] = mapped_column(String(64), index=True)
    reason: Mapped[str] = mapped_column(Text)
    requested_by: Mapped[str] = mapped_column(String(80))
    requested_at: Mapped[datetime] = mapped_column(default=utcnow)
    not_before: Mapped[datetime]  # the grace period ends here
    needs_approval: Mapped[bool] = mapped_column(Boolean, default=False)  # incidents: grace alone never suffices
    approved_by: Mapped[str | None] = mapped_column(String(80))
    decided_at: Mapped[datetime | None]  # approved or cancelled
    cancelled_by: Mapped[str | None] = mapped_column(String(80))
    cancel_reason: Mapped[str | None] = mapped_column(Text)
    executed_at: Mapped[datetime | None] = mapped_column(index=True)
