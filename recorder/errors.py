"""Recorder errors. Each docstring is the message; exit_code is what the CLI returns."""


class RecorderError(Exception):
    """The recorder stopped"""

    exit_code = 1

    def __init__(self, detail: str = "") -> None:
        message = (self.__doc__ or "").strip()
        super().__init__(f"{message}: {detail}" if detail else message)


class NotEnrolled(RecorderError):
    """This device is not enrolled; run 'countersign recorder enroll' first"""

    exit_code = 3


class NoEvidenceKey(RecorderError):
    """Refusing to record: no valid evidence key to seal the recording to"""

    exit_code = 4


class SpoolFull(RecorderError):
    """ALARM: the spool is full; recording stopped and nothing was deleted"""

    exit_code = 5


class ServerRefused(RecorderError):
    """The server refused the upload"""

    exit_code = 6


class ServerUnreachable(RecorderError):
    """The server cannot be reached"""

    exit_code = 7
