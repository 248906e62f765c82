"""The second factor: TOTP (RFC 6238, 30-second steps, 6 digits, SHA-1 as authenticator apps expect) via pyotp.

A code is accepted for its own step or the one either side (clock drift), and never twice: the
step of the last accepted code is kept, and a code for that step or an earlier one is refused,
so a code seen over a shoulder or in a proxy cannot be replayed within its window.
"""

from __future__ import annotations

import hmac
import time

import pyotp

ISSUER = "Countersign"
STEP = 30
DRIFT = 1  # steps either side


def new_secret() -> str:
    """160 random bits (RFC 4226's recommendation), base32, from the OS's secure generator."""
    return pyotp.random_base32(32)


def provisioning_uri(secret: str, name: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=name, issuer_name=ISSUER)


def matching_step(secret: str, code: str, last_step: int, now: float | None = None) -> int | None:
    """The step whose code this is (within DRIFT of now, after last_step), or None."""
    code = code.strip().replace(" ", "")
    if not (code.isascii() and code.isdigit() and len(code) == 6):
        return None
    totp = pyotp.TOTP(secret)
    current = int((time.time() if now is None else now) // STEP)
    found = None
    for step in range(current - DRIFT, current + DRIFT + 1):
        if hmac.compare_digest(totp.at(step * STEP), code) and step > last_step:
            found = step
    return found
