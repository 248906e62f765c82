"""The plaintext inside an envelope: one FLAC stream per segment, encoded in memory.

Encoding and decoding go through memory only (BytesIO, or FlacStream's in-memory
sink when a read streams a recording out), so plaintext audio never touches a
disk on either side.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass

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


# --------------------------------------------------------------------------- streaming output
#
# A read streams one file built from many segments, so the whole recording is never in memory:
# WAV is a 44-byte header then the PCM, FLAC is encoded as the samples arrive. Both need the
# total frame count up front (WAV's chunk sizes; FLAC's STREAMINFO, without which libsndfile,
# and so soundfile, cannot read the file back in one call), and the caller knows it before the
# first byte from each segment's own STREAMINFO (stream_info below).

FLAC_MAGIC = b"fLaC"
STREAMINFO_END = 42  # "fLaC", the 4-byte metadata block header, the 34-byte STREAMINFO
_TOTAL_SAMPLES = slice(18, 26)  # the 64 bits holding rate, channels, bits per sample and 36-bit total samples
_TOTAL_MASK = (1 << 36) - 1
WAV_HEADER_BYTES = 44
_WAV_MAX_DATA = 0xFFFFFFFF - (WAV_HEADER_BYTES - 8)  # RIFF sizes are 32 bits


@dataclass(frozen=True)
class StreamInfo:
    """What a FLAC stream's STREAMINFO block says about its audio."""

    sample_rate: int
    channels: int
    bits_per_sample: int
    frames: int  # 0 = unknown (FLAC allows it)


def stream_info(head: bytes) -> StreamInfo | None:
    """Parse the STREAMINFO at the start of a FLAC stream (its first 42 bytes); None if it is not one."""
    if len(head) < STREAMINFO_END or head[:4] != FLAC_MAGIC or head[4] & 0x7F != 0 or head[5:8] != b"\x00\x00\x22":
        return None  # STREAMINFO must be the first metadata block, and is always 34 bytes long
    packed = int.from_bytes(head[_TOTAL_SAMPLES], "big")
    return StreamInfo(
        sample_rate=packed >> 44,
        channels=((packed >> 41) & 0x7) + 1,
        bits_per_sample=((packed >> 36) & 0x1F) + 1,
        frames=packed & _TOTAL_MASK,
    )


def pcm_bytes(pcm: PCM) -> bytes:
    """Interleaved little-endian 16-bit samples: a WAV data chunk's bytes."""
    return np.ascontiguousarray(pcm, dtype="<i2").tobytes()


def wav_header(frames: int, sample_rate: int, channels: int) -> bytes:
    """The canonical 44-byte header of a 16-bit PCM WAV of `frames` frames (as libsndfile writes it)."""
    block = 2 * channels
    data = frames * block
    if data > _WAV_MAX_DATA:
        raise FormatError(f"{frames} frames do not fit a WAV file (4 GiB at most); ask for FLAC")
    fmt = struct.pack("<HHIIHH", 1, channels, sample_rate, sample_rate * block, block, 16)
    return (
        b"RIFF"
        + struct.pack("<I", 36 + data)
        + b"WAVE"
        + b"fmt "
        + struct.pack("<I", 16)
        + fmt
        + b"data"
        + struct.pack("<I", data)
    )


class _Sink:
    """A write-only in-memory file for libsndfile that hands its bytes out as they come.

    libFLAC writes its stream front to back, and when it finishes seeks back to fill in
    STREAMINFO's minimum/maximum frame sizes, total samples and MD5. Those bytes were sent
    long before: the late writes are kept (`late`) for the encoder to check, never sent.
    """

    def __init__(self) -> None:
        self.pending = bytearray()  # bytes from offset `sent` on, not handed out yet
        self.sent = 0
        self.pos = 0
        self.length = 0
        self.late: list[tuple[int, bytes]] = []

    def write(self, data: bytes) -> int:
        n = len(data)
        if self.pos == self.length:
            self.pending += data
        else:
            if self.pos + n > self.length:
                raise OSError("write across the end of the stream")
            if self.pos < self.sent:
                self.late.append((self.pos, bytes(data)))
            else:
                start = self.pos - self.sent
                self.pending[start : start + n] = data
        self.pos += n
        self.length = max(self.length, self.pos)
        return n

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        target = {io.SEEK_SET: offset, io.SEEK_CUR: self.pos + offset, io.SEEK_END: self.length + offset}[whence]
        if not 0 <= target <= self.length:
            raise OSError(f"seek to {target} outside the stream")
        self.pos = target
        return target

    def tell(self) -> int:
        return self.pos

    def read(self, size: int = -1) -> bytes:
        return b""  # write-only: libsndfile reads nothing back when it writes FLAC

    def take(self, keep_head: int = 0) -> bytes:
        """The bytes written since the last take (all, or none while fewer than `keep_head` exist)."""
        if self.sent + len(self.pending) < keep_head:
            return b""
        out = bytes(self.pending)
        self.sent += len(out)
        self.pending.clear()
        return out


class FlacStream:
    """Encode int16 frames into one FLAC stream, handing out its bytes as they are made.

    libsndfile (libFLAC) does the encoding, with the same settings as `encode`, so the audio
    frames are byte for byte those `encode` makes of the same samples. What differs is
    STREAMINFO, sent before the encoder has seen the audio: the total sample count is set
    from `frames` (known up front), while the frame sizes and the MD5 stay 0, which FLAC
    defines as "unknown". At the end the encoder's own count (its late STREAMINFO rewrite)
    must equal `frames`, and `close` raises otherwise, before the last bytes are handed out.
    """

    def __init__(self, sample_rate: int, channels: int, frames: int) -> None:
        if frames > _TOTAL_MASK:
            raise FormatError(f"{frames} frames do not fit FLAC's STREAMINFO")
        self.frames = frames
        self._sink = _Sink()
        self._file = sf.SoundFile(
            self._sink, mode="w", samplerate=sample_rate, channels=channels, format="FLAC", subtype="PCM_16"
        )
        self._head_done = False

    def write(self, pcm: PCM) -> bytes:
        """Encode more frames; the stream's bytes made so far (possibly none)."""
        self._file.write(pcm)
        return self._take()

    def close(self) -> bytes:
        """Finish the stream; its last bytes, once the encoder's frame count checked out."""
        self._file.close()
        rewritten = {offset: data for offset, data in self._sink.late}
        for offset, data in self._sink.late:
            if offset < 8 or offset + len(data) > STREAMINFO_END:
                raise RuntimeError(f"the FLAC encoder rewrote bytes {offset}..{offset + len(data)}, already sent")
        total = rewritten.get(_TOTAL_SAMPLES.start + 3)  # libFLAC rewrites the 36 bits from byte 21 on (5 bytes)
        if total is None or int.from_bytes(total, "big") & _TOTAL_MASK != self.frames:
            raise RuntimeError(f"the FLAC encoder did not encode the {self.frames} frames announced")
        return self._take()

    def _take(self) -> bytes:
        if self._head_done:
            return self._sink.take()
        head = bytearray(self._sink.take(keep_head=STREAMINFO_END))
        if not head:
            return b""
        if stream_info(bytes(head[:STREAMINFO_END])) is None:
            raise RuntimeError("the FLAC encoder did not start with STREAMINFO")
        packed = int.from_bytes(head[_TOTAL_SAMPLES], "big") & ~_TOTAL_MASK | self.frames
        head[_TOTAL_SAMPLES] = packed.to_bytes(8, "big")
        self._head_done = True
        return bytes(head)
