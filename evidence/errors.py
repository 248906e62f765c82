"""Errors of the evidence format. Each docstring is the message a user sees."""


class EvidenceError(Exception):
    """The evidence could not be processed."""

    def __init__(self, detail: str = "") -> None:
        message = (self.__doc__ or "").strip()
        super().__init__(f"{message}: {detail}" if detail else message)
        self.detail = detail


class IntegrityError(EvidenceError):
    """Integrity check failed; the evidence was altered, reordered or is incomplete"""


class FormatError(EvidenceError):
    """Malformed evidence"""


class KeyUnavailableError(EvidenceError):
    """No usable evidence key"""
