"""Devices follow key rotation: they refresh their evidence keys before each recording, and refuse
to record (exit 4, naming the key) when none of the keys they hold may still be sealed to."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import nacl.public
import pytest
from sqlalchemy import select

from api import key_custody
from api.core.models import SealedKey
from api.core.settings import Settings
from evidence.errors import ExitCode
from recorder.client import DeviceClient
from recorder.errors import NoEvidenceKey
from recorder.keys import refresh_evidence_keys
from tests.conftest import cli_env, countersign, free_port
from tests.recorder.conftest import Service
from tests.recorder.support import offline_home, write_wav


def record_file(home: Path, wav: Path) -> subprocess.CompletedProcess[str]:
    args = ["recorder", "record", "--home", str(home), "--input", str(wav), "--consent", "given", "--language", "en"]
    return countersign(*args, "--segment-seconds", "1", "--upload-wait", "20", env=cli_env(), check=False)


def one_error_line(result: subprocess.CompletedProcess[str], code: ExitCode) -> str:
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def test_a_rotation_reaches_the_device_before_its_next_recording(
    service: Service, settings: Settings, tmp_path: Path
) -> None:
    (k1,) = service.home.key_entries()
    with key_custody.open_custody(settings) as custody:
        k2, _ = key_custody.rotate(custody)
    wav = tmp_path / "in.wav"
    write_wav(wav, 2.0)
    result = record_file(service.home.root, wav)
    assert result.returncode == 0, result.stderr
    rid = result.stdout.split()[0]
    entries = service.home.key_entries()
    assert (entries[k1]["state"], entries[k1]["seal_to"]) == ("previous", False)
    assert (entries[k2]["state"], entries[k2]["seal_to"]) == ("current", True)
    with key_custody.open_custody(settings) as custody, custody.sessions() as session:
        assert set(session.scalars(select(SealedKey.key_id).where(SealedKey.recording_id == rid))) == {k2}
    assert len(service.audio(rid)) == 32000  # read back with a key the service loaded after it started


def test_refresh_keeps_sealable_keys_when_the_server_is_unreachable(tmp_path: Path) -> None:
    home = offline_home(tmp_path / "device", nacl.public.PrivateKey.generate().public_key)
    said: list[str] = []
    client = DeviceClient(f"http://127.0.0.1:{free_port()}", home.token())
    try:
        assert set(refresh_evidence_keys(home, client, said.append)) == {"k1"}
        assert "cannot refresh the evidence keys" in said[0]
        entries = home.key_entries()
        entries["k1"].update(state="retired", seal_to=False, valid_until="2030-01-01T00:00:00Z")
        home.save_keys(entries)
        with pytest.raises(NoEvidenceKey, match="evidence key k1 is retired since 2030-01-01"):
            refresh_evidence_keys(home, client, said.append)
    finally:
        client.close()


@pytest.mark.parametrize("state", ["retired", "previous"])
def test_device_refuses_to_record_when_none_of_its_keys_may_be_sealed_to(tmp_path: Path, state: str) -> None:
    home = offline_home(tmp_path / "device", nacl.public.PrivateKey.generate().public_key)
    config = home.config()
    home.save_keys(
        {
            "k1": {
                "public_key": json.loads((home.root / "evidence_keys.json").read_text())["k1"],
                "state": state,
                "seal_to": False,
                "valid_until": "2030-01-01T00:00:00Z",
            }
        }
    )
    (home.root / "device.json").write_text(json.dumps({**config, "server": f"http://127.0.0.1:{free_port()}"}))
    wav = tmp_path / "in.wav"
    write_wav(wav, 1.0)
    line = one_error_line(record_file(home.root, wav), ExitCode.NO_EVIDENCE_KEY)
    assert "Refusing to record" in line and "evidence key k1 is" in line
    assert ("retired" if state == "retired" else "superseded by a key rotation") in line
    assert not list(home.spool_dir.glob("*")), "nothing may be recorded"
