"""TLS for the recorder and the client CLI: trusting a private CA, and pinning the server's certificate.

Standard library only (evidence/ is the offline layer and never imports httpx): this
module builds an `ssl.SSLContext` that the HTTP clients hand to httpx as `verify=`.

Where the pin is checked, and why there. Python's `ssl` has no verification callback,
so the context is given its own socket class whose handshake, once OpenSSL has
verified the chain and the host name, compares the SHA-256 fingerprint of the
peer's leaf certificate (DER) with the pin. A mismatch raises inside the TLS
handshake: the socket is closed before a single byte of HTTP is written, so no
bearer token, enrolment code or evidence ever reaches a server that is not the
pinned one. (Checking on a first cheap request, or reading the certificate from a
response, would already have sent the token.) It holds for every connection the
client opens, including ones httpx reopens after a pooled connection dropped.

`PinMismatch` is an `ssl.SSLError`, that is an `OSError`: httpx reports it as a
connection error, and `pin_mismatch(exc)` finds it again in the chain of causes.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import ssl
from collections.abc import Callable
from pathlib import Path

PIN_PREFIX = "sha256:"
_HEX = re.compile(r"[0-9a-f]{64}")

PeerCheck = Callable[[bytes | None], None]


class TlsConfigError(ValueError):
    """A CA file or pin that cannot be used (the message says which and why)."""


class PinMismatch(ssl.SSLError):
    """The server's certificate is not the pinned one."""

    def __init__(self, expected: str, got: str | None) -> None:
        self.message = f"the server's certificate fingerprint is {got or 'unknown'}, not the pinned {expected}"
        super().__init__(self.message)
        self.expected, self.got = expected, got

    def __str__(self) -> str:  # SSLError's own shows its args as a tuple
        return self.message


def fingerprint(der: bytes) -> str:
    """The pin of a DER certificate: 'sha256:' and the lowercase hex of its SHA-256."""
    return PIN_PREFIX + hashlib.sha256(der).hexdigest()


def parse_pin(text: str) -> str:
    """'sha256:HEX' however it was written: case, colons (openssl's -fingerprint output), a bare HEX."""
    raw = text.strip()
    if raw.lower().startswith(PIN_PREFIX):
        raw = raw[len(PIN_PREFIX) :]
    elif raw.lower().startswith("sha256 fingerprint="):  # `openssl x509 -fingerprint -sha256` as printed
        raw = raw.split("=", 1)[1]
    hex_ = raw.replace(":", "").lower()
    if not _HEX.fullmatch(hex_):
        raise TlsConfigError(f"a pin is sha256: and 64 hex digits (the certificate's SHA-256), not {text.strip()!r}")
    return PIN_PREFIX + hex_


def pem_fingerprint(pem: str) -> str:
    """The pin of a PEM certificate (the first one in the text)."""
    return fingerprint(ssl.PEM_cert_to_DER_cert(pem))


def _default_cafile() -> str | None:
    """The CA bundle httpx uses by default (certifi's), so that an https server verifies as it did before."""
    try:
        import certifi
    except ImportError:
        return None  # the system's default CA store
    where: str = certifi.where()
    return where


class PeerPin:
    """Checks each TLS connection's leaf certificate against a pin (if any) and remembers the last one seen."""

    def __init__(self, pin: str | None = None) -> None:
        self.pin = pin
        self.seen: str | None = None

    def __call__(self, der: bytes | None) -> None:
        got = fingerprint(der) if der else None
        self.seen = got
        if self.pin is not None and (got is None or not hmac.compare_digest(got, self.pin)):
            raise PinMismatch(self.pin, got)


def _pinned_socket_class(check: PeerCheck) -> type[ssl.SSLSocket]:
    class PinnedSocket(ssl.SSLSocket):
        def do_handshake(self, block: bool = False) -> None:
            super().do_handshake(block)
            check(self.getpeercert(binary_form=True))

    return PinnedSocket


def _pinned_object_class(check: PeerCheck) -> type[ssl.SSLObject]:
    class PinnedObject(ssl.SSLObject):  # TLS through an HTTPS proxy (memory BIOs)
        def do_handshake(self) -> None:
            super().do_handshake()
            check(self.getpeercert(binary_form=True))

    return PinnedObject


def client_context(ca_file: Path | None = None, check: PeerCheck | None = None) -> ssl.SSLContext:
    """A verifying client context: the chain to ca_file (else the default CAs), the host name, then `check`."""
    try:
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file else _default_cafile())
    except FileNotFoundError as exc:
        raise TlsConfigError(f"CA file {ca_file} does not exist") from exc
    except PermissionError as exc:
        raise TlsConfigError(f"CA file {ca_file} cannot be read (permission denied)") from exc
    except (ssl.SSLError, OSError) as exc:
        raise TlsConfigError(f"CA file {ca_file} holds no usable PEM certificate ({exc})") from exc
    if check is not None:
        context.sslsocket_class = _pinned_socket_class(check)
        context.sslobject_class = _pinned_object_class(check)
    return context


def _causes(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def pin_mismatch(exc: BaseException) -> PinMismatch | None:
    """The PinMismatch behind a (wrapped) connection error, if that is what it was."""
    return next((e for e in _causes(exc) if isinstance(e, PinMismatch)), None)


def untrusted(exc: BaseException) -> str | None:
    """Why the server's certificate did not verify, if that is what a connection error was."""
    for e in _causes(exc):
        if isinstance(e, ssl.SSLCertVerificationError):
            return str(e.verify_message or e.reason or e)
    return None


def describe(exc: BaseException) -> str:
    """A connection error in one line, with the fix when it is about trust."""
    mismatch = pin_mismatch(exc)
    if mismatch is not None:
        return str(mismatch)
    reason = untrusted(exc)
    if reason is not None:
        return (
            f"the server's certificate is not trusted ({reason}); "
            "if a private CA signed it, pass that CA's certificate with --ca-file"
        )
    return str(exc)
