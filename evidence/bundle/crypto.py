"""The evidence bundle's transport encryption (docs/evidence-bundle.md, "Two layers").

The inner bundle holds plaintext audio, so it travels inside an outer zip as
libsodium's secretstream (XChaCha20-Poly1305, 1 MiB chunks, the last one tagged
FINAL so a cut-off file is detected), under a random key sealed to the
recipient's X25519 public key. A passphrase is turned into such a key pair with
Argon2id on the officer's machine, so the service only ever sees a public key.

verify.py, which ships inside every bundle, carries its own copy of the opening
half of this module (it must run with nothing but PyNaCl);
tests/evidence/test_bundle_crypto.py checks that the two agree.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterable, Iterator
from importlib import resources
from typing import IO, Any

import nacl.bindings as sodium
import nacl.exceptions
import nacl.pwhash
import nacl.utils
from nacl.public import PrivateKey, PublicKey, SealedBox

from evidence.errors import FormatError, IntegrityError

ENCRYPTION_FORMAT = "countersign-bundle-encryption/v1"
CIPHER = "xchacha20poly1305-secretstream"
CHUNK_SIZE = 1 << 20
ENCRYPTION_FILE = "encryption.json"
PAYLOAD_FILE = "bundle.enc"
KDF_ALG = "argon2id13"
# MODERATE: 256 MiB and about a second on the 2-core test machine: a passphrase that travels
# beside the file (by phone, on paper) should cost an attacker that much per guess.
OPSLIMIT = nacl.pwhash.argon2id.OPSLIMIT_MODERATE
MEMLIMIT = nacl.pwhash.argon2id.MEMLIMIT_MODERATE
_KEY_BYTES = sodium.crypto_secretstream_xchacha20poly1305_KEYBYTES
_HEADER_BYTES = sodium.crypto_secretstream_xchacha20poly1305_HEADERBYTES
_OVERHEAD = sodium.crypto_secretstream_xchacha20poly1305_ABYTES
_FINAL = sodium.crypto_secretstream_xchacha20poly1305_TAG_FINAL
_MESSAGE = sodium.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE
# Members of the outer zip besides the payload: how to open it, and the tool that does.
OUTER_TEXTS = ("README.txt", "README.ja.txt")
VERIFIER = "verify.py"
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)


def new_kdf() -> dict[str, Any]:
    """Fresh Argon2id parameters for a passphrase-protected bundle."""
    salt = nacl.utils.random(nacl.pwhash.argon2id.SALTBYTES)
    return {"alg": KDF_ALG, "salt": salt.hex(), "opslimit": OPSLIMIT, "memlimit": MEMLIMIT}


def passphrase_key(passphrase: bytes, kdf: dict[str, Any]) -> PrivateKey:
    """The X25519 key pair a passphrase stands for (the same on the officer's and the recipient's side)."""
    try:
        if kdf.get("alg") != KDF_ALG:
            raise FormatError(f"unknown key derivation {kdf.get('alg')!r}")
        seed = nacl.pwhash.argon2id.kdf(
            32,
            passphrase,
            bytes.fromhex(kdf["salt"]),
            opslimit=int(kdf["opslimit"]),
            memlimit=int(kdf["memlimit"]),
        )
    except (KeyError, TypeError, ValueError, nacl.exceptions.CryptoError) as exc:
        raise FormatError(f"malformed key derivation parameters: {exc}") from exc
    return PrivateKey.from_seed(seed)


def _fixed(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_FIXED_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    return info


def shipped_text(name: str) -> bytes:
    """A file that ships inside every bundle (the verifier, the READMEs), from this package."""
    return (resources.files("evidence.bundle") / name).read_bytes()


def _encrypted_chunks(key: bytes, plaintext: Iterable[bytes]) -> Iterator[bytes]:
    state = sodium.crypto_secretstream_xchacha20poly1305_state()
    yield sodium.crypto_secretstream_xchacha20poly1305_init_push(state, key)
    pending = bytearray()
    for piece in plaintext:
        pending += piece
        full = (len(pending) - 1) // CHUNK_SIZE  # keep at least one byte back: the last chunk is pushed as FINAL
        for i in range(full):
            chunk = bytes(pending[i * CHUNK_SIZE : (i + 1) * CHUNK_SIZE])
            yield sodium.crypto_secretstream_xchacha20poly1305_push(state, chunk, None, _MESSAGE)
        del pending[: full * CHUNK_SIZE]
    yield sodium.crypto_secretstream_xchacha20poly1305_push(state, bytes(pending), None, _FINAL)


def write_outer(
    out: IO[bytes], plaintext: Iterable[bytes], recipient: bytes, kdf: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Write the outer zip to `out`: the inner bundle encrypted to `recipient`; return encryption.json."""
    try:
        box = SealedBox(PublicKey(recipient))
    except (TypeError, ValueError) as exc:
        raise FormatError("the recipient key is not an X25519 public key (32 bytes)") from exc
    key = nacl.utils.random(_KEY_BYTES)
    record = {
        "format": ENCRYPTION_FORMAT,
        "cipher": CIPHER,
        "chunk_size": CHUNK_SIZE,
        "recipient_public_key": recipient.hex(),
        "sealed_key": bytes(box.encrypt(key)).hex(),
        "kdf": kdf,
    }
    with zipfile.ZipFile(out, "w") as outer:
        for name in (*OUTER_TEXTS, VERIFIER):
            source = f"outer-{name}" if name in OUTER_TEXTS else name
            outer.writestr(_fixed(name), shipped_text(source))
        outer.writestr(_fixed(ENCRYPTION_FILE), json.dumps(record, indent=2, sort_keys=True) + "\n")
        payload = _fixed(PAYLOAD_FILE)
        payload.compress_type = zipfile.ZIP_STORED  # ciphertext does not compress
        with outer.open(payload, "w", force_zip64=True) as sink:
            for chunk in _encrypted_chunks(key, plaintext):
                sink.write(chunk)
    return record


def read_encryption(outer: zipfile.ZipFile) -> dict[str, Any]:
    try:
        record = json.loads(outer.read(ENCRYPTION_FILE))
    except (KeyError, ValueError) as exc:
        raise FormatError(f"this is not an encrypted bundle ({ENCRYPTION_FILE} missing or not JSON)") from exc
    if not isinstance(record, dict) or record.get("format") != ENCRYPTION_FORMAT or record.get("cipher") != CIPHER:
        raise FormatError(f"unknown bundle encryption {record.get('format') if isinstance(record, dict) else None!r}")
    return record


def open_outer(outer: zipfile.ZipFile, private_key: PrivateKey, out: IO[bytes]) -> None:
    """Decrypt the inner bundle into `out`; IntegrityError if it was altered or cut short."""
    record = read_encryption(outer)
    try:
        key = SealedBox(private_key).decrypt(bytes.fromhex(record["sealed_key"]))
        chunk_size = int(record["chunk_size"])
    except (KeyError, TypeError, ValueError) as exc:
        raise FormatError(f"malformed {ENCRYPTION_FILE}: {exc}") from exc
    except nacl.exceptions.CryptoError as exc:
        raise IntegrityError("this bundle was not encrypted to this key (or passphrase)") from exc
    state = sodium.crypto_secretstream_xchacha20poly1305_state()
    with outer.open(PAYLOAD_FILE) as payload:
        try:
            sodium.crypto_secretstream_xchacha20poly1305_init_pull(state, payload.read(_HEADER_BYTES), key)
            while True:
                chunk = payload.read(chunk_size + _OVERHEAD)
                if not chunk:
                    raise IntegrityError("the encrypted bundle is cut short (no final chunk)")
                message, tag = sodium.crypto_secretstream_xchacha20poly1305_pull(state, chunk, None)
                out.write(message)
                if tag == _FINAL:
                    break
        except nacl.exceptions.CryptoError as exc:
            raise IntegrityError("the encrypted bundle was altered") from exc
        if payload.read(1):
            raise IntegrityError("the encrypted bundle has data after its final chunk")
