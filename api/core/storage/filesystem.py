"""Local filesystem blob store: the embedded default.

A legal hold is a marker file beside the object (``.<name>.hold``). Object keys never have a
part that starts with "." (interface.check_key), so a marker can never be mistaken for an
object, and ``list`` skips every dot name (markers and temp files alike). The database is the
authority on holds; the marker makes this store refuse to delete or replace held evidence
by itself, as object lock does on S3, so a bug elsewhere cannot lose it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from api.core.storage.interface import ObjectExists, ObjectHeld, ObjectMissing, check_key

_HOLD_SUFFIX = ".hold"


def _fsync_dir(path: Path) -> None:
    dir_fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _check_range(start: int, end: int) -> None:
    if not 0 <= start <= end:
        raise ValueError(f"bad byte range {start}..{end}")


class FilesystemStore:
    # Deletes worth running at once (retention.purge.delete_all): one. An unlink is a short local
    # call; threads only add their start-up and GIL hand-offs to it (about three times the CPU for
    # the same wall time, measured with bench.retention_sweep).
    delete_workers = 1

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    @staticmethod
    def _hold_path(path: Path) -> Path:
        return path.with_name(f".{path.name}{_HOLD_SUFFIX}")

    def put(self, key: str, data: bytes, *, replace: bool = True) -> None:
        path = self._path(key)
        if path.is_file():
            # A retried upload of the same bytes must succeed even while held; anything else must
            # not overwrite held evidence (on S3 the held version would survive; here nothing would).
            if path.read_bytes() == data:
                return
            if not replace:
                raise ObjectExists(key)
            if self._hold_path(path).exists():
                raise ObjectHeld(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write a temp file, fsync it, rename over (or, not replacing, link it in: the link fails if
        # a racing put got there first), fsync the folder: a crash leaves either the old object or
        # the whole new one, never half of it.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            if replace:
                os.replace(tmp, path)
            else:
                try:
                    os.link(tmp, path)
                except FileExistsError:
                    if path.read_bytes() != data:
                        raise ObjectExists(key) from None
                finally:
                    Path(tmp).unlink(missing_ok=True)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _fsync_dir(path.parent)

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError as exc:
            raise ObjectMissing(key) from exc

    def get_range(self, key: str, start: int, end: int) -> bytes:
        _check_range(start, end)
        try:
            with self._path(key).open("rb") as f:
                f.seek(start)
                return f.read(end - start)
        except FileNotFoundError as exc:
            raise ObjectMissing(key) from exc

    def delete(self, key: str) -> None:
        path = self._path(key)
        if self._hold_path(path).exists():
            raise ObjectHeld(key)
        path.unlink(missing_ok=True)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def set_legal_hold(self, key: str, on: bool) -> None:
        path = self._path(key)
        marker = self._hold_path(path)
        if on:
            if not path.is_file():
                raise ObjectMissing(key)
            # O_CREAT without O_TRUNC: placing a hold twice is harmless. Synced, because a hold
            # that a crash forgets would let the next purge delete held evidence.
            os.close(os.open(marker, os.O_WRONLY | os.O_CREAT, 0o600))
        else:
            marker.unlink(missing_ok=True)  # also clears a marker left beside an object removed by hand
            if not path.is_file():
                raise ObjectMissing(key)
        _fsync_dir(path.parent)

    def legal_hold(self, key: str) -> bool:
        path = self._path(key)
        if not path.is_file():
            raise ObjectMissing(key)
        return self._hold_path(path).exists()

    def list(self, prefix: str = "") -> Iterator[str]:
        # Walk only the folder the prefix names, and sort by the key string (as S3 does), not by
        # path parts: "a.b" comes before "a/b".
        folder = prefix.rpartition("/")[0]
        if folder:
            try:
                check_key(folder)
            except ValueError:
                return  # no stored key can start like that
        start = self.root / folder
        keys = []
        for dirpath, dirnames, filenames in os.walk(start):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            base = Path(dirpath).relative_to(self.root).as_posix()
            for name in filenames:
                if not name.startswith("."):
                    key = name if base == "." else f"{base}/{name}"
                    if key.startswith(prefix):
                        keys.append(key)
        yield from sorted(keys)
