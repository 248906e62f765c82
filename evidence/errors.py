"""Errors and exit codes. Each docstring is the message a user sees; exit_code is what a CLI returns.

`ExitCode` is the one table of exit statuses every `countersign` command uses (the
README's table is checked against it by tests/test_exit_codes.py). It lives here,
in the bottom layer, so the recorder, the client, the service and the retention
job all read the same numbers.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Exit statuses of every `countersign` command."""

    OK = 0
    FAILED = 1  # a request refused or failed (client); some recordings not purged (retention); a failed check
    USAGE = 2  # bad usage or configuration: a wrong option, a missing setting, an audio device that will not open
    NOT_ENROLLED = 3
    NO_EVIDENCE_KEY = 4
    SPOOL_FULL = 5
    SERVER_REFUSED = 6
    SERVER_UNREACHABLE = 7


class CountersignError(Exception):
    """The command failed"""

    exit_code: ExitCode = ExitCode.FAILED

    def __init__(self, detail: str = "") -> None:
        message = (self.__doc__ or "").strip()
        super().__init__(f"{message}: {detail}" if detail else message)
        self.detail = detail


class EvidenceError(CountersignError):
    """The evidence could not be processed."""


class IntegrityError(EvidenceError):
    """Integrity check failed; the evidence was altered, reordered or is incomplete"""


class NoAudio(EvidenceError):
    """No audio to release"""

    # Not an IntegrityError: an objection record, or a consented recording whose capture never
    # produced a segment, holds no audio by what it is. It is reported (and audited) as that,
    # only after every check an integrity failure would come from has passed (api.retrieval).


class FormatError(EvidenceError):
    """Malformed evidence"""


class KeyUnavailableError(EvidenceError):
    """No usable evidence key"""
