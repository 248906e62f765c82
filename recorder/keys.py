"""Before each recording the device refreshes its evidence keys from GET /v1/keys.

A rotation reaches devices this way, without re-enrolment: the server lists every key it has
not destroyed with a seal_to flag, and the home keeps that list (recorder.home). Fail closed:
if the server cannot be asked, the device seals to the keys it holds only while they are still
marked seal_to there; if none is, it refuses to record (NoEvidenceKey, exit 4) and names them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import nacl.public

from recorder.client import DeviceClient
from recorder.errors import NoEvidenceKey, ServerRefused, ServerUnreachable
from recorder.home import DeviceHome, unusable

REFRESH_TIMEOUT = 5.0  # seconds: a server that does not answer must not hold up the counter for long


def refresh_evidence_keys(
    home: DeviceHome, client: DeviceClient, say: Callable[[str], None]
) -> dict[str, nacl.public.PublicKey]:
    """The keys to seal the next recording to: the server's list if it answers, else the home's."""
    try:
        listed = client.evidence_key_entries(timeout=REFRESH_TIMEOUT)
    except (ServerUnreachable, ServerRefused) as exc:
        keys = _held(home, f"the server could not be asked for its current evidence keys ({exc.detail})")
        say(f"warning: cannot refresh the evidence keys ({exc.detail}); sealing to the {len(keys)} this device holds")
        return keys
    entries: dict[str, Any] = {}
    for entry in listed:
        kid = str(entry.get("key_id", ""))
        if kid and isinstance(entry.get("public_key"), str):
            entries[kid] = {k: v for k, v in entry.items() if k != "key_id"}
    if entries != home.key_entries_or_none():
        home.save_keys(entries)
    if not any(e.get("seal_to", True) for e in entries.values()):
        detail = unusable({k: {**v, "seal_to": bool(v.get("seal_to", True))} for k, v in entries.items()})
        raise NoEvidenceKey(f"the server lists no evidence key to seal to ({detail or 'it lists none'})")
    return home.evidence_keys()


def _held(home: DeviceHome, why: str) -> dict[str, nacl.public.PublicKey]:
    try:
        return home.evidence_keys()
    except NoEvidenceKey as exc:
        raise NoEvidenceKey(f"{exc.detail}; {why}") from exc
