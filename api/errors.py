"""Errors of the `countersign server` and `countersign db` commands. Each docstring is the
message; exit_code (evidence.errors.ExitCode) is what the command returns."""

from __future__ import annotations

import typer

from evidence.errors import CountersignError, ExitCode


class ServerCommandError(CountersignError):
    """The command failed"""

    exit_code = ExitCode.FAILED


class NotConfigured(ServerCommandError):
    """The service is not configured"""

    exit_code = ExitCode.USAGE


class AlreadyInitialisedError(ServerCommandError):
    """Refusing to initialise again; the keys there would be lost"""

    exit_code = ExitCode.USAGE


class DatabaseUnavailable(ServerCommandError):
    """Cannot use the database (check COUNTERSIGN_DATABASE_URL or --data)"""

    exit_code = ExitCode.USAGE


def fail(exc: CountersignError) -> typer.Exit:
    """Print the error as one red line on stderr; return the Exit (its exit_code) to raise."""
    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    return typer.Exit(exc.exit_code)
