"""The `countersign` command: one entry point, one sub-command per package, imported on demand.

Each machine installs only what it runs (a counter PC has no FastAPI or SQLAlchemy,
an officer's laptop has only the client), so no sub-command may be imported until
it is asked for: `countersign --help` and every client command then start in a
fraction of the time the server's imports take. The help text of each group is
written here for the same reason; `tests/test_layers.py` checks it matches.
"""

from __future__ import annotations

import importlib
from typing import Any

import typer
from typer.core import TyperGroup

from evidence.errors import ExitCode

# name -> (module holding a Typer `app`, the extra that installs it, one line of help)
SUBCOMMANDS: dict[str, tuple[str, str, str]] = {
    "server": ("api.cli", "server", "Initialise and run the Countersign service."),
    "db": ("api.db_cli", "server", "Database schema: apply and show migrations."),
    "retention": (
        "retention.cli",
        "server",
        "Retention: purge what policy no longer lets us keep; report what is due.",
    ),
    "keys": (
        "api.keys_cli",
        "server",
        "Evidence key custody: list, rotate, retire, rewrap, destroy keys; the passphrase; offline recovery.",
    ),
    "recovery": (
        "client.recovery",
        "client",
        "The offline recovery key: generate it on an offline machine; restore it from its paper backup.",
    ),
    "recorder": ("recorder.cli", "recorder", "The counter agent: enrol a device, record with consent, upload."),
    "admin": ("client.admin", "client", "Administration: sites, users, devices (admins cannot read evidence)."),
    "evidence": (
        "client.evidence",
        "client",
        "Search, inspect and retrieve evidence (officers; every read is logged).",
    ),
    "hold": (
        "client.holds",
        "client",
        "Legal holds: a held recording cannot be deleted by anyone until every hold on it is released.",
    ),
    "audit": ("client.audit", "client", "Read, export and verify the access log (auditors)."),
    "alerts": ("client.alerts", "client", "Help alerts from the counters of your sites: list and acknowledge."),
}

OWN_PACKAGES = {"api", "client", "consent", "countersign", "evidence", "recorder", "retention"}


class LazyGroup(TyperGroup):
    """A group whose sub-commands are imported only when one is invoked (or its help is asked for)."""

    def list_commands(self, ctx: Any) -> list[str]:
        return list(SUBCOMMANDS)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:  # typer's own click.Command
        if cmd_name not in SUBCOMMANDS:
            return None
        module_name, extra, _ = SUBCOMMANDS[cmd_name]
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            missing = exc.name or str(exc)
            if missing.split(".")[0] in OWN_PACKAGES:
                raise  # a bug in our own code, not a missing extra: let it show
            typer.secho(
                f"error: 'countersign {cmd_name}' is not installed on this machine (missing {missing}); "
                f"install it with: pip install 'countersign[{extra}]'",
                fg=typer.colors.RED,
                err=True,
            )
            raise typer.Exit(ExitCode.USAGE) from None
        command = typer.main.get_command(module.app)
        command.name = cmd_name
        return command

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        # The help lists every group from the table above, without importing any of them.
        rows = [(name, help_) for name, (_, _, help_) in SUBCOMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


app = typer.Typer(
    cls=LazyGroup,
    no_args_is_help=True,
    rich_markup_mode=None,
    help="Countersign: audio evidence that is recorded openly, kept safe, and read only for a stated reason.",
)


@app.callback()
def _root() -> None:
    """Countersign: audio evidence that is recorded openly, kept safe, and read only for a stated reason."""


if __name__ == "__main__":
    app()
