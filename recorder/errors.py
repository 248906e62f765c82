"""Recorder errors. Each docstring is the message; exit_code (evidence.errors.ExitCode) is what the CLI returns."""

from __future__ import annotations

from evidence.errors import CountersignError, ExitCode


class RecorderError(CountersignError):
    """The recorder stopped"""

    exit_code = ExitCode.FAILED


class UsageError(RecorderError):
    """Cannot start"""

    exit_code = ExitCode.USAGE


class AlreadyEnrolled(UsageError):
    """This home already holds an enrolled device; use another --home"""


class BadEnrolmentCode(UsageError):
    """That is not an enrolment code: it has 16 letters and digits, like XXXX-XXXX-XXXX-XXXX"""


class AudioDeviceError(UsageError):
    """The audio input device cannot be opened"""


class NotEnrolled(RecorderError):
    """This device is not enrolled; run 'countersign recorder enroll' first"""

    exit_code = ExitCode.NOT_ENROLLED


class NoEvidenceKey(RecorderError):
    """Refusing to record: no valid evidence key to seal the recording to"""

    exit_code = ExitCode.NO_EVIDENCE_KEY


class SpoolFull(RecorderError):
    """ALARM: the spool is full; recording stopped and nothing was deleted"""

    exit_code = ExitCode.SPOOL_FULL


class ServerRefused(RecorderError):
    """The server refused the upload"""

    exit_code = ExitCode.SERVER_REFUSED


class EnrolmentRefused(ServerRefused):
    """The server refused the enrolment"""


class ServerUnreachable(RecorderError):
    """The server cannot be reached"""

    exit_code = ExitCode.SERVER_UNREACHABLE


class NotAllUploaded(ServerUnreachable):
    """Not everything reached the server; the evidence stays in the spool: run 'countersign recorder sync'"""


class NoticeAudioError(RecorderError):
    """Cannot play the notice audio"""
