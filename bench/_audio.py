"""Speech-like test audio for the benchmarks: int16 mono, ~100 KB of FLAC per 5 s at 16 kHz.

Real speech from espeak-ng (resampled with sox when present) when available,
otherwise amplitude-modulated coloured noise. Either way a microphone-like
noise floor is added, which is what keeps FLAC from compressing counter audio
to almost nothing between words; the levels were chosen so that 5 s of 16 kHz
mono encodes to about 100 KB, like recorded speech.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import numpy.typing as npt
import soundfile as sf

PCM = npt.NDArray[np.int16]

SPEECH_GAIN = 0.5  # espeak-ng speaks at close to full scale; a counter microphone hears less
NOISE_FLOOR = 40.0  # standard deviation in int16 units, about -58 dBFS

TEXTS = [
    "Good morning. I would like to ask about the payment that was taken from my account last week. "
    "I was told on the phone that it would be refunded within three working days, but nothing has arrived yet.",
    "Could you check what happened, please? I have the reference number here, and the letter you sent me. "
    "It says the amount was returned on the fourteenth, but my bank says it never came in.",
    "I understand. Let me look at your file. The transfer was made on the twelfth, to the account ending in "
    "four five seven. Is that still your account? If not, we can send it again to a new one today.",
    "No, that account was closed in March. I wrote to you about it twice. This is the third time I have come "
    "to this counter, and each time somebody tells me something different. I would like to speak to a manager.",
]


def _resample(x: npt.NDArray[np.float64], rate_in: int, rate_out: int) -> npt.NDArray[np.float64]:
    if rate_in == rate_out:
        return x
    n_out = int(len(x) * rate_out / rate_in)
    return np.interp(np.arange(n_out) * rate_in / rate_out, np.arange(len(x)), x)


def _espeak(rate: int) -> npt.NDArray[np.float64] | None:
    """About a minute of English speech from espeak-ng, or None if it is not installed."""
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        return None
    sox = shutil.which("sox")
    parts: list[npt.NDArray[np.float64]] = []
    with tempfile.TemporaryDirectory(prefix="bench-audio-") as tmp:
        for i, text in enumerate(TEXTS):
            raw = Path(tmp) / f"{i}.wav"
            speed, pitch = 150 + 15 * i, 35 + 10 * i
            subprocess.run([espeak, "-s", str(speed), "-p", str(pitch), "-w", str(raw), text], check=True)
            if sox is not None:
                conv = Path(tmp) / f"{i}-{rate}.wav"
                subprocess.run([sox, str(raw), "-r", str(rate), "-c", "1", "-b", "16", str(conv)], check=True)
                data, got = sf.read(str(conv), dtype="float64")
            else:
                data, got = sf.read(str(raw), dtype="float64")
                data = _resample(data if data.ndim == 1 else data.mean(axis=1), int(got), rate)
            parts.append(data * 32767)
            parts.append(np.zeros(int(0.4 * rate)))  # a breath between turns
    return np.concatenate(parts)


def _synthetic(seconds: float, rate: int, rng: np.random.Generator) -> npt.NDArray[np.float64]:
    """Coloured noise gated into syllables and words: speech's spectrum and rhythm, not its content."""
    n = int(seconds * rate)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / rate)
    spectrum *= 1.0 / (1.0 + (freqs / 400.0) ** 1.5)  # most energy below 1 kHz, like voiced speech
    carrier = np.fft.irfft(spectrum, n)
    carrier /= carrier.std()
    t = np.arange(n) / rate
    syllables = np.abs(np.sin(2 * np.pi * 2.0 * t + rng.uniform(0, np.pi))) ** 2  # ~4 syllables per second
    gate = np.zeros(n)
    pos = 0
    while pos < n:  # words of 0.3-1.5 s separated by 0.1-0.6 s pauses
        length = int(rng.uniform(0.3, 1.5) * rate)
        gate[pos : pos + length] = 1.0
        pos += length + int(rng.uniform(0.1, 0.6) * rate)
    speech: npt.NDArray[np.float64] = 5000.0 * carrier * syllables * gate
    return speech


def speech_like(seconds: float, rate: int = 16000, seed: int = 0, kind: str = "auto") -> tuple[PCM, str]:
    """(int16 frames of shape (n, 1), a description). kind: auto | espeak | noise."""
    rng = np.random.default_rng(seed)
    n = round(seconds * rate)
    speech = _espeak(rate) if kind in ("auto", "espeak") else None
    if speech is None and kind == "espeak":
        raise RuntimeError("espeak-ng is not installed")
    if speech is not None:
        loops = -(-n // len(speech))
        signal = np.tile(speech, loops)[:n] * SPEECH_GAIN
        what = f"espeak-ng speech ({len(speech) / rate:.0f} s, looped) + noise floor"
    else:
        signal = _synthetic(seconds, rate, rng)
        what = "synthetic speech-like noise + noise floor"
    signal = signal + NOISE_FLOOR * rng.standard_normal(n)
    return np.clip(signal, -32768, 32767).astype(np.int16).reshape(-1, 1), what


def write_wav(path: Path, pcm: PCM, rate: int) -> None:
    sf.write(str(path), pcm, rate, format="WAV", subtype="PCM_16")
