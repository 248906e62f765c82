"""Encrypted segment envelope.

Layout (all integers big-endian)::

    version (1 byte, = FORMAT_VERSION) | nonce (24 bytes) | XChaCha20-Poly1305 ciphertext+tag

The associated data binds the envelope to its place in a recording (recording
id, segment index, final flag), as borg binds an object's id: a blob cannot be
moved onto another recording or index, nor its final flag flipped, without the
AEAD failing. The nonce is random (192 bits, so random nonces are safe), and a
fresh data key is drawn for every recording.
"""

from __future__ import annotations

import struct
import uuid

import nacl.bindings as sodium
import nacl.exceptions
import nacl.utils

from evidence import FORMAT_VERSION
from evidence.errors import FormatError, IntegrityError

KEY_BYTES = sodium.crypto_aead_xchacha20poly1305_ietf_KEYBYTES
NONCE_BYTES = sodium.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
TAG_BYTES = sodium.crypto_aead_xchacha20poly1305_ietf_ABYTES
HEADER_BYTES = 1 + NONCE_BYTES
_AAD_DOMAIN = b"countersign/segment-aead/v1\x00"


def new_data_key() -> bytes:
    """A fresh random per-recording data key."""
    return nacl.utils.random(KEY_BYTES)


def associated_data(recording_id: uuid.UUID, index: int, final: bool) -> bytes:
    return _AAD_DOMAIN + struct.pack(">B16sIB", FORMAT_VERSION, recording_id.bytes, index, final)


def seal_segment(key: bytes, recording_id: uuid.UUID, index: int, final: bool, plaintext: bytes) -> bytes:
    """Encrypt one segment's encoded audio into an envelope."""
    nonce = nacl.utils.random(NONCE_BYTES)
    ciphertext = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(
        plaintext, associated_data(recording_id, index, final), nonce, key
    )
    return bytes([FORMAT_VERSION]) + nonce + ciphertext


def open_segment(key: bytes, recording_id: uuid.UUID, index: int, final: bool, envelope: bytes) -> bytes:
    """Decrypt an envelope; raise IntegrityError if it was altered or belongs elsewhere."""
    check_envelope(envelope)
    nonce = envelope[1:HEADER_BYTES]
    try:
        return bytes(
            sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(
                envelope[HEADER_BYTES:], associated_data(recording_id, index, final), nonce, key
            )
        )
    except nacl.exceptions.CryptoError as exc:
        raise IntegrityError(f"segment {index} does not decrypt") from exc


def plaintext_length(envelope_length: int) -> int:
    """The length of what an envelope of this many bytes decrypts to (no key needed: the AEAD adds a
    fixed header and tag), so a service that cannot decrypt can still state a segment's size."""
    return envelope_length - HEADER_BYTES - TAG_BYTES


def check_envelope(envelope: bytes) -> None:
    """Reject what cannot be an envelope of this version (cheap, no key needed)."""
    if len(envelope) < HEADER_BYTES + TAG_BYTES:
        raise FormatError("envelope too short")
    if envelope[0] != FORMAT_VERSION:
        raise FormatError(f"unknown envelope version {envelope[0]}")
