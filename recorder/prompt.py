"""The consent notice at the counter: shown in the terminal, spoken when audio exists."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from consent.catalogue import Notice
from consent.records import ConsentRecord
from recorder.errors import NoticeAudioError

Ask = Callable[[str], str]
Say = Callable[[str], None]

# Staff read these, whatever language the customer's notice is in: Japanese first, then English.
ASK_DECISION = (
    "告知しました。[Enter] 同意あり・録音開始 / [o] お客様が拒否\n"
    "Notice given. [Enter] customer agrees, start recording / [o] customer objects"
)
ASK_AGAIN = "Enter か o を押してください。 / Please press Enter or type o."
ONLY_SHOWN = "告知は表示のみです。お客様に読み上げてください。 / the notice was only shown: read it to the customer"


def notice_audio(home_root: Path, notice: Notice) -> Path | None:
    """A recorded (or synthesised) reading of exactly this notice version, if provisioned."""
    path = home_root / "notice-audio" / f"{notice.id}.{notice.language}.v{notice.version}.wav"
    return path if path.is_file() else None


def device_arg(name: str | None) -> str | int | None:
    """A --input-device or --output-device value as sounddevice takes it: digits are an index, anything else a name."""
    return int(name) if name and name.isdigit() else name


def speak(path: Path, device: str | int | None) -> None:
    """Play the notice audio; any PortAudio/libsndfile problem is one NoticeAudioError."""
    try:
        import sounddevice as sd  # OSError when the PortAudio library is missing
        import soundfile as sf

        data, rate = sf.read(str(path), dtype="int16")
        sd.check_output_settings(device=device, channels=1 if data.ndim == 1 else data.shape[1], samplerate=rate)
        sd.play(data, rate, device=device)
        try:
            sd.wait()
        except BaseException:
            sd.stop()  # Ctrl-C while the notice plays: silence the speaker before the caller exits
            raise
    except Exception as exc:  # sd.PortAudioError, sf.LibsndfileError, OSError, ValueError (unknown device)
        raise NoticeAudioError(f"{path.name}: {exc}") from None


def present(
    notice: Notice, staff_code: str, say: Say, ask: Ask, audio: Path | None, output_device: str | int | None
) -> ConsentRecord:
    """Show (and speak) the notice, then ask staff what the customer decided."""
    presented = datetime.now(UTC)
    say(f"\n=== {notice.title} ===\n{notice.text}\n")
    method = "displayed"
    if audio is not None:
        try:
            speak(audio, output_device)
            method = "displayed+spoken"
        except NoticeAudioError as exc:
            # The notice was shown; the consent record says so and not more. Staff read it aloud.
            say(f"warning: {exc}; {ONLY_SHOWN}")
    while True:
        answer = ask(ASK_DECISION).strip().lower()
        if answer in ("", "y", "yes"):
            outcome = "given"
            break
        if answer in ("o", "object", "objected", "n", "no"):
            outcome = "objected"
            break
        say(ASK_AGAIN)
    return ConsentRecord.for_notice(
        notice,
        method=method,
        presented_at=presented,
        decided_at=datetime.now(UTC),
        outcome=outcome,
        staff_code=staff_code,
    )


def scripted(notice: Notice, staff_code: str, outcome: str, method: str = "ivr") -> ConsentRecord:
    """Consent decided on another channel (an IVR announcement, a form): recorded as such."""
    now = datetime.now(UTC)
    return ConsentRecord.for_notice(
        notice, method=method, presented_at=now, decided_at=now, outcome=outcome, staff_code=staff_code
    )
