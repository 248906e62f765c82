"""The by-hand verification in the bundle's README: every ```sh block, run with bash, in order.

The blocks of README.txt and README.ja.txt must be the same commands (the prose is translated,
the commands are not). Run on an extracted good bundle they all pass; on a bundle whose audio an
insider changed (re-signing SHA256SUMS with the service key) the segment step fails; a time-stamped
bundle's step 10 passes with `openssl ts -verify` against the authority's CA.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support import bundle_forge as forge

TEXTS = Path(__file__).resolve().parents[2] / "evidence" / "bundle"
BLOCK = re.compile(r"^```sh\n(.*?)^```$", re.S | re.M)

pytestmark = pytest.mark.skipif(
    not (shutil.which("bash") and shutil.which("openssl") and shutil.which("sha256sum")),
    reason="needs bash, openssl and coreutils",
)


def blocks(name: str) -> list[str]:
    return BLOCK.findall((TEXTS / name).read_text(encoding="utf-8"))


def published() -> str:
    return hashlib.sha256(bytes(forge.service_key().verify_key)).hexdigest()


def extract(members: dict[str, bytes], where: Path) -> Path:
    for name, data in members.items():
        path = where / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return where


def run(block: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "LC_ALL": "C.UTF-8", "PUBLISHED_FINGERPRINT": published(), **env}
    return subprocess.run(["bash", "-e", "-c", block], cwd=cwd, env=full, capture_output=True, text=True, timeout=300)


def test_both_readmes_hold_the_same_ten_steps() -> None:
    en, ja = blocks("README.txt"), blocks("README.ja.txt")
    assert len(en) == 10
    assert en == ja


def test_every_step_passes_on_a_good_bundle(tmp_path: Path) -> None:
    where = extract(forge.bundle(), tmp_path)
    for number, block in enumerate(blocks("README.txt"), 1):
        done = run(block, where)
        assert done.returncode == 0, f"step {number} failed:\n{block}\n{done.stdout}\n{done.stderr}"
        assert "FAILED" not in done.stdout
    assert "final: 01" in run(blocks("README.txt")[6], where).stdout


def test_a_wrong_published_fingerprint_fails_step_1(tmp_path: Path) -> None:
    where = extract(forge.bundle(), tmp_path)
    done = run(blocks("README.txt")[0], where, PUBLISHED_FINGERPRINT="00" * 32)
    assert done.returncode != 0 and "FAILED" in done.stdout


def test_changed_audio_with_re_signed_sums_fails_the_segment_step(tmp_path: Path) -> None:
    members = forge.bundle()
    members["segments/000001.flac"] = forge.flip(members["segments/000001.flac"], 200)
    forge.resign_sums(members)
    where = extract(members, tmp_path)
    steps = blocks("README.txt")
    for number in (1, 2, 3, 4, 5, 6):  # the insider's re-signed SHA256SUMS holds...
        assert run(steps[number - 1], where).returncode == 0, number
    done = run(steps[6], where)  # ...the device's signature does not
    assert done.returncode != 0
    assert "FAILED: segments/000001.flac is not the audio the device signed" in done.stdout


def test_an_edited_custody_entry_fails_the_inclusion_step(tmp_path: Path) -> None:
    members = forge.bundle()
    name = next(n for n in sorted(members) if n.startswith("custody/entries/"))
    members[name] = members[name].replace(b'"allowed"', b'"denied"')
    forge.resign_sums(members)
    done = run(blocks("README.txt")[8], extract(members, tmp_path))
    assert done.returncode != 0 and f"FAILED: {name}: inclusion proof does not reach" in done.stdout


def test_a_dropped_file_fails_the_sums_step(tmp_path: Path) -> None:
    members = forge.bundle()
    where = extract(members, tmp_path)
    (where / "notes.txt").write_text("added")
    assert run(blocks("README.txt")[2], where).returncode != 0


def test_a_time_stamped_bundle_checks_with_openssl_ts(tmp_path: Path) -> None:
    from api.bundle.timestamp import fetch_timestamp
    from tests.evidence.test_bundle_verify import V
    from tests.support.tsa import local_tsa

    with local_tsa() as tsa:
        members = forge.bundle(forge.Facts(timestamp=lambda digest: fetch_timestamp(tsa.url, digest)))
        assert "SHA256SUMS.tsr" in members
        found = V.Findings()
        V.verify_inner(members, None, found)  # verify.py reads the reply's imprint
        assert found.timestamp["sha256"] == hashlib.sha256(members["SHA256SUMS"]).hexdigest()
        where = extract(members, tmp_path / "b")
        done = run(blocks("README.txt")[9], where, TSA_CA_FILE=str(tsa.ca_pem))
        assert done.returncode == 0, done.stdout + done.stderr
        assert "Verification: OK" in done.stdout
        other = dict(members)
        other["SHA256SUMS.tsr"] = fetch_timestamp(tsa.url, hashlib.sha256(b"another bundle").digest())
        with pytest.raises(V.Check, match="does not cover"):
            V.verify_inner(other, None, V.Findings())
