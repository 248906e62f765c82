"""Request and response bodies for retention policies, legal holds and officer lifecycle actions."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from api.core.fields import CaseRef, Identifier, ReasonText

CategoryName = Literal["routine", "incident", "objection", "interrupted"]


class PolicySet(BaseModel):
    category: CategoryName
    site: str | None = Field(default=None, min_length=1, max_length=64, description="Omit for the default.")
    retain_days: int | None = Field(default=None, ge=0, le=36500, description="Keep at least this long.")
    delete_days: int | None = Field(default=None, ge=1, le=36500, description="Delete once this old.")


class PolicyPublic(BaseModel):
    category: str
    site: str | None
    retain_days: int | None
    delete_days: int | None
    source: Literal["shipped", "stored"]
    updated_at: datetime | None = None
    updated_by: str | None = None


class PolicyChange(BaseModel):
    rule: PolicyPublic | None = Field(description="The rule now in force for this scope (None: it was cleared).")
    recomputed: int = Field(description="Recordings whose retain-until date changed.")


class HoldCreate(BaseModel):
    case_ref: CaseRef
    reason: ReasonText = Field(description="Why (at least 10 visible characters; logged).")
    recordings: list[uuid.UUID] = Field(default_factory=list, max_length=10000)
    site: str | None = Field(default=None, min_length=1, max_length=64)
    device: str | None = Field(default=None, min_length=1, max_length=64)
    started_from: datetime | None = None
    started_to: datetime | None = None
    incident_category: str | None = Field(
        default=None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
    )


class HoldRelease(BaseModel):
    reason: ReasonText = Field(description="Why (at least 10 visible characters; logged).")


class HoldPublic(BaseModel):
    id: str
    case_ref: str
    reason: str
    site: str
    scoped: bool
    device: str | None
    started_from: datetime | None
    started_to: datetime | None
    incident_category: str | None
    recordings: list[str]
    created_at: datetime
    created_by: str
    active: bool
    released_at: datetime | None
    released_by: str | None
    release_reason: str | None
    covers: int | None = Field(default=None, description="Recordings it holds now (on show only).")


class FlagBody(BaseModel):
    category: str = Identifier


class ExtendBody(BaseModel):
    until: datetime
    reason: ReasonText = Field(description="Why (at least 10 visible characters; logged).")


class RetentionChange(BaseModel):
    id: str
    incident_category: str | None
    retain_until: datetime | None
    retain_reason: str | None
    retain_extended_until: datetime | None


class TombstonePublic(BaseModel):
    recording_id: str
    site: str
    device: str
    started_at: datetime
    ended_at: datetime | None
    categories: list[str]
    reason: str
    rule: str | None
    actor: str
    shredded_at: datetime
    purged_at: datetime | None
    segment_count: int | None
    record: dict[str, Any] | None = Field(description="The deletion record, exactly as signed.")
    signature: str | None = Field(description="Ed25519 signature by the service key, hex.")
    service_public_key: str


class DeletionPublic(BaseModel):
    recording_id: str
    state: Literal["purged", "shredding"] = Field(
        description="purged: all gone. shredding: keys destroyed (unreadable); objects go on the next retention run."
    )
    tombstone: TombstonePublic | None


class DeletionRequestBody(BaseModel):
    reason: ReasonText = Field(description="Why it must go before its time (at least 10 visible characters; logged).")


class CancelBody(BaseModel):
    reason: ReasonText = Field(description="Why the deletion must not happen (logged).")


class DeletionRequestPublic(BaseModel):
    id: str
    recording_id: str
    site: str
    reason: str
    requested_by: str
    requested_at: datetime
    not_before: datetime = Field(description="When the grace period ends (the retention job may then carry it out).")
    needs_approval: bool = Field(description="An incident: only a second officer's approval deletes it.")
    state: Literal["pending", "approved", "cancelled", "executed"]
    approved_by: str | None
    cancelled_by: str | None
    cancel_reason: str | None
    executed_at: datetime | None


class DeletionDone(DeletionPublic):
    request: DeletionRequestPublic
