"""Errors of `countersign retention`. Each docstring is the message; exit_code
(evidence.errors.ExitCode) is what the command returns."""

from __future__ import annotations

import typer

from evidence.errors import CountersignError, ExitCode


class RetentionCommandError(CountersignError):
    """The retention command failed"""

    exit_code = ExitCode.FAILED


class NotConfigured(RetentionCommandError):
    """The service is not configured"""

    exit_code = ExitCode.USAGE


class ConflictingOptions(RetentionCommandError):
    """These options do not go together"""

    exit_code = ExitCode.USAGE


class BadOption(RetentionCommandError):
    """An option's value cannot be used"""

    exit_code = ExitCode.USAGE


class NotAllPurged(RetentionCommandError):
    """Some recordings were not purged; they will be retried on the next run"""


def fail(exc: CountersignError) -> typer.Exit:
    """Print the error as one red line on stderr; return the Exit (its exit_code) to raise."""
    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    return typer.Exit(exc.exit_code)
