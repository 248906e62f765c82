"""What a blob store must do. Blobs are encrypted envelopes; the store never sees keys."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Protocol


class ObjectMissing(KeyError):
    """No object under that key."""


class ObjectHeld(Exception):
    """The object is under a legal hold (or, on S3, object-lock retention): it cannot be deleted or replaced."""

    def __init__(self, key: str, why: str = "under a legal hold") -> None:
        super().__init__(f"object {key!r} is {why}: it cannot be deleted or replaced")
        self.key = key


# Relative, "/"-separated names of [A-Za-z0-9._-] whose parts never start with "." (so no "." or ".."
# parts, and the dot names stay free for a store's own files: temp files, hold markers). Both stores
# apply the same rule, so a key valid in one is valid in the other.
_SAFE_KEY = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*(/[A-Za-z0-9_-][A-Za-z0-9._-]*)*")
MAX_KEY_LENGTH = 1024  # S3's limit, in bytes (keys are ASCII)


def check_key(key: str) -> str:
    """Return the key if it is safe to use as an object name; raise ValueError otherwise."""
    if len(key) > MAX_KEY_LENGTH or not _SAFE_KEY.fullmatch(key):  # fullmatch: "$" would let "a\n" through
        raise ValueError(f"unsafe object key {key!r}")
    return key


class ObjectExists(Exception):
    """Other bytes are already stored under the key, and the put was asked not to replace them."""

    def __init__(self, key: str) -> None:
        super().__init__(f"object {key!r} already holds other bytes")
        self.key = key


class BlobStore(Protocol):
    def put(self, key: str, data: bytes, *, replace: bool = True) -> None:
        """Store data durably (it must survive a crash once put returns).

        Create or replace, all or nothing: a put that fails leaves the old object (or none), never
        part of the new one. The same bytes again is a no-op; other bytes over a held object raise
        ObjectHeld. With replace=False other bytes are never replaced, held or not: ObjectExists,
        decided atomically where the store can (a filesystem link; S3's If-None-Match), so of two
        racing puts of different bytes exactly one is stored and the other is told.
        """

    def get(self, key: str) -> bytes:
        """Return the object; raise ObjectMissing if there is none."""

    def delete(self, key: str) -> None:
        """Remove the object; a missing object is not an error (idempotent purge).

        Every stored copy goes (on a versioned bucket: every version), because a delete follows
        crypto-shredding and is the last step of a purge. Raises ObjectHeld while a legal hold is on.
        """

    def get_range(self, key: str, start: int, end: int) -> bytes:
        """Bytes start..end-1 of the object, like data[start:end] (0 <= start <= end); ObjectMissing if none."""

    def set_legal_hold(self, key: str, on: bool) -> None:
        """Place or release the store's own legal hold on the object (mirrors a hold in the database)."""

    def legal_hold(self, key: str) -> bool:
        """Whether a legal hold is on (ObjectMissing if there is no object)."""

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str = "") -> Iterator[str]:
        """Keys under a prefix, in order."""


def segment_key(recording_id: str, index: int) -> str:
    """Object key of one segment; ids are validated UUIDs, so no path tricks get here."""
    return f"recordings/{recording_id}/{index:06d}.seg"
