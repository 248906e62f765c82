"""The plaintext inside an envelope: one FLAC stream per segment, encoded in memory.

Encoding and decoding go through BytesIO only, so plaintext audio never
touches a disk on either side.
"""

from __future__ import annotations

import io

import numpy as np
import numpy.typing as npt
import soundfile as sf

from evidence.errors import FormatError

PCM = npt.NDArray[np.int16]
OUTPUT_FORMATS = {"flac": ("FLAC", "PCM_16", "audio/flac"), "wav": ("WAV", "PCM_16", "audio/wav")}


def encode(pcm: PCM, sample_rate: int, fmt: str = "flac") -> bytes:
    """Encode int16 frames (shape (n,) or (n, channels)) to FLAC or WAV bytes."""
    container, subtype, _ = OUTPUT_FORMATS[fmt]
    buffer = io.BytesIO()
    sf.write(buffer, pcm, sample_rate, format=container, subtype=subtype)
    return buffer.getvalue()


def decode(data: bytes) -> tuple[PCM, int]:
    """Decode FLAC/WAV bytes to int16 frames, always 2-D (frames, channels)."""
    try:
        pcm, rate = sf.read(io.BytesIO(data), dtype="int16", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise FormatError(f"not decodable audio: {exc}") from exc
    return pcm, int(rate)


def media_type(fmt: str) -> str:
    return OUTPUT_FORMATS[fmt][2]
