"""Zero-knowledge mode end to end: the real CLI against a real `countersign server run`.

The organisation's offline key is made with `countersign recovery generate`, the data directory
with `countersign server init --zero-knowledge --offline-public-key FILE`; a device uploads over
HTTP; the officer reads with `countersign evidence get --key FILE`. Then the service's
memory-facing paths (its data directory and its log) are searched for the recording's data key.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf

from tests.client.conftest import PURPOSE, add_user, decode, enrol, expected_pcm
from tests.conftest import LiveServer, bearer, cli_env, countersign, free_port
from tests.support.factories import SimDevice, SimRecording, tone
from tests.support.verifier import run_verify

PASSPHRASE = "the organisation's offline passphrase"


@dataclass
class ZkLive:
    server: LiveServer
    api: httpx.Client  # as the admin
    officer: str
    other_officer: str
    device: SimDevice
    key_file: Path
    passphrase_file: Path
    key_id: str

    def run(self, token: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = cli_env(COUNTERSIGN_SERVER=self.server.url, COUNTERSIGN_TOKEN=token)
        return countersign(*args, env=env, check=check)

    def upload(self, segments: int = 3) -> SimRecording:
        rec = self.device.new_recording()
        self.device.add_segments(rec, segments)
        with httpx.Client(base_url=self.server.url, headers=self.device.auth, timeout=30) as http:
            assert http.post("/v1/recordings", json=rec.create_body()).status_code == 201
            for seg in rec.segments:
                reply = http.put(
                    f"/v1/recordings/{rec.id}/segments/{seg.index}",
                    content=seg.envelope,
                    headers=self.device.segment_headers(seg),
                )
                assert reply.status_code == 201, reply.text
        return rec


@pytest.fixture
def zk(tmp_path: Path, backend_env: dict[str, str]) -> Iterator[ZkLive]:
    offline = tmp_path / "offline-machine"
    passphrase_file = tmp_path / "passphrase.txt"
    passphrase_file.write_text(PASSPHRASE + "\n")
    countersign("recovery", "generate", "--out", str(offline), "--passphrase-file", str(passphrase_file))
    [key_file] = offline.glob("recovery-*.key")
    [public_file] = offline.glob("recovery-*.public.json")
    data = tmp_path / "server"
    init = countersign(
        "server", "init", "--data", str(data), "--zero-knowledge", "--offline-public-key", str(public_file)
    )
    assert "zero-knowledge" in init.stdout
    admin = next(line.split()[-1] for line in init.stdout.splitlines() if line.startswith("admin token"))
    server = LiveServer(data, free_port())
    server.start()
    api = httpx.Client(base_url=server.url, headers=bearer(admin), timeout=30)
    try:
        for site in ("north", "south"):
            assert api.post("/v1/sites", json={"id": site}).status_code == 201
        yield ZkLive(
            server,
            api,
            officer=add_user(api, "olivia", "officer", ["north"], data),
            other_officer=add_user(api, "oscar", "officer", ["south"], data),
            device=enrol(api, "counter-n1", "north"),
            key_file=key_file,
            passphrase_file=passphrase_file,
            key_id=key_file.name.removeprefix("recovery-").removesuffix(".key"),
        )
    finally:
        api.close()
        server.stop()


def _get(zk: ZkLive, rid: object, out: Path, *extra: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    return zk.run(
        token or zk.officer, "evidence", "get", str(rid), "--purpose", PURPOSE, "-o", str(out), *extra, check=False
    )


def test_a_cli_read_with_the_offline_key_returns_the_original_audio(tmp_path: Path, zk: ZkLive) -> None:
    rec = zk.upload(3)
    out = tmp_path / "read.flac"
    result = _get(zk, rec.id, out, "--key", str(zk.key_file), "--passphrase-file", str(zk.passphrase_file))
    assert result.returncode == 0, result.stderr
    assert f"3 segments verified and decrypted with offline key {zk.key_id}" in result.stdout
    samples, rate = decode(out.read_bytes())
    assert rate == zk.device.rate
    np.testing.assert_array_equal(samples, expected_pcm(rec))  # the samples the device encoded, exactly
    wav = tmp_path / "read.wav"
    assert (
        _get(zk, rec.id, wav, "--key", str(zk.key_file), "--passphrase-file", str(zk.passphrase_file)).returncode == 0
    )
    np.testing.assert_array_equal(decode(wav.read_bytes())[0], expected_pcm(rec))
    # The read was audited, with its purpose, before anything left: the entry the CLI names is in
    # the recording's custody as a sealed read by the officer, and the read came after the uploads.
    entry = int(result.stdout.rsplit("access log entry ", 1)[1].rstrip(")\n"))
    custody = httpx.get(f"{zk.server.url}/v1/audit/custody/{rec.id}", headers=bearer(zk.officer), timeout=30)
    assert custody.status_code == 200, custody.text
    [read] = [e for e in custody.json() if e["seq"] == entry]
    assert (read["action"], read["purpose"], read["outcome"]) == ("api:evidence:read-sealed", PURPOSE, "allowed")
    uploads = [e["seq"] for e in custody.json() if e["action"] == "api:segment:upload"]
    assert len(uploads) == 3 and max(uploads) < entry


def test_a_read_without_the_key_or_with_the_wrong_one_fails_clearly(tmp_path: Path, zk: ZkLive) -> None:
    rec = zk.upload(1)
    out = tmp_path / "nothing.flac"
    plain = _get(zk, rec.id, out)
    assert plain.returncode == 1 and plain.stdout == ""
    [line] = plain.stderr.splitlines()
    assert line.startswith("error:") and "zero-knowledge" in line and "--key" in line
    other = tmp_path / "other-organisation"
    countersign("recovery", "generate", "--out", str(other), "--passphrase-file", str(zk.passphrase_file))
    [wrong_key] = other.glob("recovery-*.key")
    wrong = _get(zk, rec.id, out, "--key", str(wrong_key), "--passphrase-file", str(zk.passphrase_file))
    assert wrong.returncode == 2 and wrong.stdout == ""
    [line] = wrong.stderr.splitlines()
    assert line.startswith("error:") and f"not sealed to offline key {wrong_key.name[9:25]}" in line
    bad_passphrase = tmp_path / "bad.txt"
    bad_passphrase.write_text("not the passphrase at all\n")
    typo = _get(zk, rec.id, out, "--key", str(zk.key_file), "--passphrase-file", str(bad_passphrase))
    assert typo.returncode == 2 and "wrong recovery key passphrase" in typo.stderr
    assert not out.exists() and list(tmp_path.glob(".nothing.flac.*")) == []  # no file, no part left behind
    # Scope: an officer of another site is told it does not exist.
    far = _get(
        zk, rec.id, out, "--key", str(zk.key_file), "--passphrase-file", str(zk.passphrase_file), token=zk.other_officer
    )
    assert far.returncode == 1 and "404" in far.stderr


def test_the_service_data_directory_and_log_hold_no_data_key(tmp_path: Path, zk: ZkLive) -> None:
    recs = [zk.upload(2), zk.upload(1)]
    for n, rec in enumerate(recs):
        out = tmp_path / f"read-{n}.flac"
        done = _get(zk, rec.id, out, "--key", str(zk.key_file), "--passphrase-file", str(zk.passphrase_file))
        assert done.returncode == 0, done.stderr
    zk.server.stop()  # everything it buffered is on disk now
    data = zk.server.data
    paths = [p for p in data.rglob("*") if p.is_file()] + [zk.server.log]
    assert zk.server.log.stat().st_size > 0 and any(p.suffix == ".key" for p in paths)  # the scan sees files
    for rec in recs:
        key = rec.data_key
        needles = [key, key.hex().encode(), key.hex().upper().encode(), base64.b64encode(key)]
        needles.append(base64.b64encode(key).rstrip(b"="))
        found = [str(p) for p in paths if any(n in p.read_bytes() for n in needles)]
        assert found == [], f"data key of {rec.id} found in {found}"
    # Nor is any evidence private key there: the only key files are the audit signing key.
    assert sorted(p.name for p in (data / "keys").iterdir()) == ["service-signing.key", "zero-knowledge.json"]
    assert hashlib.sha256(zk.key_file.read_bytes()).hexdigest() not in zk.server.log.read_text()


def test_a_real_recorder_seals_to_the_offline_key_and_the_cli_reads_it_back(tmp_path: Path, zk: ZkLive) -> None:
    """The counter PC's own `recorder enroll` and `recorder record` (not the test device): it seals to
    what GET /v1/keys says, here the offline key alone, and the read returns the file's samples."""
    code = zk.api.post("/v1/devices", json={"name": "counter-n2", "site": "north"}).json()["enrolment_code"]
    home = tmp_path / "device"
    countersign("recorder", "enroll", "--server", zk.server.url, "--code", code, "--home", str(home))
    source = np.concatenate([tone(1.0, freq=300 + 40 * i, seed=i) for i in range(3)])
    sf.write(tmp_path / "call.wav", source, 16000, subtype="PCM_16")
    countersign(
        "recorder", "record", "--home", str(home), "--input", str(tmp_path / "call.wav"),
        "--consent", "given", "--language", "en", "--segment-seconds", "1",
    )  # fmt: skip
    listed = zk.run(zk.officer, "evidence", "list", "--json")
    [rid] = [r["id"] for r in json.loads(listed.stdout) if r.get("device_name") == "counter-n2"]
    out = tmp_path / "call-read.wav"
    done = _get(zk, rid, out, "--key", str(zk.key_file), "--passphrase-file", str(zk.passphrase_file))
    assert done.returncode == 0, done.stderr
    np.testing.assert_array_equal(decode(out.read_bytes())[0], source[:, 0])


def test_a_cli_export_finished_with_the_offline_key_verifies_with_verify_py_alone(
    tmp_path: Path, zk: ZkLive, bare_python: Path
) -> None:
    """The service cannot decrypt, so the bundle is finished here; its recipient sees an ordinary bundle."""
    rec = zk.upload(3)
    handover = tmp_path / "handover"
    handover.mkdir()
    (handover / "bundle-passphrase.txt").write_text("the police station's passphrase\n")
    out = handover / "bundle.zip"
    exported = zk.run(
        zk.officer, "evidence", "export", str(rec.id), "--case", "K-ZK-1", "--purpose", PURPOSE,
        "--recipient", "Minato PS", "--passphrase-file", str(handover / "bundle-passphrase.txt"), "-o", str(out),
        "--key", str(zk.key_file), "--key-passphrase-file", str(zk.passphrase_file), check=False,
    )  # fmt: skip
    assert exported.returncode == 0, exported.stderr
    assert f"finished on this machine with offline key {zk.key_id}" in exported.stdout
    with zipfile.ZipFile(out) as outer:
        (handover / "verify.py").write_bytes(outer.read("verify.py"))  # the verifier that came with it
    service_key = httpx.get(f"{zk.server.url}/v1/audit/public-key", timeout=30).json()["public_key"]
    verdict = run_verify(
        bare_python, handover, "bundle.zip", "--passphrase-file", "bundle-passphrase.txt", "--service-key",
        service_key, "--lang", "en", "--extract", "opened",
    )  # fmt: skip
    assert verdict.returncode == 0, verdict.stdout + verdict.stderr
    assert verdict.stdout.startswith("Countersign evidence bundle: VALID\n"), verdict.stdout
    assert "K-ZK-1" in verdict.stdout
    opened = handover / "opened"
    assert not (opened / "audio" / "recording.flac").exists()  # the service could not make (or sign) a joined file
    pcm = np.concatenate([decode((opened / "segments" / f"{i:06d}.flac").read_bytes())[0] for i in range(3)])
    np.testing.assert_array_equal(pcm, expected_pcm(rec))  # the device's samples, exactly
    # Audited as any export: the request (before anything was read) and the bundle that left.
    digest = exported.stdout.split("bundle SHA256SUMS digest ", 1)[1].split()[0]
    custody = httpx.get(f"{zk.server.url}/v1/audit/custody/{rec.id}", headers=bearer(zk.officer), timeout=30).json()
    actions = [(e["action"], e.get("purpose")) for e in custody if e["action"].startswith("api:evidence:export")]
    assert actions == [("api:evidence:export", PURPOSE), ("api:evidence:exported", None)]
    [done] = [e for e in custody if e["action"] == "api:evidence:exported"]
    assert done["detail"]["sha256sums"] == digest and done["detail"]["finished_by_client"] is True


def test_a_cli_export_without_the_key_or_with_the_wrong_one_writes_nothing(tmp_path: Path, zk: ZkLive) -> None:
    rec = zk.upload(1)
    out = tmp_path / "bundle.zip"
    common = ("evidence", "export", str(rec.id), "--case", "K-ZK-2", "--purpose", PURPOSE, "-o", str(out))
    plain = zk.run(zk.officer, *common, "--recipient-key", "ab" * 32, check=False)
    assert plain.returncode == 1 and "zero-knowledge" in plain.stderr and "--key" in plain.stderr
    other = tmp_path / "other-organisation"
    countersign("recovery", "generate", "--out", str(other), "--passphrase-file", str(zk.passphrase_file))
    [wrong_key] = other.glob("recovery-*.key")
    wrong = zk.run(
        zk.officer, *common, "--unencrypted", "--key", str(wrong_key),
        "--key-passphrase-file", str(zk.passphrase_file), check=False,
    )  # fmt: skip
    assert wrong.returncode == 2, wrong.stderr
    [line] = wrong.stderr.splitlines()
    assert line.startswith("error:") and "not sealed to offline key" in line
    bad_passphrase = tmp_path / "wrong-passphrase.txt"
    bad_passphrase.write_text("not the passphrase at all\n")
    mistyped = zk.run(
        zk.officer, *common, "--unencrypted", "--key", str(zk.key_file), "--key-passphrase-file", str(bad_passphrase),
        check=False,
    )  # fmt: skip
    assert mistyped.returncode != 0 and mistyped.stderr.startswith("error:")
    assert not out.exists() and list(tmp_path.glob("bundle.zip*")) == []  # no file, not even a part
    custody = httpx.get(f"{zk.server.url}/v1/audit/custody/{rec.id}", headers=bearer(zk.officer), timeout=30).json()
    exports = [e for e in custody if e["action"] == "api:evidence:export"]
    assert len(exports) == 1  # the wrong key cost a logged export; the mistyped passphrase did not
