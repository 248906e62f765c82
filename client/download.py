"""Downloads that never leave a plausible file behind: a temporary file beside the output,
renamed only once the whole response arrived and checked out.

"Arrived" is HTTP's own framing: a response with a Content-Length must bring exactly that
many bytes, and a chunked one (the service streams FLAC, whose length it cannot know
ahead) must end with its terminating chunk, which httpx checks: a connection closed before
it raises (RemoteProtocolError, "incomplete chunked read"). The service cuts a streamed
read off that way when a segment fails a check after the first byte, so either failure
means the file is not the evidence. Audio is then checked against what the service
announced (audio_problem)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer

from client.errors import ClientError, fail
from client.http import ApiClient


class TransferFailed(ClientError):
    """The transfer did not complete"""


class AudioMismatch(ClientError):
    """The audio received is not the file the service announced"""


def usage_error(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(2)


def refuse_existing(output: Path, force: bool) -> None:
    if output.exists() and not force:
        raise usage_error(f"{output} exists; pass --force to replace it")


@contextmanager
def part_file(output: Path) -> Iterator[Path]:
    """A temporary file next to `output`, removed on the way out whatever happened."""
    try:  # before any request: a read the officer cannot save is a read logged for nothing
        fd, name = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".part", dir=output.parent)
    except OSError as exc:
        raise usage_error(f"cannot write to {output.parent}: {exc}") from exc
    os.close(fd)
    part = Path(name)
    try:
        yield part
    finally:
        part.unlink(missing_ok=True)


def fetch_to(client: ApiClient, part: Path, method: str, url: str, **kwargs: Any) -> tuple[int, dict[str, str]]:
    """Stream a response into `part` (fsynced); (bytes, headers). A transfer cut short is an error (exit 1)."""
    import httpx  # as client.http: only where a request is made

    with part.open("wb") as f, client.stream(method, url, **kwargs) as r:
        size = 0
        try:
            for chunk in r.iter_bytes():
                f.write(chunk)
                size += len(chunk)
        except httpx.TransportError as exc:  # inside client.stream: not reported as "cannot reach the server"
            raise fail(
                TransferFailed(f"stopped after {size} bytes ({exc or type(exc).__name__}); nothing was written")
            ) from exc
        expected = r.headers.get("content-length")
        if expected is not None and int(expected) != size:
            raise fail(TransferFailed(f"stopped after {size} of {expected} bytes; nothing was written"))
        f.flush()
        os.fsync(f.fileno())
        return size, dict(r.headers)


def audio_problem(part: Path, fmt: str, frames: str | None) -> str | None:
    """Why the downloaded audio is not the whole file the service announced (X-Countersign-Frames), or None.

    Only the container's own sizes are read (no audio library on an officer's laptop): a WAV's
    RIFF and data sizes must match the file, a FLAC's STREAMINFO its total samples.
    """
    with part.open("rb") as f:
        head = f.read(44)
        size = os.fstat(f.fileno()).st_size
    if fmt == "wav":
        if head[:4] != b"RIFF" or head[8:16] != b"WAVEfmt " or head[36:40] != b"data":
            return "it is not a WAV file"
        riff, data = int.from_bytes(head[4:8], "little"), int.from_bytes(head[40:44], "little")
        block = int.from_bytes(head[32:34], "little") or 1
        if riff != size - 8 or data != size - 44:
            return f"the WAV's sizes ({data} bytes of audio) do not match the {size} bytes received"
        got = data // block
    else:
        if head[:4] != b"fLaC" or len(head) < 42:
            return "it is not a FLAC file"
        got = int.from_bytes(head[18:26], "big") & ((1 << 36) - 1)
    if frames is not None and got != int(frames):
        return f"the file holds {got} frames, {frames} were announced"
    return None


def move_into_place(part: Path, output: Path, force: bool) -> None:
    """Give the finished download its name; without --force never replace a file, even one made meanwhile."""
    try:
        if force:
            os.replace(part, output)
            return
        try:
            os.link(part, output)  # atomic, and fails if the name exists
        except FileExistsError:
            raise usage_error(f"{output} exists; pass --force to replace it") from None
        except OSError:  # a file system without hard links
            if output.exists():
                raise usage_error(f"{output} exists; pass --force to replace it") from None
            os.replace(part, output)
    except OSError as exc:
        raise usage_error(f"cannot write {output}: {exc}") from exc
