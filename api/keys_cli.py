"""`countersign keys ...`: evidence key custody, on the server's data directory (api.key_custody)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy.exc import SQLAlchemyError

from api import key_custody, recovery
from api.cli import DataDir, settings_for
from api.core.keys import KeyFileError
from api.core.settings import SettingsError
from api.errors import DatabaseUnavailable, NotConfigured, fail
from evidence import recovery as offline
from evidence.errors import CountersignError

app = typer.Typer(
    no_args_is_help=True,
    help="Evidence key custody: list, rotate, retire, rewrap, destroy keys; the passphrase; offline recovery.",
)

KeyId = Annotated[str, typer.Argument(help="Evidence key id (see 'countersign keys list').")]


def say(line: str) -> None:
    typer.echo(line)


@contextmanager
def _one_line() -> Iterator[None]:
    """Every refusal is one red line and its exit status, never a traceback."""
    try:
        yield
    except (SettingsError, KeyFileError) as exc:
        raise fail(NotConfigured(str(exc))) from exc
    except CountersignError as exc:
        raise fail(exc) from exc
    except SQLAlchemyError as exc:
        orig = getattr(exc, "orig", None)
        lines = str(orig if orig is not None else exc).strip().splitlines()
        raise fail(DatabaseUnavailable(lines[0] if lines else type(exc).__name__)) from exc


@app.command("list")
def list_command(data: DataDir) -> None:
    """Show the evidence keys: id, created, state, custody, recordings sealed to each, key file present."""
    settings = settings_for(data)
    with _one_line(), key_custody.open_custody(settings) as custody:
        rows = key_custody.list_keys(custody)
    typer.echo(f"{'key id':<16}  {'created (UTC)':<19}  {'state':<9}  {'custody':<7}  {'recordings':>10}  file")
    for r in rows:
        typer.echo(
            f"{r.key_id:<16}  {r.created_at:%Y-%m-%d %H:%M:%S}  {r.state:<9}  {r.custody:<7}  {r.recordings:>10}  "
            f"{'yes' if r.file else 'no'}"
        )


@app.command()
def rotate(data: DataDir) -> None:
    """Make a new evidence key the one devices seal to; the old current key becomes previous (audited)."""
    settings = settings_for(data)
    with _one_line(), key_custody.open_custody(settings) as custody:
        new, old = key_custody.rotate(custody)
    typer.echo(f"new current evidence key: {new}")
    if old:
        typer.echo(f"{old} is now previous: still read and accepted; retire it once devices have the new key")
    typer.echo("devices fetch the new key before their next recording; running services load it on first use")


@app.command()
def retire(data: DataDir, key_id: KeyId) -> None:
    """Stop accepting a previous key: recordings sealed only to it are refused; it still reads (audited)."""
    settings = settings_for(data)
    with _one_line(), key_custody.open_custody(settings) as custody:
        pending = key_custody.retire(custody, key_id)
    typer.echo(f"retired {key_id}")
    if pending:
        typer.echo(f"{pending} recordings are not yet sealed to the current key: run 'countersign keys rewrap'")


@app.command()
def rewrap(
    data: DataDir,
    batch: Annotated[int, typer.Option(min=1, help="Recordings per committed (and audited) batch.")] = 1000,
    drop_old: Annotated[
        bool,
        typer.Option("--drop-old", help="Then delete the data keys sealed to retired keys of rewrapped recordings."),
    ] = False,
) -> None:
    """Reseal old recordings' data keys to the current key (resumable: a rerun skips what is done; audited)."""
    settings = settings_for(data)
    with _one_line(), key_custody.open_custody(settings) as custody:
        result = key_custody.rewrap(custody, batch=batch, drop_old=drop_old, say=say)
    typer.echo(f"rewrapped {result.rewrapped} recordings to {result.current} in {result.batches} batches")
    for rid, why in sorted(result.failed.items()):
        typer.secho(f"not rewrapped: recording {rid}: {why}", fg=typer.colors.RED, err=True)
    if result.failed:
        raise typer.Exit(1)


@app.command()
def destroy(data: DataDir, key_id: KeyId) -> None:
    """Destroy a retired key: its sealed data keys and its private key file (refused while a live
    recording is sealed only to it; audited)."""
    settings = settings_for(data)
    with _one_line(), key_custody.open_custody(settings) as custody:
        deleted = key_custody.destroy(custody, key_id)
    typer.echo(f"destroyed {key_id}: its key file is overwritten and removed; {deleted} sealed data keys deleted")


@app.command()
def passphrase(
    data: DataDir,
    new_passphrase_file: Annotated[
        Path | None,
        typer.Option(help="File whose first line is the new passphrase (else COUNTERSIGN_NEW_KEY_PASSPHRASE)."),
    ] = None,
) -> None:
    """Re-encrypt every key file under a new passphrase (crash-safe; rerun to finish an interrupted change)."""
    settings = settings_for(data)
    with _one_line():
        new = key_custody.read_new_passphrase(new_passphrase_file)
        changed = key_custody.change_passphrase(settings, new, say)
    typer.echo(f"{len(changed)} key files re-encrypted; set COUNTERSIGN_KEY_PASSPHRASE to the new one and restart")


# --- offline recovery keys (api.recovery; the key itself: `countersign recovery generate`) ----------------


@app.command("add-offline")
def add_offline(
    data: DataDir,
    public_file: Annotated[
        Path, typer.Argument(help="The recovery-ID.public.json 'countersign recovery generate' wrote.")
    ],
) -> None:
    """Register an offline recovery key: devices then seal every new recording to it too (audited)."""
    settings = settings_for(data)
    with _one_line(), key_custody.open_custody(settings) as custody:
        kid, old = recovery.add_offline(custody, public_file)
    typer.echo(f"offline key {kid} registered: devices seal new recordings to it from their next recording")
    if old:
        typer.echo(f"{old} is now a previous offline key (still sealed to: 'countersign keys retire {old}' stops it)")


@app.command()
def recover(
    recording_id: Annotated[str, typer.Argument(help="The recording to read.")],
    offline_key: Annotated[Path, typer.Option(help="The offline recovery key file (recovery-ID.key).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Audio file to write (.flac or .wav).")],
    reason: Annotated[str, typer.Option(help="Why it is read: goes into the signed recovery record.")],
    operator: Annotated[str, typer.Option(help="Who reads it: goes into the signed recovery record.")],
    data: Annotated[
        Path | None,
        typer.Option(help="A backup of the data directory: its SQLite database and, unless --store, its objects/."),
    ] = None,
    database_url: Annotated[
        str | None, typer.Option(help="The database backup (SQLAlchemy URL), instead of --data.")
    ] = None,
    store: Annotated[
        str | None, typer.Option(help="The object store: a folder (a copy of DATA/objects) or s3://BUCKET/PREFIX.")
    ] = None,
    s3_endpoint_url: Annotated[
        str | None, typer.Option(help="S3 endpoint (MinIO, ...); credentials: the AWS chain.")
    ] = None,
    s3_region: Annotated[str, typer.Option(help="S3 region.")] = "us-east-1",
    passphrase_file: Annotated[
        Path | None, typer.Option(help="File whose first line is the recovery key passphrase (else it is asked for).")
    ] = None,
) -> None:
    """Read a recording WITHOUT the service: the offline key, a database backup and the object store.

    Verifies the device's signatures, the chain and every hash, writes the audio (and nothing if a
    check fails) and OUTPUT.recovery.json, a record signed with the recovery key: import it with
    'countersign keys import-recovery' once the service is back (the read is then in the audit log).
    """
    with _one_line():
        if database_url is None and data is None:
            raise key_custody.KeyUsageError("give --data DIR (a backup of the data directory) or --database-url")
        if store is None and data is None:
            raise key_custody.KeyUsageError("give --store (the object store) with --database-url")
        url = database_url or f"sqlite:///{(Path(str(data)) / 'countersign.db').resolve()}"
        blobs = recovery.open_store(store or str(Path(str(data)) / "objects"), s3_endpoint_url, s3_region)
        if passphrase_file is not None:
            passphrase = offline.read_passphrase_file(passphrase_file)
        else:
            passphrase = typer.prompt("recovery key passphrase", hide_input=True).encode()
        key = offline.read_private_file(offline_key, passphrase)
        done = recovery.recover(url, blobs, key, recording_id, output, operator=operator, reason=reason)
    typer.echo(
        f"recovered {done.segments} segments ({done.frames} frames) to {done.output} (sha256 {done.output_sha256})"
    )
    typer.echo(f"recovery record: {done.record}: import it with 'countersign keys import-recovery' on the server")


@app.command("import-recovery")
def import_recovery(
    data: DataDir,
    record_file: Annotated[Path, typer.Argument(help="The OUTPUT.recovery.json 'countersign keys recover' wrote.")],
) -> None:
    """Put an offline recovery into the audit log: its signature is checked against the registered key."""
    settings = settings_for(data)
    with _one_line(), key_custody.open_custody(settings) as custody:
        done = recovery.import_recovery(custody, record_file)
    if done.already:
        typer.echo(f"already imported: audit entry {done.seq} (record {done.record_sha256[:16]})")
    else:
        typer.echo(f"imported as audit entry {done.seq} for recording {done.recording_id}")
    typer.echo(f"compared with the service's log: {done.log_check}")
