"""Field types that request bodies share across the service and the retention domain.

Identifiers are ASCII and short; text a person writes goes through
evidence.text.check_text (no control or invisible characters; minimum lengths
count visible characters only).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field

from evidence.text import check_text

Identifier = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def human_text(name: str, *, min_visible: int = 1, max_length: int = 500) -> AfterValidator:
    """Text a person writes (evidence.text.check_text): no control or invisible characters, visible length."""

    def check(value: str) -> str:
        return check_text(value, name=name, min_visible=min_visible, max_length=max_length)

    return AfterValidator(check)


# Why evidence is read, kept or destroyed: it goes into the log, so it must say something.
PurposeText = Annotated[str, Field(min_length=10, max_length=500), human_text("purpose", min_visible=10)]
ReasonText = Annotated[
    str, Field(min_length=10, max_length=2000), human_text("reason", min_visible=10, max_length=2000)
]
CaseRef = Annotated[
    str, Field(min_length=1, max_length=100, pattern=r"^\S(.*\S)?$"), human_text("case reference", max_length=100)
]
DisplayName = Annotated[str, Field(max_length=200), human_text("name", min_visible=0, max_length=200)]
