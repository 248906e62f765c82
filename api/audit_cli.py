"""`countersign audit ...`: auditors read the access log."""

from __future__ import annotations

from typing import Annotated

import typer

from api.admin_cli import DEFAULT_SERVER, Server, Token
from api.http_client import ApiClient

app = typer.Typer(no_args_is_help=True, help="Read the access log (auditors only).")


@app.command()
def log(
    after: Annotated[int, typer.Option(help="Only entries after this sequence number.")] = 0,
    limit: Annotated[int, typer.Option(min=1, max=10000)] = 1000,
    server: Server = DEFAULT_SERVER,
    token: Token = None,
) -> None:
    """Print access-log entries, oldest first."""
    for e in ApiClient(server, token).json("GET", "/v1/audit", params={"after": after, "limit": limit}):
        purpose = f'  purpose="{e["purpose"]}"' if e["purpose"] else ""
        head = f"{e['seq']:>6}  {e['at'][:19]}  {e['outcome']:<7} {e['action']:<24} {e['actor']:<45}"
        typer.echo(f"{head} {e['target'] or ''}{purpose}")
