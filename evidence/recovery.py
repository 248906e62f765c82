"""The offline recovery key: its files, its paper backup, and the signed recovery record.

An organisation generates the key on an offline machine (`countersign recovery generate`):
an X25519 key pair every new recording's data key is sealed to (as well as to the service's
key), and an Ed25519 key pair that signs recovery records. The private halves never reach the
service; they live in a passphrase-protected file (Argon2id + SecretBox, like the service's key
files) and on paper. The public halves travel to the service in a small JSON file
(`countersign keys add-offline`).

With the private key, a database backup and the object store, `countersign keys recover` reads
a recording without the service and writes a *recovery record* signed with the recovery key;
`countersign keys import-recovery` later verifies it and appends it to the audit log.

Nothing here needs more than PyNaCl: it runs where only the `client` extra is installed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nacl.exceptions
import nacl.hash
import nacl.public
import nacl.pwhash
import nacl.secret
import nacl.signing
import nacl.utils
from nacl.encoding import RawEncoder

from evidence.chain import canonical_json
from evidence.errors import CountersignError, ExitCode, IntegrityError

PRIVATE_KIND = "countersign-offline-recovery-key"
PUBLIC_KIND = "countersign-offline-recovery-public"
RECORD_KIND = "countersign-recovery-record"
_RECORD_DOMAIN = b"countersign/recovery-record/v1\x00"
_PAPER_KEY = b"countersign-paper-v1"
_KDF = nacl.pwhash.argon2id
OPSLIMIT = _KDF.OPSLIMIT_MODERATE
MEMLIMIT = _KDF.MEMLIMIT_MODERATE
PAPER_BYTES_PER_LINE = 16
MIN_PASSPHRASE = 12


class RecoveryKeyError(CountersignError):
    """The offline recovery key cannot be used"""

    exit_code = ExitCode.USAGE


class PaperBackupError(RecoveryKeyError):
    """The paper backup cannot be read back"""


class RecordRefused(CountersignError):
    """The recovery record is refused"""

    exit_code = ExitCode.FAILED


def key_id_for(public_key: bytes) -> str:
    """The id of a public key: as the service names its evidence keys (api.core.keys.key_id_for)."""
    return hashlib.sha256(public_key).hexdigest()[:16]


@dataclass(frozen=True)
class OfflineKey:
    """Both private halves, unlocked."""

    sealing: nacl.public.PrivateKey
    signing: nacl.signing.SigningKey

    @classmethod
    def generate(cls) -> OfflineKey:
        return cls(nacl.public.PrivateKey.generate(), nacl.signing.SigningKey.generate())

    @classmethod
    def from_secret(cls, secret: bytes) -> OfflineKey:
        if len(secret) != 64:
            raise RecoveryKeyError(f"a recovery key secret is 64 bytes, not {len(secret)}")
        return cls(nacl.public.PrivateKey(secret[:32]), nacl.signing.SigningKey(secret[32:]))

    @property
    def secret(self) -> bytes:
        return bytes(self.sealing) + bytes(self.signing)

    @property
    def public_key(self) -> bytes:
        return bytes(self.sealing.public_key)

    @property
    def verify_key(self) -> bytes:
        return bytes(self.signing.verify_key)

    @property
    def key_id(self) -> str:
        return key_id_for(self.public_key)

    @property
    def recovery_key_id(self) -> str:
        return key_id_for(self.verify_key)

    def public_document(self) -> dict[str, Any]:
        """What is carried to the service: public halves only."""
        return {
            "kind": PUBLIC_KIND,
            "version": 1,
            "key_id": self.key_id,
            "public_key": self.public_key.hex(),
            "recovery_key_id": self.recovery_key_id,
            "recovery_verify_key": self.verify_key.hex(),
        }

    def unseal(self, sealed: Mapping[str, bytes]) -> bytes:
        """The data key sealed to this key; RecoveryKeyError naming the keys if it is not among them."""
        blob = sealed.get(self.key_id)
        if blob is None:
            named = ", ".join(sorted(sealed)) or "none"
            raise RecoveryKeyError(
                f"the recording is not sealed to offline key {self.key_id} (it is sealed to {named}): "
                "wrong offline key, or recorded before the key was registered"
            )
        try:
            return bytes(nacl.public.SealedBox(self.sealing).decrypt(blob))
        except nacl.exceptions.CryptoError as exc:
            raise IntegrityError(f"the data key sealed to offline key {self.key_id} does not open") from exc


# --- the private key file ------------------------------------------------------------------------------


def check_passphrase(passphrase: bytes) -> None:
    if len(passphrase) < MIN_PASSPHRASE:
        raise RecoveryKeyError(f"the recovery key passphrase must be at least {MIN_PASSPHRASE} characters")


def read_passphrase_file(path: Path) -> bytes:
    """The first line of a passphrase file."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise RecoveryKeyError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    return (lines[0] if lines else "").encode()


def write_private_file(path: Path, key: OfflineKey, passphrase: bytes) -> None:
    """The private halves under Argon2id + SecretBox, mode 0600; refuses to overwrite a file."""
    check_passphrase(passphrase)
    salt = nacl.utils.random(_KDF.SALTBYTES)
    box_key = _KDF.kdf(nacl.secret.SecretBox.KEY_SIZE, passphrase, salt, opslimit=OPSLIMIT, memlimit=MEMLIMIT)
    payload = {
        "kind": PRIVATE_KIND,
        "version": 1,
        **{k: v for k, v in key.public_document().items() if k not in ("kind", "version")},
        "protection": "argon2id+secretbox",
        "salt": salt.hex(),
        "opslimit": OPSLIMIT,
        "memlimit": MEMLIMIT,
        "secret": bytes(nacl.secret.SecretBox(box_key).encrypt(key.secret)).hex(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise RecoveryKeyError(f"{path} already exists; not overwriting a recovery key") from None
    with os.fdopen(fd, "w") as f:
        json.dump(payload, f, indent=2)
        f.flush()
        os.fsync(f.fileno())


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RecoveryKeyError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if not isinstance(data, dict):
        raise RecoveryKeyError(f"{path} is not a JSON object")
    return data


def read_private_file(path: Path, passphrase: bytes) -> OfflineKey:
    data = _read_json(path)
    if data.get("kind") != PRIVATE_KIND:
        raise RecoveryKeyError(f"{path} is not an offline recovery key file (kind {data.get('kind')!r})")
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
        raise RecoveryKeyError(f"{path}: damaged recovery key file ({exc})") from None
    try:
        secret = bytes(nacl.secret.SecretBox(box_key).decrypt(blob))
    except nacl.exceptions.CryptoError:
        raise RecoveryKeyError(f"{path}: wrong recovery key passphrase") from None
    key = OfflineKey.from_secret(secret)
    if key.key_id != data.get("key_id"):
        raise RecoveryKeyError(f"{path}: the key inside is {key.key_id}, the file says {data.get('key_id')}")
    return key


def read_public_document(path: Path) -> dict[str, Any]:
    """The public JSON written by `recovery generate`, checked for consistency."""
    data = _read_json(path)
    if data.get("kind") != PUBLIC_KIND:
        raise RecoveryKeyError(f"{path} is not an offline recovery public key file (kind {data.get('kind')!r})")
    try:
        public = bytes.fromhex(str(data["public_key"]))
        verify = bytes.fromhex(str(data["recovery_verify_key"]))
    except (KeyError, ValueError) as exc:
        raise RecoveryKeyError(f"{path}: missing or malformed key ({exc})") from None
    if len(public) != 32 or len(verify) != 32:
        raise RecoveryKeyError(f"{path}: keys must be 32 bytes each")
    if data.get("key_id") != key_id_for(public) or data.get("recovery_key_id") != key_id_for(verify):
        raise RecoveryKeyError(f"{path}: the key ids do not match the keys (altered or mistyped?)")
    return {**data, "public_key": public, "recovery_verify_key": verify}


# --- the paper backup ----------------------------------------------------------------------------------


def _line_check(number: int, chunk: bytes) -> str:
    """4 hex characters: keyed BLAKE2b over the line number and its bytes (catches a mistyped group or a
    line typed in the wrong place)."""
    return nacl.hash.blake2b(bytes([number]) + chunk, key=_PAPER_KEY, digest_size=2, encoder=RawEncoder).hex()


def paper_backup(key: OfflineKey) -> str:
    """The private halves as numbered lines of 4-hex-digit groups, each line with its own checksum."""
    secret = key.secret
    lines = [
        "COUNTERSIGN OFFLINE RECOVERY KEY: PAPER BACKUP (keep in a safe; anyone holding it can read evidence)",
        f"evidence key id: {key.key_id}",
        f"recovery key id: {key.recovery_key_id}",
    ]
    for n, start in enumerate(range(0, len(secret), PAPER_BYTES_PER_LINE), start=1):
        chunk = secret[start : start + PAPER_BYTES_PER_LINE]
        hexed = chunk.hex()
        groups = " ".join(hexed[i : i + 4] for i in range(0, len(hexed), 4))
        lines.append(f"{n:02d}: {groups}  check {_line_check(n, chunk)}")
    lines.append("restore with: countersign recovery restore BACKUP.txt --out DIR")
    return "\n".join(lines) + "\n"


_LINE = re.compile(r"^\s*(\d{1,2})\s*:\s*([0-9a-fA-F\s]+?)\s+check\s+([0-9a-fA-F]{4})\s*$")
_ID = re.compile(r"^\s*(evidence|recovery) key id\s*:\s*([0-9a-fA-F]{16})\s*$")


def read_paper_backup(text: str) -> OfflineKey:
    """The key typed back from a paper backup; PaperBackupError naming the line that does not check."""
    chunks: dict[int, bytes] = {}
    ids: dict[str, str] = {}
    for raw in text.splitlines():
        id_match = _ID.match(raw)
        if id_match:
            ids[id_match.group(1)] = id_match.group(2).lower()
            continue
        match = _LINE.match(raw)
        if not match:
            continue
        number = int(match.group(1))
        digits = re.sub(r"\s+", "", match.group(2))
        try:
            chunk = bytes.fromhex(digits)
        except ValueError:
            raise PaperBackupError(f"line {number:02d}: not hexadecimal") from None
        if len(chunk) != PAPER_BYTES_PER_LINE or _line_check(number, chunk) != match.group(3).lower():
            raise PaperBackupError(f"line {number:02d} does not match its checksum: a group is mistyped")
        chunks[number] = chunk
    expected = 64 // PAPER_BYTES_PER_LINE
    missing = [f"{n:02d}" for n in range(1, expected + 1) if n not in chunks]
    if missing:
        raise PaperBackupError(f"lines {', '.join(missing)} are missing")
    key = OfflineKey.from_secret(b"".join(chunks[n] for n in range(1, expected + 1)))
    if ids.get("evidence", key.key_id) != key.key_id or ids.get("recovery", key.recovery_key_id) != key.recovery_key_id:
        raise PaperBackupError("the key ids on the backup do not match its key lines")
    return key


# --- the recovery record -------------------------------------------------------------------------------


def record_message(body: Mapping[str, Any]) -> bytes:
    return _RECORD_DOMAIN + canonical_json(body)


def record_sha256(body: Mapping[str, Any]) -> str:
    """The record's identity (what makes an import idempotent)."""
    return hashlib.sha256(record_message(body)).hexdigest()


def sign_record(key: OfflineKey, body: Mapping[str, Any]) -> dict[str, Any]:
    """The record file: its body, the Ed25519 signature over it, and the key that made it."""
    body = {"kind": RECORD_KIND, "version": 1, **body, "recovery_key_id": key.recovery_key_id}
    signature = key.signing.sign(record_message(body)).signature
    return {"record": body, "signature": bytes(signature).hex(), "recovery_verify_key": key.verify_key.hex()}


def verify_record(document: Mapping[str, Any], verify_key: bytes) -> dict[str, Any]:
    """The record's body if `verify_key` signed it; RecordRefused otherwise."""
    body = document.get("record")
    if not isinstance(body, dict) or body.get("kind") != RECORD_KIND:
        raise RecordRefused("not a Countersign recovery record")
    try:
        signature = bytes.fromhex(str(document.get("signature", "")))
        nacl.signing.VerifyKey(verify_key).verify(record_message(body), signature)
    except (ValueError, nacl.exceptions.BadSignatureError):
        raise RecordRefused(
            f"its signature does not verify with the registered recovery key {key_id_for(verify_key)} "
            "(signed by another key, or altered)"
        ) from None
    return body


def write_atomically(path: Path, data: bytes) -> None:
    """Temp file beside `path`, fsynced, renamed over it: a crash leaves no half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
