"""`countersign evidence get --key FILE`: a read decrypted on the officer's machine (zero-knowledge mode).

The service answers POST /v1/evidence/{id}/sealed, after logging the read with its purpose, with
the recording as it holds it (ciphertext, signed statements, the data key sealed to the
organisation's offline key). Here the offline key (the file `countersign recovery generate` wrote)
unseals the data key, and evidence.sealed checks the device's signatures, the chain and every
hash before the segments are joined into the output file. The key is opened before anything is
asked of the service: a mistyped passphrase must not cost a logged read. The plaintext never
touches the disk except as the finished output (written beside it, renamed when complete).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import typer

from client.download import move_into_place, part_file
from client.errors import ClientError, fail
from client.http import ApiClient
from evidence import recovery, sealed
from evidence.errors import CountersignError, ExitCode


class NoAudioLibrary(ClientError):
    """Joining the decrypted segments needs NumPy and libsndfile on this machine"""

    exit_code = ExitCode.USAGE


@dataclass(frozen=True)
class Written:
    size: int
    frames: int
    segments: int
    access_log: int
    final: bool  # False: the device stopped before its final segment (interrupted), verified up to there


def offline_key(path: Path, passphrase_file: Path | None) -> recovery.OfflineKey:
    """The organisation's offline key, unlocked (its passphrase from the file's first line, else asked for)."""
    try:
        if passphrase_file is not None:
            passphrase = recovery.read_passphrase_file(passphrase_file)
        else:
            passphrase = typer.prompt("offline key passphrase", hide_input=True).encode()
        return recovery.read_private_file(path, passphrase)
    except CountersignError as exc:
        raise fail(exc) from exc


def get_sealed(
    client: ApiClient, recording_id: str, purpose: str, key: recovery.OfflineKey, output: Path, fmt: str, force: bool
) -> Written:
    """Fetch, verify, decrypt and write one recording; nothing is written if any check fails."""
    with part_file(output) as part:
        document = client.json("POST", f"/v1/evidence/{recording_id}/sealed", json={"purpose": purpose})
        try:
            opened = sealed.open_document(document, key)
            try:
                data, frames = sealed.join(opened, fmt)
            except ImportError as exc:
                raise NoAudioLibrary(
                    f"{exc.name or exc}: pip install numpy soundfile (the segments verified and decrypted; "
                    "nothing was written)"
                ) from exc
        except CountersignError as exc:
            raise fail(exc) from exc
        part.write_bytes(data)
        move_into_place(part, output, force)
    return Written(len(data), frames, len(opened.segments), int(document.get("access_log", 0)), opened.final)
