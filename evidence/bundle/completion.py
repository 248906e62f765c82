"""Finishing an evidence bundle on the officer's machine (zero-knowledge mode).

A service that cannot decrypt still builds and signs everything in a bundle but its audio
(POST /v1/evidence/{id}/export/sealed): SHA256SUMS lists each segment's FLAC by the plaintext
hash its device signed, and the answer carries the recording as stored (evidence.sealed's
document). Here the organisation's offline key opens that document, with every check
evidence.sealed makes, the decrypted FLACs go in under the names SHA256SUMS lists, and the
finished bundle is checked exactly as its recipient will check it (verify.py's checks 2-8)
before the caller zips and encrypts it. A bundle that would not verify is never written.

It has no joined `audio/recording.flac`: the service signs SHA256SUMS and could not list a file
it cannot make. The segments are the evidence; a player joins them.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

from evidence import sealed
from evidence.bundle import verify
from evidence.errors import FormatError, IntegrityError
from evidence.recovery import OfflineKey

KIND = "countersign-sealed-export"
VERSION = 1


def segment_flac(index: int) -> str:
    return f"segments/{index:06d}.flac"


def finish(document: Mapping[str, Any], key: OfflineKey) -> dict[str, bytes]:
    """The complete inner bundle (path -> bytes), verified; raises before returning anything partial.

    FormatError if `document` is not a sealed export; RecoveryKeyError if the recording is not sealed
    to `key`; IntegrityError if the audio or the bundle does not check out."""
    if document.get("kind") != KIND or document.get("version") != VERSION:
        raise FormatError(f"not a sealed export (kind {document.get('kind')!r})")
    raw = document.get("members")
    if not isinstance(raw, Mapping):
        raise FormatError("a sealed export without its members")
    try:
        members = {str(name): base64.b64decode(str(data), validate=True) for name, data in raw.items()}
    except (binascii.Error, ValueError) as exc:
        raise FormatError(f"a member is not base64 ({exc})") from None
    inner = document.get("sealed")
    if inner is not None:
        if not isinstance(inner, Mapping):
            raise FormatError("the sealed read document is not an object")
        opened = sealed.open_document(inner, key)  # signatures, chain, envelopes, AEAD, plaintext hashes
        for segment in opened.segments:
            name = segment_flac(segment.index)
            if name in members:
                raise IntegrityError(f"the service sent {name} itself, which it cannot have made")
            members[name] = segment.plaintext
    try:
        verify.verify_inner(members, None, verify.Findings())
    except verify.Check as exc:
        raise IntegrityError(f"the finished bundle does not verify: {exc.reason('en')}") from None
    return members
