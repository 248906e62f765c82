"""Regenerate the golden evidence bundle: `python -m tests.evidence.vectors.make_golden` (from the repo root).

Writes tests/evidence/vectors/golden-bundle.zip: three short segments of synthetic audio, keys from
fixed seeds, fixed times (tests/support/bundle_forge.py), laid out by the real builder
(api.bundle.assemble). Regenerate only for a deliberate format change, and say so in the commit:
test_bundle_golden.py fails on any change to the bytes of a format member, which is the point.
The FLAC files are inputs, kept from the first generation (an encoder upgrade must not change them).
"""

from __future__ import annotations

import sys
from pathlib import Path

from tests.support import bundle_forge as forge

GOLDEN = Path(__file__).with_name("golden-bundle.zip")
SEGMENTS = 3


def golden_facts(flacs: list[bytes] | None = None) -> forge.Facts:
    return forge.Facts(segments=SEGMENTS, final=True, flacs=list(flacs or []))


def existing_flacs() -> list[bytes] | None:
    if not GOLDEN.exists():
        return None
    members = forge.unzipped(GOLDEN.read_bytes())
    return [members[f"segments/{i:06d}.flac"] for i in range(SEGMENTS)]


def main() -> int:
    members = forge.bundle(golden_facts(existing_flacs()))
    GOLDEN.write_bytes(forge.zipped(members))
    print(f"wrote {GOLDEN} ({len(members)} members)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
