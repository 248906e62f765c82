"""The sealed read document, opened on the officer's machine (zero-knowledge mode).

A zero-knowledge service cannot decrypt, so a read hands the officer's client what the service
holds, as it holds it (api.sealed_read): the device-signed header, the data key sealed to the
organisation's offline key, each segment's envelope with its signed statement, and the device's
public key. This module does what the service's read path does, here instead: the device's
signatures and the chain (evidence.chain), each envelope against its signed ciphertext hash, the
data key unsealed with the offline key (evidence.recovery.OfflineKey), every envelope's AEAD
(evidence.envelope) and every plaintext against its signed hash. Any failure raises before
anything is returned, so a caller never holds part of a recording as if it were whole.

What it trusts the service for: which device key made the recording (the service lists it; it
also anchors it in its signed audit log, which `countersign audit verify` checks independently).

PyNaCl only (the `client` extra); joining the segments into one file needs evidence.audio, which
is imported only when asked (join), so an officer's laptop without NumPy and libsndfile can still
verify and decrypt.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import nacl.signing

from evidence.chain import SegmentStatement, SignedSegment, verify_chain
from evidence.envelope import open_segment
from evidence.errors import FormatError, IntegrityError
from evidence.recovery import OfflineKey

KIND = "countersign-sealed-read"
VERSION = 1


@dataclass(frozen=True)
class OpenedSegment:
    index: int
    final: bool
    plaintext: bytes  # one segment's FLAC, exactly as the device encoded and hashed it


@dataclass(frozen=True)
class Opened:
    recording_id: uuid.UUID
    header: Mapping[str, Any]
    segments: list[OpenedSegment]
    final: bool


def _hex(value: object, what: str, length: int | None = None) -> bytes:
    try:
        raw = bytes.fromhex(str(value))
    except ValueError:
        raise FormatError(f"{what} is not hexadecimal") from None
    if length is not None and len(raw) != length:
        raise FormatError(f"{what} must be {length} bytes")
    return raw


def open_document(document: Mapping[str, Any], key: OfflineKey) -> Opened:
    """Verify and decrypt a sealed read document with the offline key; raises at the first problem.

    RecoveryKeyError (evidence.recovery) if the recording is not sealed to this key; IntegrityError
    if anything was altered; FormatError if the document is not one."""
    if document.get("kind") != KIND or document.get("version") != VERSION:
        raise FormatError(f"not a sealed read document (kind {document.get('kind')!r})")
    try:
        header = document["header"]
        rid = uuid.UUID(str(document["recording_id"]))
        raw_segments = list(document["segments"])
        sealed_keys = {str(k): _hex(v, f"sealed key {k}") for k, v in dict(document["sealed_keys"]).items()}
    except (KeyError, TypeError, ValueError) as exc:
        raise FormatError(f"malformed sealed read document ({exc})") from None
    if not isinstance(header, Mapping) or str(header.get("recording_id")) != str(rid):
        raise IntegrityError("the header is not this recording's")
    verify_key = nacl.signing.VerifyKey(_hex(document.get("device_public_key"), "device_public_key", 32))
    signed: list[SignedSegment] = []
    envelopes: list[bytes] = []
    for n, seg in enumerate(raw_segments):
        if not isinstance(seg, Mapping):
            raise FormatError(f"segment entry {n} is not an object")
        try:
            envelope = base64.b64decode(str(seg["envelope"]), validate=True)
            statement = SegmentStatement(
                rid,
                int(seg["index"]),
                bool(seg["final"]),
                _hex(seg["ciphertext_sha256"], "ciphertext_sha256", 32),
                _hex(seg["plaintext_sha256"], "plaintext_sha256", 32),
                _hex(seg["prev_hash"], "prev_hash", 32),
            )
        except (KeyError, TypeError, ValueError, binascii.Error) as exc:
            raise FormatError(f"segment entry {n} is malformed ({exc})") from None
        signed.append(SignedSegment(statement, _hex(seg.get("signature"), f"segment {n} signature", 64)))
        envelopes.append(envelope)
    # The device's signatures and links first (no key needed), as the service's read does.
    report = verify_chain(verify_key, header, _hex(document.get("header_signature"), "header_signature"), signed)
    if document.get("segment_count") != report.segments:
        raise IntegrityError(f"the service recorded {document.get('segment_count')} segments, {report.segments} came")
    if document.get("status") == "complete" and not report.final:
        raise IntegrityError("the recording is complete but its final segment is missing")
    for segment, envelope in zip(signed, envelopes, strict=True):
        if hashlib.sha256(envelope).digest() != segment.statement.ciphertext_sha256:
            raise IntegrityError(f"segment {segment.statement.index} is not the envelope the device signed")
    data_key = key.unseal(sealed_keys)
    opened = []
    for segment, envelope in zip(signed, envelopes, strict=True):
        st = segment.statement
        plaintext = open_segment(data_key, rid, st.index, st.final, envelope)
        if hashlib.sha256(plaintext).digest() != st.plaintext_sha256:
            raise IntegrityError(f"segment {st.index} decrypts to audio the device did not sign")
        opened.append(OpenedSegment(st.index, st.final, plaintext))
    return Opened(rid, header, opened, report.final)


def join(opened: Opened, fmt: str) -> tuple[bytes, int]:
    """The segments as one FLAC or WAV file: (encoded bytes, frames). Every segment must have the
    header's sample rate. Needs NumPy and libsndfile (the `recorder` or `server` extra, or
    `pip install numpy soundfile`)."""
    import numpy as np

    from evidence import audio  # here, not at the top: the client extra has no NumPy (tests/test_layers.py)

    rate = int(opened.header["sample_rate"])
    parts = []
    for segment in opened.segments:
        pcm, seg_rate = audio.decode(segment.plaintext)
        if seg_rate != rate:
            raise IntegrityError(f"segment {segment.index} has sample rate {seg_rate}, header says {rate}")
        parts.append(pcm)
    samples = np.concatenate(parts)
    return audio.encode(samples, rate, fmt), len(samples)
