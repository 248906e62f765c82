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
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nacl.exceptions
import nacl.public
import nacl.pwhash
import nacl.secret
import nacl.signing
import nacl.utils
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.core.models import EvidenceKey
from evidence.errors import EvidenceError, IntegrityError, KeyUnavailableError
from evidence.key_files import KEYS_DIR, SIGNING_KEY_FILE, KeyFileError, read_public_signing_key
from evidence.key_files import read_key_file as _read

__all__ = [
    "KEYS_DIR",
    "SIGNING_KEY_FILE",
    "KeyCustodian",
    "KeyFileError",
    "SealedOnlyToRetired",
    "ZeroKnowledgeRefusal",
    "check_sealed_to",
    "read_public_signing_key",
]
_KDF = nacl.pwhash.argon2id
_OPSLIMIT = _KDF.OPSLIMIT_MODERATE
_MEMLIMIT = _KDF.MEMLIMIT_MODERATE

# Evidence key states (EvidenceKey.state). Devices seal to CURRENT (and to offline keys); the
# service accepts new audio sealed to at least one CURRENT or PREVIOUS key (a device that has not
# refreshed since a rotation); it reads with any key whose private half it still holds.
CURRENT, PREVIOUS, RETIRED, DESTROYED = "current", "previous", "retired", "destroyed"
ACCEPTED_STATES = frozenset({CURRENT, PREVIOUS})
SERVICE, OFFLINE = "service", "offline"
# Written beside the key files while `countersign keys passphrase` replaces them; see reprotect().
PASSPHRASE_JOURNAL = "passphrase-change.json"
# Zero-knowledge mode (`countersign server init --zero-knowledge`): this file in DATA/keys says the
# service holds no evidence private key, only its audit signing key. load() then starts with no
# evidence key file and refuses to start if one appears; reads leave as ciphertext (api.sealed_read).
ZERO_KNOWLEDGE_FILE = "zero-knowledge.json"


class ZeroKnowledgeRefusal(EvidenceError):
    """This service cannot decrypt (zero-knowledge mode): read with the organisation's offline key, countersign evidence get ID --purpose ... --key OFFLINE_KEY_FILE -o FILE"""  # noqa: E501  (one line: it is the message)


class SealedOnlyToRetired(EvidenceError):
    """Refused: the recording's data key is sealed to no service evidence key in use"""


def zero_knowledge_db(session: Session) -> bool:
    """Whether the keys table is a zero-knowledge one: no service-held evidence key, ever. Only
    `server init --zero-knowledge` makes such a table (and `keys rotate` refuses to add one there);
    a normal data directory keeps the rows of its service keys even once they are destroyed."""
    return session.scalar(select(EvidenceKey.key_id).where(EvidenceKey.custody == SERVICE).limit(1)) is None


def check_sealed_to(session: Session, key_ids: Iterable[str]) -> None:
    """Refuse (422, through the app's EvidenceError handler) a new recording none of whose sealed
    keys names a current or previous evidence key the recording can be read with: normally a
    *service-held* one (audio sealed only to retired or destroyed keys, or only to offline keys, is
    refused: the service must be able to read what it keeps; sealing to offline keys as well is
    welcome). In zero-knowledge mode there is no service key, so a current or previous offline key
    is what counts (and service-held sealing cannot happen)."""
    wanted = sorted(set(key_ids))
    query = select(EvidenceKey.key_id, EvidenceKey.state, EvidenceKey.custody).where(EvidenceKey.key_id.in_(wanted))
    found: dict[str, tuple[str, str]] = {kid: (state, custody) for kid, state, custody in session.execute(query)}
    readable_by = OFFLINE if zero_knowledge_db(session) else SERVICE
    if any(found.get(kid, ("", ""))[0] in ACCEPTED_STATES and found[kid][1] == readable_by for kid in wanted):
        return
    named = (
        ", ".join(
            f"{kid} ({found[kid][0]}{', offline' if found[kid][1] == OFFLINE else ''})"
            if kid in found
            else f"{kid} (unknown)"
            for kid in wanted
        )
        or "none"
    )
    raise SealedOnlyToRetired(
        f"sealed to {named}; the device must fetch GET /v1/keys and seal to the current evidence key"
    )


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
    secret = _open_protected(data, passphrase, path)
    if secret is None:
        journal = path.parent / PASSPHRASE_JOURNAL
        if journal.exists():
            raise KeyFileError(
                f"{path}: not under this COUNTERSIGN_KEY_PASSPHRASE, and a passphrase change was interrupted "
                f"({journal}): {describe_passphrases(path.parent, passphrase)}; "
                "rerun 'countersign keys passphrase' with the old and the new passphrase to finish it"
            )
        raise KeyFileError(f"{path}: wrong COUNTERSIGN_KEY_PASSPHRASE")
    return secret


def _open_protected(data: dict[str, Any], passphrase: bytes, path: Path) -> bytes | None:
    """The secret of an argon2id+secretbox key file, or None if `passphrase` is not its passphrase."""
    try:
        box_key = _KDF.kdf(
            nacl.secret.SecretBox.KEY_SIZE,
            passphrase,
            bytes.fromhex(data["salt"]),
            opslimit=int(data["opslimit"]),
            memlimit=int(data["memlimit"]),
        )
        blob = bytes.fromhex(data["secret"])
    except (KeyError, TypeError, ValueError) as exc:
        raise KeyFileError(f"{path}: damaged key file ({exc})") from exc
    try:
        return bytes(nacl.secret.SecretBox(box_key).decrypt(blob))
    except nacl.exceptions.CryptoError:
        return None


def key_file_paths(folder: Path) -> list[Path]:
    """Every private key file of a data directory: the evidence keys, then the signing key."""
    paths = sorted(folder.glob("evidence-*.key"))
    signing = folder / SIGNING_KEY_FILE
    return [*paths, signing] if signing.exists() else paths


def describe_passphrases(folder: Path, passphrase: bytes | None) -> str:
    """Which key files `passphrase` opens and which it does not (names only; for error messages)."""
    opens: list[str] = []
    not_: list[str] = []
    for path in key_file_paths(folder):
        data = _read(path)
        ok = data.get("protection") == "none" or (
            passphrase is not None and _open_protected(data, passphrase, path) is not None
        )
        (opens if ok else not_).append(path.name)
    return f"it opens {', '.join(opens) or 'none'}; it does not open {', '.join(not_) or 'none'}"


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def reprotect(
    folder: Path, old: bytes | None, new: bytes, say: Callable[[str], None] = lambda _line: None
) -> list[str]:
    """Re-encrypt every key file under `new`; returns the names of the files changed.

    Crash-safe: (1) each file's replacement is written beside it (.NAME.new, fsynced), opened by
    `old` or, for a file an interrupted run already replaced, by `new`; (2) the journal
    (passphrase-change.json) is written; (3) each replacement is renamed over its file (atomic)
    and the directory fsynced; (4) the journal is removed. At every point each file opens with
    exactly one of the two passphrases; while the journal exists a service refusing to start
    says which file opens with which, and rerunning this finishes the change.
    """
    paths = key_file_paths(folder)
    if not paths:
        raise KeyFileError(f"no key files under {folder}: run 'countersign server init' first")
    staged: list[tuple[Path, Path]] = []
    for path in paths:
        data = _read(path)
        if data.get("protection") == "none":
            secret = bytes.fromhex(data["secret"])
        else:
            opened = _open_protected(data, old, path) if old is not None else None
            if opened is None and _open_protected(data, new, path) is not None:
                say(f"{path.name}: already under the new passphrase")
                continue
            if opened is None:
                raise KeyFileError(
                    f"{path}: opens with neither the current COUNTERSIGN_KEY_PASSPHRASE nor the new passphrase"
                )
            secret = opened
        payload = {k: v for k, v in data.items() if k not in _PROTECTION_FIELDS}
        tmp = path.with_name(f".{path.name}.new")
        tmp.unlink(missing_ok=True)  # a replacement an interrupted run left half-written
        _write_private(tmp, {**payload, **_protect(secret, new)})
        staged.append((tmp, path))
    journal = folder / PASSPHRASE_JOURNAL
    if staged:
        journal.unlink(missing_ok=True)
        _write_private(journal, {"replacing": [path.name for _, path in staged]})
        _fsync_dir(folder)
    for tmp, path in staged:
        os.replace(tmp, path)
        say(f"{path.name}: re-encrypted under the new passphrase")
    _fsync_dir(folder)
    journal.unlink(missing_ok=True)
    _fsync_dir(folder)
    return [path.name for _, path in staged]


_PROTECTION_FIELDS = frozenset({"protection", "salt", "opslimit", "memlimit", "secret"})


def destroy_key_file(path: Path) -> bool:
    """Overwrite a private key file with random bytes, fsync, unlink, fsync the directory.

    Securely-ish: a copy-on-write or journaling filesystem, an SSD's remapping or a backup may
    still hold the old bytes; what matters is that nothing is sealed to the key any more.
    Returns False if the file was already gone.
    """
    try:
        fd = os.open(path, os.O_WRONLY)
    except FileNotFoundError:
        return False
    try:
        size = os.fstat(fd).st_size
        os.write(fd, nacl.utils.random(max(size, 1)))
        os.fsync(fd)
    finally:
        os.close(fd)
    path.unlink()
    _fsync_dir(path.parent)
    return True


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
    # Where load() found the keys, so a read needing a key id we do not hold (a rotation made by
    # `countersign keys rotate` while we run) can look again: see reload().
    data_dir: Path | None = None
    passphrase: bytes | None = field(default=None, repr=False)
    # Zero-knowledge mode: no evidence private key at all (ZERO_KNOWLEDGE_FILE); unseal() always refuses.
    zero_knowledge: bool = False
    _reload_lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @classmethod
    def create(
        cls, data_dir: Path, passphrase: bytes | None, zero_knowledge_key: str | None = None
    ) -> tuple[KeyCustodian, str]:
        """First start: make one evidence key pair and the service signing key. In zero-knowledge
        mode (zero_knowledge_key: the organisation's offline key id) only the signing key and the
        marker are written: no evidence private key ever exists here."""
        custodian = cls(zero_knowledge=zero_knowledge_key is not None)
        if zero_knowledge_key is None:
            kid = custodian.add_evidence_key(data_dir, passphrase)
        else:
            kid = zero_knowledge_key
            _write_private(
                data_dir / KEYS_DIR / ZERO_KNOWLEDGE_FILE,
                {"kind": "countersign-zero-knowledge", "version": 1, "offline_key_id": kid},
            )
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
        """A new evidence key pair: its file under DATA/keys (fsynced), and held here; returns its id."""
        if self.zero_knowledge or (data_dir / KEYS_DIR / ZERO_KNOWLEDGE_FILE).exists():
            raise KeyFileError(
                f"{data_dir} is in zero-knowledge mode: the service holds no evidence private key "
                "(register a new offline key with 'countersign keys add-offline' instead)"
            )
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
        zero_knowledge = (folder / ZERO_KNOWLEDGE_FILE).exists()
        custodian = cls(data_dir=data_dir, passphrase=passphrase, zero_knowledge=zero_knowledge)
        if custodian.zero_knowledge and any(folder.glob("evidence-*.key")):
            # Someone put a service-held key into a zero-knowledge data directory: refuse rather
            # than quietly become a service that can decrypt.
            raise KeyFileError(f"{folder} is zero-knowledge ({ZERO_KNOWLEDGE_FILE}) but holds evidence-*.key files")
        for path in sorted(folder.glob("evidence-*.key")):
            data = _read(path)
            custodian.evidence_keys[data["key_id"]] = nacl.public.PrivateKey(_unprotect(data, passphrase, path))
        signing_path = folder / SIGNING_KEY_FILE
        if signing_path.exists():
            custodian.signing_key = nacl.signing.SigningKey(_unprotect(_read(signing_path), passphrase, signing_path))
        if (not custodian.evidence_keys and not custodian.zero_knowledge) or custodian.signing_key is None:
            raise KeyFileError(f"no keys under {folder}: run 'countersign server init' first")
        return custodian

    def public_keys(self) -> dict[str, bytes]:
        return {kid: bytes(k.public_key) for kid, k in self.evidence_keys.items()}

    def reload(self) -> list[str]:
        """Look at the key directory again: load evidence key files we do not hold (a rotation by
        `countersign keys rotate` since we started) and forget keys whose file is gone (destroyed).
        Returns the ids newly loaded. Only key files new to us are decrypted (one Argon2id each)."""
        if self.data_dir is None:
            return []
        folder = self.data_dir / KEYS_DIR
        with self._reload_lock:
            found = {path.name[len("evidence-") : -len(".key")]: path for path in folder.glob("evidence-*.key")}
            keys = {kid: key for kid, key in self.evidence_keys.items() if kid in found}
            added = []
            for kid, path in sorted(found.items()):
                if kid not in keys:
                    data = _read(path)
                    keys[data["key_id"]] = nacl.public.PrivateKey(_unprotect(data, self.passphrase, path))
                    added.append(data["key_id"])
            self.evidence_keys = keys  # one assignment: readers see the old dict or the new one
        return added

    def unseal(self, sealed: dict[str, bytes]) -> bytes:
        """Open a recording's data key with any evidence key we hold (looking at the key
        directory again first if we hold none of them: a key rotated in while we run)."""
        if self.zero_knowledge:
            raise ZeroKnowledgeRefusal()
        opened = self._unseal_held(sealed)
        if opened is None and self.data_dir is not None:
            self.reload()
            opened = self._unseal_held(sealed)
        if opened is None:
            raise KeyUnavailableError("the service holds none of the keys this recording was sealed to")
        return opened

    def _unseal_held(self, sealed: dict[str, bytes]) -> bytes | None:
        keys = self.evidence_keys
        for kid, blob in sealed.items():
            private = keys.get(kid)
            if private is None:
                continue
            try:
                return bytes(nacl.public.SealedBox(private).decrypt(blob))
            except nacl.exceptions.CryptoError as exc:
                # We hold the right key, so the sealed blob itself was altered: evidence, not configuration.
                raise IntegrityError(f"sealed data key for evidence key {kid} does not open") from exc
        return None
