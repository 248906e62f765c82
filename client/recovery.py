"""`countersign recovery ...`: make and restore the offline recovery key (evidence.recovery).

Run on an offline machine with only the `client` extra installed: nothing here talks to the
service or imports any of it. The public file it writes is registered on the server with
`countersign keys add-offline`; recovery itself is `countersign keys recover` (server extra).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from client.errors import fail
from evidence import recovery
from evidence.errors import CountersignError

app = typer.Typer(
    no_args_is_help=True,
    help="The offline recovery key: generate it on an offline machine; restore it from its paper backup.",
)

PassphraseFile = Annotated[
    Path | None,
    typer.Option(help="File whose first line is the recovery key passphrase (else it is asked for)."),
]


def _passphrase(path: Path | None, confirm: bool) -> bytes:
    if path is not None:
        passphrase = recovery.read_passphrase_file(path)
    else:
        passphrase = typer.prompt("recovery key passphrase", hide_input=True, confirmation_prompt=confirm).encode()
    recovery.check_passphrase(passphrase)
    return passphrase


def _write_key(key: recovery.OfflineKey, out: Path, passphrase: bytes) -> tuple[Path, Path]:
    private = out / f"recovery-{key.key_id}.key"
    public = out / f"recovery-{key.key_id}.public.json"
    if public.exists():
        raise recovery.RecoveryKeyError(f"{public} already exists")
    recovery.write_private_file(private, key, passphrase)
    recovery.write_atomically(public, (json.dumps(key.public_document(), indent=2) + "\n").encode())
    return private, public


@app.command()
def generate(
    out: Annotated[Path, typer.Option(help="Folder for the private key file and the public file.")],
    passphrase_file: PassphraseFile = None,
) -> None:
    """Make an offline recovery key (run this on an offline machine, not on the server).

    Writes recovery-ID.key (the private halves under the passphrase: keep it offline) and
    recovery-ID.public.json (carry it to the server: `countersign keys add-offline`), and prints
    the paper backup: print it, check it, keep it in a safe.
    """
    try:
        passphrase = _passphrase(passphrase_file, confirm=True)
        key = recovery.OfflineKey.generate()
        private, public = _write_key(key, out, passphrase)
    except CountersignError as exc:
        raise fail(exc) from exc
    typer.echo(recovery.paper_backup(key))
    typer.echo(f"private key file: {private} (keep offline, with its passphrase apart from it)", err=True)
    typer.echo(f"public file: {public} (register it: countersign keys add-offline {public.name} --data DIR)", err=True)


@app.command()
def restore(
    backup: Annotated[Path, typer.Argument(help="The paper backup typed back in ('-' reads standard input).")],
    out: Annotated[Path, typer.Option(help="Folder for the restored private key file and public file.")],
    passphrase_file: PassphraseFile = None,
) -> None:
    """Rebuild the private key file from its paper backup (each line's checksum catches a typo)."""
    try:
        text = sys.stdin.read() if str(backup) == "-" else backup.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise fail(recovery.PaperBackupError(f"cannot read {backup}: {exc}")) from exc
    try:
        key = recovery.read_paper_backup(text)
        passphrase = _passphrase(passphrase_file, confirm=True)
        private, public = _write_key(key, out, passphrase)
    except CountersignError as exc:
        raise fail(exc) from exc
    typer.echo(f"restored offline key {key.key_id} (recovery key {key.recovery_key_id})")
    typer.echo(f"private key file: {private}")
    typer.echo(f"public file: {public}")
