"""--ca-file and --pin for every client command, and the TLS context ApiClient connects with.

The client has no enrolment, so nothing is pinned on first use: an operator passes the
server certificate's fingerprint explicitly (`--pin sha256:HEX` or COUNTERSIGN_SERVER_PIN),
and a private CA with `--ca-file` (or COUNTERSIGN_CA_FILE). The pin is checked inside the TLS
handshake (evidence/tls.py), so not even the token is sent to a server that does not match.

The options are added to every command of an app that has --server by `add_tls_options(app)`,
called once at the end of each client module (after its last command), instead of being
written into every command's signature; tests/e2e/test_tls.py checks none was missed.
"""

from __future__ import annotations

import functools
import inspect
import os
import typing
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from client.errors import ClientError, ServerUnreachable
from evidence.errors import ExitCode

if TYPE_CHECKING:
    import ssl

CA_FILE_ENV, PIN_ENV = "COUNTERSIGN_CA_FILE", "COUNTERSIGN_SERVER_PIN"

CaFile = Annotated[
    Path | None,
    typer.Option(
        "--ca-file", envvar=CA_FILE_ENV, help="PEM certificate of the private CA that signed the server's certificate."
    ),
]
Pin = Annotated[
    str | None,
    typer.Option(
        "--pin", envvar=PIN_ENV, help="sha256:HEX of the server's certificate; any other certificate is refused."
    ),
]

# What the running command was given (set by the wrapper below; read by ApiClient).
_given: dict[str, Any] = {}


class TlsOptionError(ClientError):
    """Cannot use the TLS options"""

    exit_code = ExitCode.USAGE


class ServerNotTrusted(ServerUnreachable):
    """The server is not the one you trust; nothing was sent to it"""


def _with_tls_options(func: Callable[..., Any]) -> Callable[..., Any]:
    signature = inspect.signature(func, eval_str=True)
    if "server" not in signature.parameters or {"ca_file", "pin"} & set(signature.parameters):
        return func  # an offline command (audit verify), or one that already has them

    @functools.wraps(func)
    def command(*args: Any, ca_file: Path | None = None, pin: str | None = None, **kwargs: Any) -> Any:
        _given.update(ca_file=ca_file, pin=pin)
        return func(*args, **kwargs)

    extra = [
        inspect.Parameter("ca_file", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=CaFile),
        inspect.Parameter("pin", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Pin),
    ]
    command.__signature__ = signature.replace(parameters=[*signature.parameters.values(), *extra])  # type: ignore[attr-defined]
    command.__annotations__ = {**typing.get_type_hints(func, include_extras=True), "ca_file": CaFile, "pin": Pin}
    return command


def add_tls_options(app: typer.Typer) -> None:
    """Give every command with --server of app, and of the apps added to it, --ca-file and --pin."""
    for info in app.registered_commands:
        if info.callback is not None:
            info.callback = _with_tls_options(info.callback)
    for group in app.registered_groups:
        if group.typer_instance is not None:
            add_tls_options(group.typer_instance)


def verify_for(server: str) -> ssl.SSLContext | bool:
    """httpx's `verify=` for this server, from --ca-file/--pin (else their environment variables).

    Without either, httpx's own default (verify against its CA bundle).
    """
    from evidence import tls

    ca_file = _given.get("ca_file") or os.environ.get(CA_FILE_ENV) or None
    pin_text = _given.get("pin") or os.environ.get(PIN_ENV) or None
    if ca_file is None and pin_text is None:
        return True
    if not server.lower().startswith("https://"):
        raise TlsOptionError(f"--ca-file and --pin are for an https:// --server, not {server}")
    try:
        pin = tls.parse_pin(pin_text) if pin_text else None
        return tls.client_context(Path(ca_file) if ca_file else None, tls.PeerPin(pin) if pin else None)
    except tls.TlsConfigError as exc:
        raise TlsOptionError(str(exc)) from exc


def unreachable(base_url: object, exc: Exception) -> ServerUnreachable:
    """A connection error as the client reports it; a pin mismatch is ServerNotTrusted (exit 7 too)."""
    from evidence import tls

    error = ServerNotTrusted if tls.pin_mismatch(exc) is not None else ServerUnreachable
    return error(f"{base_url}: {tls.describe(exc)}")
