"""Consent records: what was shown, how, when, and what the customer decided.

The record is part of the recording header, which the device signs and which
is the genesis of the segment chain, so it cannot be swapped after the fact.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from consent.catalogue import Notice
from evidence.text import TextError, check_text

OUTCOMES = ("given", "objected")
METHODS = ("displayed", "spoken", "displayed+spoken", "ivr")


class ConsentError(ValueError):
    """The consent record is not valid."""


@dataclass(frozen=True)
class ConsentRecord:
    notice_id: str
    notice_version: int
    notice_sha256: str
    language: str
    method: str
    presented_at: str
    decided_at: str
    outcome: str
    staff_code: str

    @classmethod
    def for_notice(
        cls, notice: Notice, *, method: str, presented_at: datetime, decided_at: datetime, outcome: str, staff_code: str
    ) -> ConsentRecord:
        return cls(
            notice_id=notice.id,
            notice_version=notice.version,
            notice_sha256=notice.sha256,
            language=notice.language,
            method=method,
            presented_at=presented_at.isoformat(),
            decided_at=decided_at.isoformat(),
            outcome=outcome,
            staff_code=staff_code,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ConsentRecord:
        try:
            record = cls(**{name: data[name] for name in cls.__dataclass_fields__})
        except (KeyError, TypeError) as exc:
            raise ConsentError(f"consent record is missing a field: {exc}") from exc
        record.validate()
        return record

    def validate(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ConsentError(f"outcome must be one of {OUTCOMES}")
        if self.method not in METHODS:
            raise ConsentError(f"method must be one of {METHODS}")
        if not isinstance(self.notice_version, int) or isinstance(self.notice_version, bool):
            raise ConsentError("notice_version must be an integer")
        if not 0 <= self.notice_version < 2**31:
            raise ConsentError("notice_version is out of range")
        for name in ("notice_id", "notice_sha256", "language"):
            if not isinstance(getattr(self, name), str):
                raise ConsentError(f"{name} must be a string")
        if not self.staff_code or not isinstance(self.staff_code, str) or len(self.staff_code) > 64:
            raise ConsentError("staff_code must be 1-64 characters")
        try:  # printed on reports and terminals: no escape sequences, NULs or invisible characters
            check_text(self.staff_code, name="staff_code", max_length=64)
        except TextError as exc:
            raise ConsentError(str(exc)) from exc
        try:
            presented = datetime.fromisoformat(self.presented_at)
            decided = datetime.fromisoformat(self.decided_at)
        except (TypeError, ValueError) as exc:
            raise ConsentError("presented_at and decided_at must be ISO 8601 times") from exc
        if presented.tzinfo is None or decided.tzinfo is None:
            raise ConsentError("consent times must carry a time zone")
        if decided < presented:
            raise ConsentError("consent was decided before the notice was presented")

    def matches(self, notice: Notice) -> bool:
        """Does this record name exactly this notice text?"""
        return (
            self.notice_id == notice.id
            and self.notice_version == notice.version
            and self.language == notice.language
            and self.notice_sha256 == notice.sha256
        )
