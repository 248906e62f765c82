"""The readiness strip: each check says ok, warn or fail, with a plain-words reason in ja and en.

Start is offered only while no check fails. What each one means:

* microphone: the input opens and, over a short window, hears more than digital silence
  (a live microphone always hears its room's noise floor; a dead, muted or unplugged input
  delivers zeros). Nothing heard is kept.
* speaker: a warning, never a failure. The notice is always shown in large text and staff
  can read it aloud; the consent record then says "displayed", not "displayed+spoken". When
  no spoken notice is provisioned the speaker is not needed at all and the check is ok.
* server: POST HEARTBEAT (clock, spool state); a service without that route is asked
  GET /v1/keys instead. Offline is a warning: recording works and the spool waits.
* evidence key: refresh_evidence_keys, as `recorder record` does; no key to seal to fails.
* spool: room for a few minutes of audio (the limit and the disk), else it fails.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from recorder.capture import SILENCE_PEAK, listen
from recorder.client import DeviceClient, NotFound
from recorder.errors import NoEvidenceKey, RecorderError, ServerRefused, ServerUnreachable, SpoolFull
from recorder.home import DeviceHome
from recorder.keys import refresh_evidence_keys
from recorder.spool import Spool

OK, WARN, FAIL = "ok", "warn", "fail"
CHECK_TIMEOUT = 3.0  # seconds: the strip must not stall on a server that does not answer
SPOOL_HEADROOM_SECONDS = 300  # five minutes of 16 kHz mono FLAC-or-worse


@dataclass(frozen=True)
class Check:
    name: str
    state: str
    ja: str
    en: str

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "state": self.state, "ja": self.ja, "en": self.en}


def microphone(
    device: str | int | None, sample_rate: int, channels: int, window: float = 1.0, probe: Callable[..., int] = listen
) -> Check:
    try:
        peak = probe(device, sample_rate, channels, window)
    except RecorderError as exc:
        return Check(
            "microphone",
            FAIL,
            f"マイクが使えません。接続を確認してください。({exc.detail})",
            f"The microphone cannot be used; check that it is plugged in. ({exc.detail})",
        )
    if peak <= SILENCE_PEAK:
        return Check(
            "microphone",
            FAIL,
            "マイクに音が入っていません (無音)。ミュートや接続を確認してください。",
            "The microphone hears nothing (silence); check that it is not muted or unplugged.",
        )
    return Check("microphone", OK, "マイク: 音を受信しています", "Microphone: hearing sound")


def speaker(device: str | int | None, has_notice_audio: bool) -> Check:
    if not has_notice_audio:
        return Check("speaker", OK, "スピーカー: 音声告知なし (画面表示のみ)", "Speaker: no spoken notice (shown only)")
    try:
        import sounddevice as sd

        sd.check_output_settings(device=device)
    except Exception as exc:  # OSError (no PortAudio), PortAudioError, ValueError (no such device)
        return Check(
            "speaker",
            WARN,
            f"スピーカーが使えません。告知を読み上げてください。({exc})",
            f"No speaker: read the notice aloud to the customer. ({exc})",
        )
    return Check("speaker", OK, "スピーカー: 使用できます", "Speaker: ready")


def server(client: DeviceClient, spool: Spool) -> tuple[Check, dict[str, Any] | None]:
    """The server check, and the heartbeat answer when the service has the route."""
    unsent = sum(len(r.unsent()) for r in spool.recordings())
    body = {
        "clock": datetime.now(UTC).isoformat(),
        "spool_used_bytes": spool.used_bytes(),
        "spool_max_bytes": spool.max_bytes,
        "unsent_segments": unsent,
    }
    reply: dict[str, Any] | None = None
    try:
        try:
            reply = client.heartbeat(body, timeout=CHECK_TIMEOUT)
        except NotFound:  # a service from before help alerts: any authenticated answer will do
            client.evidence_key_entries(timeout=CHECK_TIMEOUT)
    except ServerUnreachable as exc:
        return (
            Check(
                "server",
                WARN,
                f"サーバーに接続できません。録音は端末に保存され、復旧後に自動送信されます。({exc.detail})",
                f"The server cannot be reached; recordings wait on this PC and are sent when it returns. "
                f"({exc.detail})",
            ),
            None,
        )
    except ServerRefused as exc:
        return (
            Check(
                "server",
                FAIL,
                f"サーバーがこの端末を拒否しました。管理者に連絡してください。({exc.detail})",
                f"The server refused this device; call the administrator. ({exc.detail})",
            ),
            None,
        )
    return Check("server", OK, "サーバー: 接続しています", "Server: connected"), reply


def evidence_key(home: DeviceHome, client: DeviceClient) -> Check:
    try:
        refresh_evidence_keys(home, client, lambda _message: None)
    except NoEvidenceKey as exc:
        return Check(
            "key",
            FAIL,
            f"暗号化の鍵が無効です。管理者に連絡してください。({exc.detail})",
            f"No valid evidence key to encrypt to; call the administrator. ({exc.detail})",
        )
    except RecorderError as exc:
        return Check(
            "key", FAIL, f"鍵を確認できません。({exc.detail})", f"The evidence key cannot be checked. ({exc.detail})"
        )
    return Check("key", OK, "暗号化の鍵: 有効", "Evidence key: valid")


def spool_space(spool: Spool, sample_rate: int, channels: int) -> Check:
    needed = SPOOL_HEADROOM_SECONDS * sample_rate * channels * 2
    try:
        spool.check_room(needed)
    except SpoolFull as exc:
        return Check(
            "spool",
            FAIL,
            f"端末の保存領域が不足しています。ネットワーク接続を確認してください。({exc.detail})",
            f"The spool on this PC is full; check the network so it can upload. ({exc.detail})",
        )
    return Check("spool", OK, "保存領域: 十分です", "Spool: room to record")
