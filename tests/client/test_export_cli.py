"""`countersign evidence export` against a live service: each way of protecting the bundle, and refusals."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
from nacl.public import PrivateKey

from evidence.bundle.crypto import open_outer, passphrase_key
from tests.client.conftest import PURPOSE, Live, assert_out_of_scope

CASE = "K-2026-042"


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    """Where the officer saves bundles (apart from the test's server data)."""
    folder = tmp_path / "downloads"
    folder.mkdir()
    return folder


def export(live: Live, rid: object, out: Path, *extra: str, token: str = "", check: bool = True):
    args = ("evidence", "export", str(rid), "--case", CASE, "--purpose", PURPOSE, "-o", str(out), *extra)
    return live.run(token or live.officer, *args, check=check)


def test_unencrypted_writes_the_inner_bundle(live: Live, out_dir: Path) -> None:
    rec = live.upload(2)
    out = out_dir / "bundle.zip"
    done = export(live, rec.id, out, "--unencrypted", "--recipient", "Station 7")
    assert "unencrypted: it holds plaintext audio" in done.stdout
    with zipfile.ZipFile(out) as inner:
        manifest = json.loads(inner.read("manifest.json"))
        assert inner.read("segments/000001.flac")[:4] == b"fLaC"
    assert manifest["case_ref"] == CASE and manifest["recipient"] == "Station 7"
    assert list(out_dir.iterdir()) == [out]  # no temporary file left beside it


def test_a_recipient_key_bundle_opens_with_that_key(live: Live, out_dir: Path) -> None:
    rec = live.upload(1)
    recipient = PrivateKey.generate()
    key_file = out_dir / "station7.pub"
    key_file.write_text(bytes(recipient.public_key).hex() + "\n")
    out = out_dir / "bundle.zip"
    export(live, rec.id, out, "--recipient-key", str(key_file))
    with zipfile.ZipFile(out) as outer, (out_dir / "inner.zip").open("wb") as f:
        open_outer(outer, recipient, f)
    assert zipfile.ZipFile(out_dir / "inner.zip").read("recording/header.sig")


def test_a_passphrase_bundle_never_sends_the_passphrase(live: Live, out_dir: Path) -> None:
    rec = live.upload(1)
    phrase = out_dir / "phrase"
    phrase.write_text("a long shared passphrase\n")
    out = out_dir / "bundle.zip"
    export(live, rec.id, out, "--passphrase-file", str(phrase))
    with zipfile.ZipFile(out) as outer, (out_dir / "inner.zip").open("wb") as f:
        kdf = json.loads(outer.read("encryption.json"))["kdf"]
        open_outer(outer, passphrase_key(b"a long shared passphrase", kdf), f)
    logged = json.dumps(live.get(live.auditor, "/v1/audit", limit=10000))
    assert "a long shared passphrase" not in logged


def test_usage_errors_are_one_line_and_write_nothing(live: Live, out_dir: Path) -> None:
    rec = live.upload(1)
    out = out_dir / "bundle.zip"
    for extra, says in (
        (("--unencrypted", "--recipient-key", "00" * 32), "choose one of"),
        (("--recipient-key", "abc"), "--recipient-key must be 64 hex"),
        ((), "choose how the bundle is protected"),  # no TTY to ask for a passphrase
    ):
        failed = export(live, rec.id, out, *extra, check=False)
        assert failed.returncode == 2, failed.stderr
        assert says in failed.stderr and "Traceback" not in failed.stderr
        assert len(failed.stderr.strip().splitlines()) == 1
    assert list(out_dir.iterdir()) == []


def test_out_of_scope_and_refused_exports_leave_no_file(live: Live, out_dir: Path) -> None:
    rec = live.upload(1)
    out = out_dir / "bundle.zip"
    outside = export(live, rec.id, out, "--unencrypted", token=live.other_officer, check=False)
    assert_out_of_scope(outside)
    short = export(live, rec.id, out, "--unencrypted", "--purpose", "short", check=False)
    assert short.returncode != 0 and "purpose" in short.stderr
    assert list(out_dir.iterdir()) == []
