"""recorder.segmenter: exact frame counts whatever the block sizes, one final, zero-length input."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recorder.segmenter import segments


def numbered(frames: int, channels: int = 1) -> np.ndarray:
    """Frames whose value is their position, so order and loss are both visible."""
    return (np.arange(frames * channels, dtype=np.int64) % 30000).astype(np.int16).reshape(frames, channels)


def blocks_of(pcm: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    cuts = np.cumsum(sizes)[:-1]
    return list(np.split(pcm, cuts))


def cut(blocks: list[np.ndarray], frames_per_segment: int, channels: int = 1) -> list[tuple[np.ndarray, bool]]:
    return list(segments(iter(blocks), frames_per_segment, channels))


@pytest.mark.parametrize(
    ("block", "per_segment", "total", "expected"),
    [
        (1600, 16000, 48000, [16000, 16000, 16000]),  # a whole number of segments: no empty final
        (1600, 16000, 40000, [16000, 16000, 8000]),  # the final one is the partial rest
        (1000, 1600, 4000, [1600, 1600, 800]),  # segment boundaries inside blocks
        (7, 10, 23, [10, 10, 3]),
        (5000, 1000, 3500, [1000, 1000, 1000, 500]),  # one block spans several segments
        (1, 3, 7, [3, 3, 1]),
        (10, 10, 10, [10]),  # exactly one segment: it is the final one
        (3, 10, 2, [2]),  # less than one segment
    ],
)
def test_exact_frame_counts(block: int, per_segment: int, total: int, expected: list[int]) -> None:
    pcm = numbered(total)
    sizes = [block] * (total // block) + ([total % block] if total % block else [])
    out = cut(blocks_of(pcm, sizes), per_segment)
    assert [len(frames) for frames, _ in out] == expected
    assert [final for _, final in out] == [False] * (len(expected) - 1) + [True]
    assert np.array_equal(np.concatenate([frames for frames, _ in out]), pcm)


def test_no_input_gives_one_empty_final_segment() -> None:
    out = cut([], 16000, channels=2)
    assert len(out) == 1
    frames, final = out[0]
    assert final and frames.shape == (0, 2) and frames.dtype == np.int16


def test_empty_blocks_only_give_one_empty_final_segment() -> None:
    empty = np.zeros((0, 1), dtype=np.int16)
    out = cut([empty, empty, empty], 100)
    assert [(len(frames), final) for frames, final in out] == [(0, True)]


def test_empty_blocks_between_audio_change_nothing() -> None:
    pcm = numbered(250)
    empty = np.zeros((0, 1), dtype=np.int16)
    out = cut([pcm[:100], empty, pcm[100:200], empty, empty, pcm[200:], empty], 100)
    assert [(len(frames), final) for frames, final in out] == [(100, False), (100, False), (50, True)]
    assert np.array_equal(np.concatenate([frames for frames, _ in out]), pcm)


def test_stereo_frames_stay_together() -> None:
    pcm = numbered(30, channels=2)
    out = cut(blocks_of(pcm, [7, 7, 7, 9]), 12, channels=2)
    assert [frames.shape for frames, _ in out] == [(12, 2), (12, 2), (6, 2)]
    assert np.array_equal(np.concatenate([frames for frames, _ in out]), pcm)


def test_a_full_segment_is_released_when_the_next_block_arrives() -> None:
    """The delay is one block, not the whole stream: a live recording uploads as it goes."""
    pulled = 0

    def source() -> Iterator[np.ndarray]:
        nonlocal pulled
        for block in blocks_of(numbered(1000), [100] * 10):
            pulled += 1
            yield block

    seen = []
    for frames, final in segments(source(), 300, 1):
        seen.append((len(frames), final, pulled))
    # Segment 0 ends with block 3 and is released once block 4 arrives, and so on.
    assert seen == [(300, False, 4), (300, False, 7), (300, False, 10), (100, True, 10)]


@settings(max_examples=200, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=0, max_value=700), max_size=30),
    per_segment=st.integers(min_value=1, max_value=500),
)
def test_any_block_sizes_keep_every_frame_in_order(sizes: list[int], per_segment: int) -> None:
    total = sum(sizes)
    pcm = numbered(total)
    blocks = blocks_of(pcm, sizes) if sizes else []
    out = cut(blocks, per_segment)
    lengths = [len(frames) for frames, _ in out]
    assert [final for _, final in out].count(True) == 1 and out[-1][1]
    assert all(n == per_segment for n in lengths[:-1])
    assert 0 < lengths[-1] <= per_segment or (total == 0 and lengths == [0])
    assert len(out) == max(1, -(-total // per_segment))
    assert np.array_equal(np.concatenate([frames for frames, _ in out]), pcm)
