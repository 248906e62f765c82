"""`countersign admin notice ...` against a live service: new text versions and spoken readings."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import httpx
import numpy as np
import soundfile as sf

from tests.client.conftest import Live, lines

NOTICE = "counter-recording"


def reading(path: Path, seconds: float = 1.0) -> Path:
    t = np.arange(int(16000 * seconds)) / 16000
    sf.write(path, (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16), 16000, format="WAV", subtype="PCM_16")
    return path


def test_add_a_version_upload_and_generate_its_reading(live: Live, tmp_path: Path) -> None:
    text = tmp_path / "notice.txt"
    text.write_text("当窓口では、応対を録音しています。\n録音を望まれない方はお申し出ください。\n", encoding="utf-8")
    added = live.run(
        live.admin, "admin", "notice", "add", "--id", NOTICE, "--language", "ja", "--title", "録音について",
        "--text-file", str(text),
    )  # fmt: skip
    assert lines(added)[0].startswith(f"notice {NOTICE} v2 (ja) added, sha256 ")
    assert "audio generate counter-recording --version 2 --language ja" in added.stdout
    listed = {(n["version"], n["language"]): n for n in live.get(live.device.token, "/v1/notices")}
    assert listed[(2, "ja")]["text"] == text.read_text(encoding="utf-8").strip()
    assert listed[(1, "ja")]["text"] != listed[(2, "ja")]["text"]  # version 1 is unchanged

    up = live.run(
        live.admin, "admin", "notice", "audio", "upload", NOTICE, str(reading(tmp_path / "r.wav")),
        "--version", "2", "--language", "ja",
    )  # fmt: skip
    assert f"notice {NOTICE} v2 (ja): reading 1.0 s" in up.stdout and "(upload)" in up.stdout
    gen = live.run(live.admin, "admin", "notice", "audio", "generate", NOTICE, "--version", "1", "--language", "en")
    assert f"notice {NOTICE} v1 (en): reading" in gen.stdout and "(espeak-ng)" in gen.stdout

    shown = lines(live.run(live.admin, "admin", "notice", "list"))
    assert any(line.startswith(f"{NOTICE}\tv2\tja\treading ") for line in shown), shown
    assert any(line.startswith(f"{NOTICE}\tv1\tja\tno reading") for line in shown), shown
    reply = httpx.get(
        f"{live.server.url}/v1/notices/{NOTICE}/versions/1/en/audio", headers=live.device.auth, timeout=30
    )
    assert reply.status_code == 200, reply.text
    got = reply.content
    assert sf.info(io.BytesIO(got)).format == "WAV"
    sha = gen.stdout.split("sha256 ")[1].split()[0]
    assert hashlib.sha256(got).hexdigest() == sha


def test_refusals_are_clear(live: Live, tmp_path: Path) -> None:
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"this is not audio" * 100)
    bad = live.run(
        live.admin, "admin", "notice", "audio", "upload", NOTICE, str(junk), "--version", "1", "--language", "ja",
        check=False,
    )  # fmt: skip
    assert bad.returncode == 1 and "422" in bad.stderr and "libsndfile" in bad.stderr

    big = tmp_path / "big.wav"
    big.write_bytes(bytes(5 * 1024 * 1024 + 1))
    too_big = live.run(
        live.admin, "admin", "notice", "audio", "upload", NOTICE, str(big), "--version", "1", "--language", "ja",
        check=False,
    )  # fmt: skip
    assert too_big.returncode == 2 and "more than" in too_big.stderr  # not even sent

    officer = live.run(
        live.officer, "admin", "notice", "audio", "generate", NOTICE, "--version", "1", "--language", "ja", check=False
    )
    assert officer.returncode == 1 and "403" in officer.stderr
    missing = live.run(
        live.admin, "admin", "notice", "audio", "generate", NOTICE, "--version", "7", "--language", "ja", check=False
    )
    assert missing.returncode == 1 and "404" in missing.stderr
    assert all(not n["audio"] for n in live.get(live.admin, "/v1/notices"))
