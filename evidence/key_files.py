"""Where the service keeps its key files, and reading their public halves without a passphrase.

Offline tools (an auditor's `audit verify --data DIR`) read the service's public
signing key from a data directory; they need this layout and nothing of the service.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from evidence.errors import KeyUnavailableError

KEYS_DIR = "keys"
SIGNING_KEY_FILE = "service-signing.key"


class KeyFileError(KeyUnavailableError):
    """A key file cannot be read"""


def read_key_file(path: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise KeyFileError(f"{path}: {exc}") from exc
    return data


def read_public_signing_key(data_dir: Path) -> bytes:
    """The service's public signing key, readable without the passphrase."""
    try:
        return bytes.fromhex(read_key_file(data_dir / KEYS_DIR / SIGNING_KEY_FILE)["public"])
    except (KeyError, TypeError, ValueError) as exc:
        raise KeyFileError(f"{data_dir / KEYS_DIR / SIGNING_KEY_FILE}: no public key in it") from exc
