"""Request and response bodies. Public shapes never carry token hashes, sealed keys or paths."""

# The field types are shared with the retention domain (api.core.fields); re-exported here for the routes.

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, Field

from api.core.fields import DisplayName, Identifier, PurposeText, ReasonText, human_text
from evidence.text import check_text


class SiteCreate(BaseModel):
    id: str = Identifier
    name: DisplayName = ""


class SitePublic(BaseModel):
    id: str
    name: str


class UserCreate(BaseModel):
    name: str = Identifier
    role: Literal["officer", "admin", "auditor"]
    sites: list[str] = Field(default_factory=list, max_length=100)


class UserPublic(BaseModel):
    id: str
    name: str
    role: str
    sites: list[str]
    disabled: bool = False
    pending_approval: bool = Field(default=False, description="Officers and auditors: until a second person approves.")
    approved_by: str | None = None


class UserCreated(UserPublic):
    token: str = Field(description="Shown once; only its hash is stored.")


class DeviceCreate(BaseModel):
    name: str = Identifier
    site: str = Identifier


class DevicePublic(BaseModel):
    id: str
    name: str
    site: str
    enrolled: bool
    disabled: bool = False


class AccessChange(BaseModel):
    reason: ReasonText = Field(description="Why (at least 10 visible characters; logged).")


class TokenRotated(BaseModel):
    token: str = Field(description="The new token, shown once; the old one no longer works.")


class DeviceCreated(DevicePublic):
    enrolment_code: str = Field(description="One-time code; shown once.")
    enrolment_expires_at: datetime


class NoticePublic(BaseModel):
    id: str
    version: int
    language: str
    title: str
    text: str
    sha256: str
    # Its spoken reading (api.notice_audio); devices fetch it when the hash differs from theirs.
    audio: bool = Field(default=False, description="whether a spoken reading is provisioned")
    audio_sha256: str | None = Field(
        default=None, description="SHA-256 of the reading's WAV, as GET .../audio serves it"
    )


def _notice_text(value: str) -> str:
    return check_text(value, name="text", min_visible=1, max_length=NOTICE_TEXT_MAX, multiline=True)


NOTICE_TEXT_MAX = 10000  # a counter notice is a paragraph or two (the shipped ones are < 600 characters)


class NoticeCreate(BaseModel):
    """A new version of a notice text in one language; the service numbers it (highest + 1)."""

    id: str = Identifier
    language: Literal["ja", "en"]
    title: Annotated[str, Field(min_length=1, max_length=200), human_text("title", max_length=200)]
    text: Annotated[str, Field(min_length=1, max_length=NOTICE_TEXT_MAX), AfterValidator(_notice_text)]


class NoticeAudioPublic(BaseModel):
    notice_id: str
    version: int
    language: str
    sha256: str = Field(description="SHA-256 of the WAV as served")
    size: int
    content_type: str
    seconds: float
    source: str = Field(description="upload | espeak-ng")
    created_at: datetime
    created_by: str


class EvidenceKeyPublic(BaseModel):
    key_id: str
    public_key: str = Field(description="X25519 public key, hex")
    state: str = Field("current", description="current | previous | retired (destroyed keys are not listed)")
    custody: str = Field("service", description="service: the service holds the private half; offline: it never does")
    seal_to: bool = Field(True, description="seal new recordings to this key (every such key); false: do not")
    valid_until: datetime | None = Field(
        None, description="when devices stopped sealing to it (a rotation or retirement); null while seal_to"
    )


class EnrolRequest(BaseModel):
    code: str = Field(min_length=4, max_length=64)
    public_key: str = Field(pattern=r"^[0-9a-f]{64}$", description="device Ed25519 verify key, hex")


class EnrolResponse(BaseModel):
    device_id: str
    site: str
    token: str
    evidence_keys: list[EvidenceKeyPublic]
    notices: list[NoticePublic]
    service_public_key: str


class SealedKeyIn(BaseModel):
    key_id: str = Field(max_length=32)
    sealed: str = Field(pattern=r"^[0-9a-f]+$", max_length=512)


class RecordingCreate(BaseModel):
    header: dict[str, Any]
    header_signature: str = Field(pattern=r"^[0-9a-f]{128}$")
    sealed_keys: list[SealedKeyIn] = Field(default_factory=list, max_length=16)


class SegmentPublic(BaseModel):
    index: int
    final: bool
    size: int
    ciphertext_sha256: str
    plaintext_sha256: str
    received_at: datetime


class RecordingPublic(BaseModel):
    id: str
    device_id: str
    device_name: str | None = Field(default=None, description="The recording device's name, as administered.")
    site: str
    started_at: datetime
    status: str
    consent_outcome: str
    audio: Literal["recorded", "objection", "none"] = Field(
        default="recorded",
        description="recorded: segments arrived; objection: the customer objected, nothing was recorded; "
        "none: consent given but no audio was captured (see status). Not an integrity verdict: reads verify.",
    )
    consent: dict[str, Any]
    incident_category: str | None
    segment_count: int
    sample_rate: int | None
    ended_at: datetime | None
    duration_seconds: float | None = Field(
        default=None,
        description="Seconds of audio: segments x the header's segment_seconds (else ended_at - started_at).",
    )
    staff_code: str | None = Field(default=None, description="The staff member in the signed consent record.")
    retain_until: datetime | None = Field(default=None, description="When retention lets it go (unless held).")
    retain_reason: str | None = Field(default=None, description="Which rule or extension sets that date.")
    held_by: list[str] = Field(default_factory=list, description="Case references of the holds keeping it.")


class RecordingDetail(RecordingPublic):
    segments: list[SegmentPublic]


class IncidentFlag(BaseModel):
    category: str = Identifier


class AccessLogPublic(BaseModel):
    seq: int
    at: datetime
    actor: str
    actor_name: str | None = Field(
        default=None, description="The user's or device's name for a user:/device: actor (not part of the entry)."
    )
    action: str
    target: str | None
    outcome: str
    purpose: str | None
    detail: dict[str, Any]


class CheckpointPublic(BaseModel):
    seq: int
    chain_hash: str
    at: str = Field(description="The exact time string that was signed.")
    signature: str
    tree_root: str | None = Field(
        default=None, description="Merkle root of the first seq entries; set: the signature is over the tree head."
    )


class TreeHeadPublic(BaseModel):
    """A signed tree head: the log's Merkle root and chain head at `size` entries (evidence.audit_log)."""

    size: int
    root: str
    chain_hash: str
    at: str = Field(description="The exact time string that was signed.")
    signature: str = Field(description="Ed25519 over tree_head_message(size, root, chain_hash, at), hex.")


class InclusionProofPublic(BaseModel):
    """An entry, its place in the tree, and the RFC 9162 path from its leaf to a signed tree head's root."""

    entry: dict[str, Any] = Field(description="The entry's 8 hashed fields, entry_hash and chain_hash.")
    leaf_index: int
    tree_size: int
    path: list[str]
    tree_head: TreeHeadPublic


class ConsistencyProofPublic(BaseModel):
    """RFC 9162 proof that the tree at `new` extends the tree at `old`, with both signed tree heads."""

    old: TreeHeadPublic
    new: TreeHeadPublic
    proof: list[str]


class AudioRequest(BaseModel):
    """What an officer sends to read a recording's audio."""

    purpose: PurposeText = Field(description="Why you need this evidence (at least 10 visible characters; logged).")
    format: Literal["flac", "wav"] = "flac"
