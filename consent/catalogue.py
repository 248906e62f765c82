"""The notice catalogue: what staff show (and speak) before recording.

A notice is identified by (id, version, language) and pinned by the sha256 of
its exact text: a consent record names that hash, so nobody can later claim a
different wording was shown. Notices shipped with Countersign live as JSON
files beside this module; sites may add their own through the service.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from importlib import resources
from typing import Any

LANGUAGES = ("ja", "en")


@dataclass(frozen=True)
class Notice:
    id: str
    version: int
    language: str
    title: str
    text: str

    @property
    def sha256(self) -> str:
        return text_sha256(self.text)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "sha256": self.sha256}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Notice:
        notice = cls(
            id=str(data["id"]),
            version=int(data["version"]),
            language=str(data["language"]),
            title=str(data.get("title", "")),
            text=str(data["text"]),
        )
        if notice.language not in LANGUAGES:
            raise ValueError(f"notice language must be one of {LANGUAGES}, not {notice.language!r}")
        if "sha256" in data and data["sha256"] != notice.sha256:
            raise ValueError(
                f"notice {notice.id} v{notice.version} ({notice.language}): text does not match its sha256"
            )
        return notice


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def builtin_notices() -> Iterator[Notice]:
    """The notices shipped with the package, in a stable order."""
    folder = resources.files("consent") / "notices"
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".json"):
            yield Notice.from_dict(json.loads(entry.read_text(encoding="utf-8")))


def pick(notices: list[Notice], language: str) -> Notice:
    """The newest notice in a language (the one a counter shows)."""
    matching = [n for n in notices if n.language == language]
    if not matching:
        raise LookupError(f"no consent notice in language {language!r}")
    return max(matching, key=lambda n: (n.id, n.version))
