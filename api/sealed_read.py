"""A read that leaves as ciphertext: what an officer's client needs to verify and decrypt a recording
itself, with the organisation's offline key (zero-knowledge mode; README "Zero-knowledge mode").

The service checks everything it can check without plaintext before anything leaves: the device's
signatures on the header and on every segment statement, the chain links, the anchors in the sealed
audit log, the log's upload record, and every stored envelope against the ciphertext hash its device
signed. What it cannot check (the AEAD, the plaintext hashes, that the audio decodes) the client does,
after unsealing the data key (evidence.sealed). Only data keys sealed to *offline* keys are released:
a service-held key's sealed blob is of no use to a client and stays here.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.core.keys import OFFLINE
from api.core.models import Device, EvidenceKey, Recording, Segment
from api.core.storage import BlobStore
from api.retrieval import fetch_envelope, no_audio, verify_recording_chain
from evidence import sealed
from evidence.envelope import plaintext_length


class NotSealedOffline(Exception):
    """The recording's data key is sealed to no offline key: no client can open it (409)."""


@dataclass(frozen=True)
class SealedEvidence:
    document: dict[str, Any]  # evidence.sealed's document (JSON-ready)
    segments: int
    offline_keys: list[str]
    plaintext_sizes: list[int]  # each segment's FLAC length, known from its envelope's (a bundle lists them)


def gather_sealed(session: Session, store: BlobStore, recording: Recording, status: str) -> SealedEvidence:
    """The sealed document of a recording, after every check that needs no plaintext.

    IntegrityError if one fails; NoAudio (evidence.errors) for a verified recording without segments (as /audio);
    NotSealedOffline if no offline key could open it."""
    rows = verify_recording_chain(session, recording)  # signatures, links, anchors, the log's upload record
    if not rows:
        raise no_audio(recording, status)
    return sealed_document(session, store, recording, rows, status)


def sealed_document(
    session: Session, store: BlobStore, recording: Recording, rows: list[Segment], status: str
) -> SealedEvidence:
    """The sealed document of a recording whose chain `rows` verify_recording_chain returned:
    each envelope checked against its signed hash as it is read."""
    offline = set(session.scalars(select(EvidenceKey.key_id).where(EvidenceKey.custody == OFFLINE)))
    keys = {k.key_id: k.sealed for k in recording.sealed_keys if k.key_id in offline}
    if not keys:
        raise NotSealedOffline(
            f"recording {recording.id} is sealed to no offline key "
            f"(it is sealed to {', '.join(sorted(k.key_id for k in recording.sealed_keys)) or 'none'})"
        )
    device = session.get(Device, recording.device_id)
    assert device is not None and device.public_key is not None  # verify_recording_chain checked both
    segments = []
    sizes = []
    for row in rows:
        envelope = fetch_envelope(store, row)
        sizes.append(plaintext_length(len(envelope)))
        segments.append(
            {
                "index": row.index,
                "final": row.final,
                "ciphertext_sha256": row.ciphertext_sha256.hex(),
                "plaintext_sha256": row.plaintext_sha256.hex(),
                "prev_hash": row.prev_hash.hex(),
                "signature": row.signature.hex(),
                "envelope": base64.b64encode(envelope).decode(),
            }
        )
    document = {
        "kind": sealed.KIND,
        "version": sealed.VERSION,
        "recording_id": recording.id,
        "header": recording.header,
        "header_signature": recording.header_signature.hex(),
        "device_public_key": device.public_key.hex(),
        # What the service verified against its audit log (verify_recording_chain): the client holds
        # the segments to it, so a document cut short is refused rather than read as interrupted.
        "status": status,
        "segment_count": recording.segment_count,
        "sealed_keys": {kid: blob.hex() for kid, blob in sorted(keys.items())},
        "segments": segments,
    }
    return SealedEvidence(document, len(segments), sorted(keys), sizes)
