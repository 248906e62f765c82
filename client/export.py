"""`countersign evidence export`: an evidence bundle for the police, a lawyer or a court.

The service encrypts the bundle to a public key this command sends: the
recipient's (--recipient-key), one derived here from a passphrase (the
passphrase never leaves this machine), or, with --unencrypted, a one-time key
made here so the bundle can be decrypted and written in the clear. Either way
the file is written beside the output and renamed only when it arrived whole
and opened (docs/evidence-bundle.md).

With --key (a zero-knowledge service, which cannot decrypt), the service sends
the signed bundle without its audio and the recording as stored; this command
decrypts the audio with the organisation's offline key, checks the finished
bundle as its recipient will (evidence.bundle.completion) and encrypts it here,
to the same recipient key it named in the logged request.
"""

from __future__ import annotations

import os
import sys
import zipfile
from pathlib import Path
from typing import Annotated, Any

import typer
from nacl.public import PrivateKey

from client.admin import DEFAULT_SERVER, Server, Token
from client.download import fetch_to, move_into_place, part_file, refuse_existing, usage_error
from client.errors import fail
from client.http import ApiClient
from client.ids import resolve_recording
from client.output import echo
from client.sealed_read import offline_key
from evidence.bundle import completion
from evidence.bundle.archive import inner_zip
from evidence.bundle.crypto import new_kdf, open_outer, passphrase_key, write_outer
from evidence.errors import CountersignError, EvidenceError
from evidence.recovery import OfflineKey

PASSPHRASE_ENV = "COUNTERSIGN_BUNDLE_PASSPHRASE"
MIN_PASSPHRASE = 12


def _recipient_key(value: str) -> bytes:
    """A recipient's X25519 public key: 64 hex characters, or a file holding them."""
    text = value.strip()
    path = Path(text)
    if len(text) != 64 and path.is_file():
        text = path.read_text(encoding="utf-8", errors="replace").strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != 32:
        raise usage_error(
            "--recipient-key must be 64 hex characters (the recipient's `verify.py keygen`), or a file of them"
        )
    return key


def _passphrase(passphrase_file: Path | None) -> bytes:
    if passphrase_file is not None:
        try:
            text = passphrase_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise usage_error(f"cannot read {passphrase_file}: {exc}") from exc
        # One line ending is not part of the passphrase; verify.py drops exactly the same (strip_newline).
        text = text.removesuffix("\n").removesuffix("\r") if text.endswith("\n") else text
    elif os.environ.get(PASSPHRASE_ENV):
        text = os.environ[PASSPHRASE_ENV]
    elif sys.stdin.isatty():
        text = typer.prompt("passphrase for the bundle", hide_input=True, confirmation_prompt=True)
    else:
        raise usage_error(
            "choose how the bundle is protected: --recipient-key, --passphrase-file (or "
            f"{PASSPHRASE_ENV}), or --unencrypted"
        )
    if len(text) < MIN_PASSPHRASE:
        raise usage_error(f"the passphrase must be at least {MIN_PASSPHRASE} characters")
    return text.encode()


def export(
    recording_id: Annotated[str, typer.Argument(help="The recording's id, or its first characters (at least 4).")],
    case: Annotated[str, typer.Option("--case", help="The case reference the bundle is for (logged, printed in it).")],
    purpose: Annotated[str, typer.Option(help="Why the evidence leaves (at least 10 characters; logged first).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the bundle (.zip).")],
    recipient: Annotated[str | None, typer.Option(help="Who receives it, e.g. a police station (logged).")] = None,
    recipient_key: Annotated[
        str | None, typer.Option(help="Encrypt to this X25519 public key (hex, or a file holding it).")
    ] = None,
    passphrase_file: Annotated[
        Path | None, typer.Option(help=f"Encrypt to the passphrase in this file (or ${PASSPHRASE_ENV}, or asked).")
    ] = None,
    unencrypted: Annotated[
        bool, typer.Option("--unencrypted", help="Write the bundle unencrypted (it holds plaintext audio).")
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace the output file if it exists.")] = False,
    key: Annotated[
        Path | None,
        typer.Option(
            "--key",
            help="Zero-knowledge mode: the organisation's offline key file (recovery-ID.key); the audio is "
            "decrypted and the bundle finished and encrypted on this machine.",
        ),
    ] = None,
    key_passphrase_file: Annotated[
        Path | None, typer.Option(help="With --key: file whose first line is its passphrase (else it is asked for).")
    ] = None,
    server: Server = DEFAULT_SERVER,
    token: Token = None,
) -> None:
    """Export a recording as an evidence bundle anyone can verify offline (`python verify.py bundle.zip`).

    Encrypted by default: to --recipient-key, or to a passphrase (asked, or --passphrase-file).
    """
    options = {"--recipient-key": recipient_key, "--passphrase-file": passphrase_file, "--unencrypted": unencrypted}
    chosen = [name for name, given in options.items() if given]
    if len(chosen) > 1:
        raise usage_error(f"choose one of {', '.join(chosen)}")
    refuse_existing(output, force)
    if key_passphrase_file is not None and key is None:
        raise usage_error("--key-passphrase-file goes with --key")
    # The offline key first: a mistyped passphrase must not cost a logged export.
    offline = offline_key(key, key_passphrase_file) if key is not None else None
    kdf: dict[str, Any] | None = None
    one_time: PrivateKey | None = None
    if recipient_key is not None:
        public = _recipient_key(recipient_key)
    elif unencrypted and offline is None:
        one_time = PrivateKey.generate()
        public = bytes(one_time.public_key)
    elif unencrypted:  # finished here, so written as it is; the logged key is one nobody holds
        public = bytes(PrivateKey.generate().public_key)
    else:
        kdf = new_kdf()
        public = bytes(passphrase_key(_passphrase(passphrase_file), kdf).public_key)
    body = {
        "purpose": purpose,
        "case_ref": case,
        "recipient": recipient,
        "recipient_public_key": public.hex(),
        "kdf": kdf,
    }
    client = ApiClient(server, token)
    recording_id = resolve_recording(client, recording_id)  # a short id: resolved within your sites
    if offline is not None:
        _export_finished_here(client, recording_id, body, offline, output, force, None if unencrypted else public, kdf)
        return
    with part_file(output) as part:
        size, headers = fetch_to(client, part, "POST", f"/v1/evidence/{recording_id}/export", json=body)
        if one_time is not None:
            with part_file(output) as plain:
                try:
                    with zipfile.ZipFile(part) as outer, plain.open("wb") as f:
                        open_outer(outer, one_time, f)
                        f.flush()
                        os.fsync(f.fileno())
                except (zipfile.BadZipFile, EvidenceError) as exc:
                    raise usage_error(f"the bundle did not arrive intact ({exc}); nothing was written") from exc
                size = plain.stat().st_size
                move_into_place(plain, output, force)
        else:
            move_into_place(part, output, force)
    if one_time is not None:
        protection = "unencrypted: it holds plaintext audio"
    else:
        protection = "encrypted to the passphrase" if kdf else "encrypted to the recipient's key"
    echo(f"wrote {output} ({size} bytes, {protection}; access log entry {headers.get('x-countersign-access-log')})")
    echo(f"bundle SHA256SUMS digest {headers.get('x-countersign-bundle-sha256sums')} (in the audit log)")
    echo(f"the recipient checks it with: python verify.py {output.name}")


def _export_finished_here(
    client: ApiClient,
    recording_id: str,
    body: dict[str, Any],
    key: OfflineKey,
    output: Path,
    force: bool,
    recipient: bytes | None,
    kdf: dict[str, Any] | None,
) -> None:
    """The zero-knowledge export: fetch, decrypt, verify, zip, encrypt to `recipient` (None: unencrypted)."""
    with part_file(output) as part:
        document = client.json("POST", f"/v1/evidence/{recording_id}/export/sealed", json=body)
        try:
            inner = inner_zip(completion.finish(document, key))
        except CountersignError as exc:
            raise fail(exc) from exc
        with part.open("wb") as f:
            if recipient is None:
                f.write(inner)
            else:
                write_outer(f, [inner], recipient, kdf)
            f.flush()
            os.fsync(f.fileno())
        size = part.stat().st_size
        move_into_place(part, output, force)
    if recipient is None:
        protection = "unencrypted: it holds plaintext audio"
    else:
        protection = "encrypted to the passphrase" if kdf else "encrypted to the recipient's key"
    echo(
        f"wrote {output} ({size} bytes, {protection}; finished on this machine with offline key {key.key_id}; "
        f"access log entry {document.get('access_log')})"
    )
    echo(f"bundle SHA256SUMS digest {document.get('sha256sums')} (in the audit log)")
    echo(f"the recipient checks it with: python verify.py {output.name}")
