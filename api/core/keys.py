"""The key custodian: the service's evidence key pairs and its signing key.

Private keys live in files under DATA/keys, never in the database or the blob
store. Outside development each file holds the key encrypted with a SecretBox
key derived from COUNTERSIGN_KEY_PASSPHRASE by Argon2id, so a copy of the data
directory (or a backup) without the passphrase cannot decrypt evidence.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nacl.exceptions
import nacl.public
import nacl.pwhash
import nacl.secret
import nacl.signing
import nacl.utils

from evidence.errors import IntegrityError, KeyUnavailableError
from evidence.key_files import KEYS_DIR, SIGNING_KEY_FILE, KeyFileError, read_public_signing_key
from evidence.key_files import read_key_file as _read

__all__ = ["KEYS_DIR", "SIGNING_KEY_FILE", "KeyCustodian", "KeyFileError", "read_public_signing_key"]
_KDF = nacl.pwhash.argon2id
_OPSLIMIT = _KDF.OPSLIMIT_MODERATE
_MEMLIMIT = _KDF.MEMLIMIT_MODERATE


def key_id_for(public_key: bytes) -> str:
    return hashlib.sha256(public_key).hexdigest()[:16]


def _protect(secret: bytes, passphrase: bytes | None) -> dict[str, Any]:
    if passphrase is None:
        return {"protection": "none", "secret": secret.hex()}
    salt = nacl.utils.random(_KDF.SALTBYTES)
    box_key = _KDF.kdf(nacl.secret.SecretBox.KEY_SIZE, passphrase, salt, opslimit=_OPSLIMIT, memlimit=_MEMLIMIT)
    return {
        "protection": "argon2id+secretbox",
        "salt": salt.hex(),
        "opslimit": _OPSLIMIT,
        "memlimit": _MEMLIMIT,
        "secret": bytes(nacl.secret.SecretBox(box_key).encrypt(secret)).hex(),
    }


def _unprotect(data: dict[str, Any], passphrase: bytes | None, path: Path) -> bytes:
    if data.get("protection") == "none":
        if passphrase is not None:
            # A production service must not run on a key anyone with the disk can read.
            raise KeyFileError(f"{path} is not passphrase-protected; it was created in development mode")
        return bytes.fromhex(data["secret"])
    if passphrase is None:
        raise KeyFileError(f"{path} is passphrase-protected: set COUNTERSIGN_KEY_PASSPHRASE")
    box_key = _KDF.kdf(
        nacl.secret.SecretBox.KEY_SIZE,
        passphrase,
        bytes.fromhex(data["salt"]),
        opslimit=int(data["opslimit"]),
        memlimit=int(data["memlimit"]),
    )
    try:
        return bytes(nacl.secret.SecretBox(box_key).decrypt(bytes.fromhex(data["secret"])))
    except nacl.exceptions.CryptoError as exc:
        raise KeyFileError(f"{path}: wrong COUNTERSIGN_KEY_PASSPHRASE") from exc


def _write_private(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(payload, f, indent=2)
        f.flush()
        os.fsync(f.fileno())


@dataclass
class KeyCustodian:
    """Holds the unlocked private keys of a running service."""

    evidence_keys: dict[str, nacl.public.PrivateKey] = field(default_factory=dict)
    signing_key: nacl.signing.SigningKey | None = None

    @classmethod
    def create(cls, data_dir: Path, passphrase: bytes | None) -> tuple[KeyCustodian, str]:
        """First start: make one evidence key pair and the service signing key."""
        custodian = cls()
        kid = custodian.add_evidence_key(data_dir, passphrase)
        signing = nacl.signing.SigningKey.generate()
        _write_private(
            data_dir / KEYS_DIR / SIGNING_KEY_FILE,
            {
                "kind": "ed25519-signing",
                "public": bytes(signing.verify_key).hex(),
                **_protect(bytes(signing), passphrase),
            },
        )
        custodian.signing_key = signing
        return custodian, kid

    def add_evidence_key(self, data_dir: Path, passphrase: bytes | None) -> str:
        private = nacl.public.PrivateKey.generate()
        public = bytes(private.public_key)
        kid = key_id_for(public)
        _write_private(
            data_dir / KEYS_DIR / f"evidence-{kid}.key",
            {"kind": "x25519-evidence", "key_id": kid, "public": public.hex(), **_protect(bytes(private), passphrase)},
        )
        self.evidence_keys[kid] = private
        return kid

    @classmethod
    def load(cls, data_dir: Path, passphrase: bytes | None) -> KeyCustodian:
        folder = data_dir / KEYS_DIR
        custodian = cls()
        for path in sorted(folder.glob("evidence-*.key")):
            data = _read(path)
            custodian.evidence_keys[data["key_id"]] = nacl.public.PrivateKey(_unprotect(data, passphrase, path))
        signing_path = folder / SIGNING_KEY_FILE
        if signing_path.exists():
            custodian.signing_key = nacl.signing.SigningKey(_unprotect(_read(signing_path), passphrase, signing_path))
        if not custodian.evidence_keys or custodian.signing_key is None:
            raise KeyFileError(f"no keys under {folder}: run 'countersign server init' first")
        return custodian

    def public_keys(self) -> dict[str, bytes]:
        return {kid: bytes(k.public_key) for kid, k in self.evidence_keys.items()}

    def unseal(self, sealed: dict[str, bytes]) -> bytes:
        """Open a recording's data key with any evidence key we hold."""
        for kid, blob in sealed.items():
            private = self.evidence_keys.get(kid)
            if private is None:
                continue
            try:
                return bytes(nacl.public.SealedBox(private).decrypt(blob))
            except nacl.exceptions.CryptoError as exc:
                # We hold the right key, so the sealed blob itself was altered: evidence, not configuration.
                raise IntegrityError(f"sealed data key for evidence key {kid} does not open") from exc
        raise KeyUnavailableError("the service holds none of the keys this recording was sealed to")
