"""The on-device spool: encrypted segments wait here until the server has them.

One folder per recording::

    spool/<recording id>/
        recording.json   header, its signature, sealed data keys, incident flag, state
        000000.seg       envelope (ciphertext only)
        000000.json      the signed statement's fields; written after .seg, so it marks a complete segment
        000000.sent      the server acknowledged this segment
        opened           the server acknowledged the header
        lock             flock()ed by the live recorder process

Every file is written to a temp name, fsynced and renamed, so a crash (or
SIGKILL) leaves whole segments or none. Nothing unsent is ever deleted: a
folder is removed only once the server has acknowledged all of it.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from recorder.errors import SpoolFull

# The capture thread (incident, state) and the upload thread (incident_sent) both rewrite
# recording.json: its read-modify-write is serialised, and every writer has its own temp name.
_meta_lock = threading.Lock()


def _durable_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


@dataclass
class SpooledRecording:
    folder: Path

    @property
    def id(self) -> str:
        return self.folder.name

    def meta(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.folder / "recording.json").read_text())
        return data

    def update_meta(self, **changes: Any) -> None:
        with _meta_lock:
            meta = {**self.meta(), **changes}
            _durable_write(self.folder / "recording.json", json.dumps(meta, indent=2).encode())

    def write_segment(self, index: int, envelope: bytes, statement: dict[str, Any]) -> None:
        _durable_write(self.folder / f"{index:06d}.seg", envelope)
        _durable_write(self.folder / f"{index:06d}.json", json.dumps(statement).encode())

    def segments(self) -> list[int]:
        """Indices of complete segments, in order."""
        return sorted(int(p.stem) for p in self.folder.glob("[0-9]*.json"))

    def segment(self, index: int) -> tuple[bytes, dict[str, Any]]:
        meta: dict[str, Any] = json.loads((self.folder / f"{index:06d}.json").read_text())
        return (self.folder / f"{index:06d}.seg").read_bytes(), meta

    def is_sent(self, index: int) -> bool:
        return (self.folder / f"{index:06d}.sent").exists()

    def mark_sent(self, index: int) -> None:
        _durable_write(self.folder / f"{index:06d}.sent", b"")

    def unsent(self) -> list[int]:
        return [i for i in self.segments() if not self.is_sent(i)]

    @property
    def opened(self) -> bool:
        return (self.folder / "opened").exists()

    def mark_opened(self) -> None:
        _durable_write(self.folder / "opened", b"")

    def has_final(self) -> bool:
        indices = self.segments()
        return bool(indices) and bool(self.segment(indices[-1])[1]["final"])

    def lock(self) -> IO[bytes] | None:
        """Take the live-recorder lock; None if another process holds it."""
        handle = open(self.folder / "lock", "ab")  # noqa: SIM115 - held for the recording's lifetime
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return None
        return handle

    def size(self) -> int:
        return sum(p.stat().st_size for p in self.folder.iterdir() if p.is_file())


class Spool:
    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Counted once, then kept by account(): statting a full spool before every segment
        # cost 28x the whole pipeline after an outage. Deletions by another process (sync)
        # are not seen, which only over-counts: the recorder stops early, never deletes.
        self._used: int | None = None

    def create(self, recording_id: str, meta: dict[str, Any]) -> SpooledRecording:
        folder = self.root / recording_id
        folder.mkdir(mode=0o700)
        recording = SpooledRecording(folder)
        _durable_write(folder / "recording.json", json.dumps(meta, indent=2).encode())
        return recording

    def recordings(self) -> Iterator[SpooledRecording]:
        for folder in sorted(self.root.iterdir()):
            if folder.is_dir() and (folder / "recording.json").exists():
                yield SpooledRecording(folder)

    def used_bytes(self) -> int:
        return sum(r.size() for r in self.recordings())

    def account(self, written: int) -> None:
        """Note bytes this process just wrote into the spool."""
        if self._used is not None:
            self._used += written

    def check_room(self, needed: int) -> None:
        """Raise SpoolFull if `needed` more bytes would not fit (limit or disk)."""
        if self._used is None:
            self._used = self.used_bytes()
        used = self._used
        free_on_disk = shutil.disk_usage(self.root).free
        if used + needed > self.max_bytes or needed > free_on_disk:
            raise SpoolFull(f"{used} of {self.max_bytes} bytes used, {free_on_disk} free on disk, {needed} needed")

    @staticmethod
    def remove(recording: SpooledRecording) -> None:
        """Drop a folder whose every part the server has acknowledged."""
        if recording.unsent() or not recording.opened:
            raise RuntimeError(f"refusing to remove {recording.id}: it holds unsent evidence")
        shutil.rmtree(recording.folder)
