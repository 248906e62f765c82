"""`countersign audit ...`: auditors read, export and verify the access log."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from client.admin import DEFAULT_SERVER, Server, Token
from client.http import ApiClient
from client.output import echo, echo_audit
from client.tls import add_tls_options
from evidence.audit_log import verify_export
from evidence.key_files import KeyFileError, read_public_signing_key
from evidence.text import printable

app = typer.Typer(no_args_is_help=True, help="Read, export and verify the access log (auditors).")


@app.command()
def log(
    after: Annotated[int, typer.Option(help="Only entries after this sequence number.")] = 0,
    limit: Annotated[int, typer.Option(min=1, max=10000)] = 1000,
    server: Server = DEFAULT_SERVER,
    token: Token = None,
) -> None:
    """Print access-log entries, oldest first."""
    echo_audit(ApiClient(server, token).json("GET", "/v1/audit", params={"after": after, "limit": limit}))


@app.command()
def export(
    output: Annotated[Path, typer.Option("-o", "--output", help="File to write (JSON Lines).")],
    after: Annotated[int, typer.Option(min=0, help="Export entries after this sequence number.")] = 0,
    until: Annotated[int | None, typer.Option(min=1, help="Up to this seq (to the next checkpoint).")] = None,
    server: Server = DEFAULT_SERVER,
    token: Token = None,
) -> None:
    """Export the log (or a range), ending at a checkpoint the service signs now."""
    params = {"after": after, **({"until": until} if until else {})}
    client = ApiClient(server, token)
    count = 0
    with client.stream("GET", "/v1/audit/export", params=params) as response, output.open("w", encoding="utf-8") as f:
        for line in response.iter_lines():
            f.write(line + "\n")
            count += line.startswith('{"type": "entry"')
    echo(f"wrote {output}: {count} entries; verify with 'countersign audit verify {output} --public-key ...'")


@app.command()
def verify(
    file: Annotated[Path, typer.Argument(help="An export from 'countersign audit export'.")],
    public_key: Annotated[str | None, typer.Option(help="The service's Ed25519 public key, hex.")] = None,
    data: Annotated[Path | None, typer.Option("--data", help="Read the key from a data directory.")] = None,
) -> None:
    """Verify an export offline: every link, every checkpoint signature; report the first problem."""
    try:
        if public_key:
            key = bytes.fromhex(public_key)
        elif data:
            key = read_public_signing_key(data)
        else:
            typer.secho(
                "error: pass --public-key (from 'server init' or GET /v1/audit/public-key) or --data: "
                "a key taken from the file itself would prove nothing",
                fg=typer.colors.RED,
                err=True,
            )
            raise typer.Exit(2)
        with file.open(encoding="utf-8") as f:
            report = verify_export(f, key)
    except (ValueError, OSError, KeyFileError) as exc:
        typer.secho(f"error: {printable(str(exc))}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from exc
    span = f"seq {report.first_seq}..{report.last_seq}" if report.entries else "no entries"
    if report.ok:
        echo(f"OK: {report.entries} entries ({span}), {report.checkpoints} signed checkpoints verified")
        return
    problem = printable(report.problems[0])  # it may quote the export, which anyone could have edited
    typer.secho(f"FAILED after {report.entries} good entries ({span}): {problem}", fg=typer.colors.RED)
    raise typer.Exit(1)


add_tls_options(app)  # --ca-file and --pin on every command above with --server: keep last
