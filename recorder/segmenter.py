"""Cutting a stream of blocks into fixed-length segments.

A full segment is released only when the next block arrives, so that when the
stream stops we still know which segment is the last and can flag it final
(the final flag is signed and bound into the encryption). The delay this adds
is one block, not one segment.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from evidence.audio import PCM


def segments(blocks: Iterable[PCM], frames_per_segment: int, channels: int) -> Iterator[tuple[PCM, bool]]:
    """Yield (frames, final) pairs; exactly one final, possibly empty if no audio came at all."""
    pending: list[PCM] = []
    held = 0
    for block in blocks:
        pending.append(block)
        held += len(block)
        while held > frames_per_segment:
            buffer = np.concatenate(pending)
            yield buffer[:frames_per_segment], False
            rest = buffer[frames_per_segment:]
            pending, held = [rest], len(rest)
    tail = np.concatenate(pending) if pending else np.zeros((0, channels), dtype=np.int16)
    yield tail, True
