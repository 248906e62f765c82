"""`countersign evidence ...` on recordings without audio: shown as what they are, never as tampering."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from tests.client.conftest import PURPOSE, Live, lines


def open_without_audio(live: Live, outcome: str, interrupt: bool = False) -> str:
    rec = live.device.new_recording(outcome=outcome)
    with httpx.Client(base_url=live.server.url, headers=live.device.auth, timeout=30) as http:
        assert http.post("/v1/recordings", json=rec.create_body()).status_code == 201
        if interrupt:
            assert http.post(f"/v1/recordings/{rec.id}/interrupt").status_code == 200
    return str(rec.id)


def test_list_show_and_get_say_what_a_recording_without_audio_is(live: Live, tmp_path: Path) -> None:
    objection = open_without_audio(live, "objected")
    empty = open_without_audio(live, "given", interrupt=True)
    recorded = live.upload(2)
    listed = {line.split()[0]: line for line in lines(live.run(live.officer, "evidence", "list"))}
    assert "objected" in listed[objection[:8]] and "objection: nothing recorded" in listed[objection[:8]]
    assert "interrupted" in listed[empty[:8]] and "no audio captured" in listed[empty[:8]]
    assert "  0:02  " in listed[str(recorded.id)[:8]]  # its duration: 2 one-second segments

    assert json.loads(live.run(live.officer, "evidence", "show", objection, "--json").stdout)["audio"] == "objection"
    assert json.loads(live.run(live.officer, "evidence", "show", empty, "--json").stdout)["audio"] == "none"

    out_dir = tmp_path / "out"
    out_dir.mkdir()
    for rid, said in ((objection, "this is an objection record"), (empty, "no audio was captured")):
        out = out_dir / f"{rid}.flac"
        got = live.run(live.officer, "evidence", "get", rid, "--purpose", PURPOSE, "-o", str(out), check=False)
        assert got.returncode == 1 and "No audio to release" in got.stderr and said in got.stderr, got.stderr
        assert "Integrity" not in got.stderr
        assert list(out_dir.iterdir()) == []  # no audio file, no partial file
