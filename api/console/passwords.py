"""Console passwords: Argon2id through libsodium (PyNaCl's nacl.pwhash.argon2id), never our own crypto.

The stored string is libsodium's own encoding ($argon2id$v=19$m=...,t=...,p=...$salt$hash), so
the parameters travel with each hash and can be raised later without a migration.
"""

from __future__ import annotations

import functools

import nacl.exceptions
import nacl.pwhash

MIN_LENGTH = 12
MAX_LENGTH = 1024  # a sign-in form cannot make the server hash megabytes
# libsodium's "interactive" limits (64 MiB, 2 passes): about 0.1 s a sign-in on a small server.
OPSLIMIT = nacl.pwhash.argon2id.OPSLIMIT_INTERACTIVE
MEMLIMIT = nacl.pwhash.argon2id.MEMLIMIT_INTERACTIVE


class WeakPassword(ValueError):
    pass


def check_strength(password: str) -> None:
    if len(password) < MIN_LENGTH:
        raise WeakPassword(f"a console password needs at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        raise WeakPassword(f"a console password has at most {MAX_LENGTH} characters")


def hash_password(password: str) -> str:
    check_strength(password)
    return nacl.pwhash.argon2id.str(password.encode(), opslimit=OPSLIMIT, memlimit=MEMLIMIT).decode("ascii")


def verify_password(stored: str, password: str) -> bool:
    if len(password) > MAX_LENGTH:
        return False
    try:
        return bool(nacl.pwhash.argon2id.verify(stored.encode("ascii"), password.encode()))
    except nacl.exceptions.InvalidkeyError:
        return False


@functools.cache
def dummy_hash() -> str:
    """Checked when the name is unknown, so a stranger cannot tell names apart by how fast the answer
    comes. Made on first use, not at import (the CLI imports this module too)."""
    return nacl.pwhash.argon2id.str(b"countersign-no-such-user", opslimit=OPSLIMIT, memlimit=MEMLIMIT).decode()
