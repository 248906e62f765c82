"""Enrolment: make the device key here, register its public half, keep the rest at 0600."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nacl.signing

from evidence import tls
from recorder.client import DeviceClient
from recorder.errors import (
    AlreadyEnrolled,
    BadEnrolmentCode,
    EnrolmentRefused,
    ServerRefused,
    ServerUnreachable,
    UsageError,
)
from recorder.home import DeviceHome
from recorder.notice_audio import sync_audio

CODE_GROUPS, GROUP_LENGTH = 4, 4  # the service issues XXXX-XXXX-XXXX-XXXX (api.core.tokens.new_enrolment_code)
_SEPARATORS = re.compile(r"[\s\-_.]+")
_CODE = re.compile(rf"[A-Z0-9]{{{CODE_GROUPS * GROUP_LENGTH}}}")


def normalise_code(code: str) -> str:
    """The code as the service issued it, however it was typed: case, spaces and dashes do not matter."""
    raw = _SEPARATORS.sub("", code).upper()
    if not _CODE.fullmatch(raw):
        raise BadEnrolmentCode(f"got {code.strip()!r}")
    return "-".join(raw[i : i + GROUP_LENGTH] for i in range(0, len(raw), GROUP_LENGTH))


def _refusal(exc: ServerRefused, server: str) -> EnrolmentRefused:
    status, _, said = exc.detail.partition(": ")
    if status == "403":
        return EnrolmentRefused(
            "the enrolment code is unknown, already used or expired; "
            "ask an administrator for a new one ('countersign admin device add')"
        )
    if status == "404":
        return EnrolmentRefused(f"{server} has no enrolment endpoint; is --server the Countersign service?")
    return EnrolmentRefused(f"{status}: {said}" if said else exc.detail)


def _tls_material(server: str, ca_file: Path | None, pin: str | None) -> tuple[str | None, str | None]:
    """The CA certificate's text (to keep in the home) and the normalised pin; a bad one is a usage error."""
    if (ca_file or pin) and not server.lower().startswith("https://"):
        raise UsageError("--ca-file and --pin are for an https:// --server")
    try:
        ca_pem = ca_file.read_text(encoding="ascii") if ca_file else None
        return ca_pem, tls.parse_pin(pin) if pin else None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read --ca-file {ca_file}: {getattr(exc, 'strerror', None) or exc}") from exc
    except tls.TlsConfigError as exc:
        raise UsageError(f"--pin: {exc}") from exc


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


def enroll(
    server: str,
    code: str,
    home_dir: Path,
    ca_file: Path | None = None,
    pin: str | None = None,
    say: Callable[[str], None] = _stderr,
) -> dict[str, Any]:
    """Enrol this device. Over https the server's certificate must verify (against ca_file if given)
    and, if pin is given, match it; its fingerprint is kept and checked on every later connection.

    Once enrolled, the notices' spoken readings are fetched (recorder.notice_audio); one that cannot
    be fetched or fails its hash is reported through `say`, never fails the enrolment (it is done)."""
    home = DeviceHome(home_dir)
    if home.is_enrolled():
        raise AlreadyEnrolled(str(home_dir))
    if not re.match(r"https?://[^/\s]+", server):
        raise UsageError(
            f"--server must be a URL such as https://countersign.example or http://127.0.0.1:8000, not {server!r}"
        )
    normalised = normalise_code(code)
    ca_pem, expected = _tls_material(server, ca_file, pin)
    try:
        client = DeviceClient(server, ca_file=ca_file, pin=expected)
    except tls.TlsConfigError as exc:
        raise UsageError(f"--ca-file: {exc}") from exc
    signing = nacl.signing.SigningKey.generate()  # the private half never leaves this machine
    try:
        reply = client.enrol(normalised, bytes(signing.verify_key).hex())
        seen = client.server_fingerprint  # the certificate of the connection the enrolment went over
    except ServerRefused as exc:
        raise _refusal(exc, server) from exc
    except ServerUnreachable as exc:
        raise type(exc)(f"cannot enrol: {exc.detail}; nothing was written to {home_dir}") from exc
    finally:
        client.close()
    config = {
        "server": server.rstrip("/"),
        "device_id": reply["device_id"],
        "site": reply["site"],
        "service_public_key": reply["service_public_key"],
    }
    if seen is not None:
        config["server_pin"] = seen
    keys = {k["key_id"]: {f: v for f, v in k.items() if f != "key_id"} for k in reply["evidence_keys"]}
    home.save(config, bytes(signing), reply["token"], keys, reply["notices"], ca_pem=ca_pem)
    # With the device's own token and pinned certificate now: the readings are device-only.
    audio_client = DeviceClient.for_home(home, config)
    try:
        sync_audio(home.root, audio_client, reply["notices"], say)
    finally:
        audio_client.close()
    return config
