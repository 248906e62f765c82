"""The `countersign` command: one entry point, one sub-command per package."""

import typer

from api import admin_cli, audit_cli, db_cli, evidence_cli, hold_cli
from api import cli as server_cli
from recorder import cli as recorder_cli
from retention import cli as retention_cli

app = typer.Typer(
    no_args_is_help=True,
    help="Countersign: audio evidence that is recorded openly, kept safe, and read only for a stated reason.",
)
app.add_typer(server_cli.app, name="server")
app.add_typer(db_cli.app, name="db")
app.add_typer(admin_cli.app, name="admin")
app.add_typer(recorder_cli.app, name="recorder")
app.add_typer(evidence_cli.app, name="evidence")
app.add_typer(audit_cli.app, name="audit")
app.add_typer(hold_cli.app, name="hold")
app.add_typer(retention_cli.app, name="retention")

if __name__ == "__main__":
    app()
