"""Bearer tokens and enrolment codes: random, shown once, stored only as SHA-256.

They are 256-bit random strings, so a plain hash (no salt, no slow KDF) is
enough: there is nothing to guess, and a constant lookup by hash stays fast.
"""

from __future__ import annotations

import hashlib
import secrets


def new_token(prefix: str) -> str:
    return f"{prefix}_{secrets.token_urlsafe(32)}"


def new_enrolment_code() -> str:
    # Short enough to type at a counter, long enough (~80 bits) not to be guessed
    # before it expires.
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
    raw = "".join(secrets.choice(alphabet) for _ in range(16))
    return "-".join(raw[i : i + 4] for i in range(0, 16, 4))


def token_hash(token: str) -> str:
    return hashlib.sha256(token.strip().encode()).hexdigest()
