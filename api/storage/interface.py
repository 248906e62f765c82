"""What a blob store must do. Blobs are encrypted envelopes; the store never sees keys."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol


class ObjectMissing(KeyError):
    """No object under that key."""


class BlobStore(Protocol):
    def put(self, key: str, data: bytes) -> None:
        """Store data durably (it must survive a crash once put returns)."""

    def get(self, key: str) -> bytes:
        """Return the object; raise ObjectMissing if there is none."""

    def delete(self, key: str) -> None:
        """Remove the object; a missing object is not an error (idempotent purge)."""

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str = "") -> Iterator[str]:
        """Keys under a prefix, in order."""


def segment_key(recording_id: str, index: int) -> str:
    """Object key of one segment; ids are validated UUIDs, so no path tricks get here."""
    return f"recordings/{recording_id}/{index:06d}.seg"
