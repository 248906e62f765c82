"""Errors of the officer's, auditor's and administrator's CLI. Each docstring is the message;
exit_code (evidence.errors.ExitCode) is what the command returns."""

from __future__ import annotations

import typer

from evidence.errors import CountersignError, ExitCode
from evidence.text import printable


class ClientError(CountersignError):
    """The request failed"""

    exit_code = ExitCode.FAILED


class MissingToken(ClientError):
    """Set COUNTERSIGN_TOKEN (or pass --token)"""

    exit_code = ExitCode.USAGE


class RequestRefused(ClientError):
    """The server refused the request"""


class BadReply(ClientError):
    """The server's answer cannot be read"""


class ServerUnreachable(ClientError):
    """Cannot reach the server"""

    exit_code = ExitCode.SERVER_UNREACHABLE


def fail(exc: CountersignError) -> typer.Exit:
    """Print the error as one red line on stderr; return the Exit (its exit_code) to raise."""
    typer.secho(f"error: {printable(str(exc))}", fg=typer.colors.RED, err=True)  # it may quote the server
    return typer.Exit(exc.exit_code)
