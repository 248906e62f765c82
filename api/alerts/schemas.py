"""Request and answer bodies of the alert routes (evidence.wire describes the device's side)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal, get_args
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from api.alerts import hours
from api.core.fields import Identifier, human_text
from evidence import wire

AlertKind = Literal["help", "incident"]
AlertState = Literal["open", "escalated", "acknowledged"]
# The kiosk builds on evidence.wire's lists: a change there must be a change here (and the reverse).
assert get_args(AlertKind) == wire.ALERT_KINDS and get_args(AlertState) == wire.ALERT_STATES
Message = Annotated[str, Field(min_length=1, max_length=500), human_text("message", max_length=500)]
Label = Annotated[str, Field(min_length=1, max_length=100), human_text("label", max_length=100)]


class AlertRaise(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: AlertKind
    recording_id: uuid.UUID | None = None
    category: str | None = Field(None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class AlertAck(BaseModel):
    model_config = ConfigDict(extra="forbid")
    message: Message


class AlertView(BaseModel):
    """evidence.wire's ALERT_VIEW."""

    id: str
    kind: AlertKind
    site: str
    device_id: str
    device_name: str
    recording_id: str | None
    category: str | None
    state: AlertState
    tier: int
    created_at: datetime
    escalated_at: datetime | None
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    message: str | None


class Heartbeat(BaseModel):
    clock: datetime
    spool_used_bytes: int = Field(ge=0, le=2**62)
    spool_max_bytes: int = Field(ge=0, le=2**62)
    unsent_segments: int = Field(ge=0, le=2**31 - 1)

    @field_validator("clock")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("clock must carry its UTC offset")
        return value


class HeartbeatReply(BaseModel):
    server_time: datetime
    skew_seconds: float


class IncidentCategory(BaseModel):
    code: str = Identifier
    ja: Label
    en: Label


class DeviceSettings(BaseModel):
    site: str
    incident_categories: list[IncidentCategory]
    incident_alerts: bool
    escalate_after_seconds: int


def _hours(value: str | None) -> str | None:
    if value:
        hours.parse(value)  # a HoursError is a ValueError: a 422 naming the field
    return value or None


def _zone(value: str) -> str:
    hours.zone(value)
    return value


class AlertingUpdate(BaseModel):
    """An administrator's change to a site's alerting; absent fields keep their value."""

    model_config = ConfigDict(extra="forbid")
    escalate_after_seconds: int | None = Field(None, ge=1, le=86400)
    incident_alerts: bool | None = None
    opening_hours: Annotated[str | None, Field(max_length=200), AfterValidator(_hours)] = None
    timezone: Annotated[str | None, Field(min_length=1, max_length=64), AfterValidator(lambda v: v and _zone(v))] = None
    incident_categories: list[IncidentCategory] | None = Field(None, max_length=50)


class ContactPublic(BaseModel):
    id: str
    tier: int
    channel: Literal["email", "webhook"]
    target: str


class AlertingPublic(BaseModel):
    site: str
    escalate_after_seconds: int
    incident_alerts: bool
    opening_hours: str | None
    timezone: str
    incident_categories: list[IncidentCategory]
    contacts: list[ContactPublic]


_EMAIL = r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)*$"


def _webhook_url(value: str | None) -> str | None:
    """Only http(s) URLs with a host: a file:, gopher: or javascript: URL is refused here, not at send time."""
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("the webhook must be an http:// or https:// URL with a host")
    if any(ch.isspace() or ord(ch) < 32 for ch in value):
        raise ValueError("the webhook URL may not contain spaces or control characters")
    return value


class ContactCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tier: int = Field(ge=1, le=9)
    email: str | None = Field(None, max_length=254, pattern=_EMAIL)
    webhook: Annotated[str | None, Field(max_length=500), AfterValidator(_webhook_url)] = None


class ContactCreated(ContactPublic):
    secret: str | None = Field(description="The webhook's signing secret: shown once, never again.")
