"""The golden evidence bundle: the format, frozen.

tests/evidence/vectors/golden-bundle.zip was made by `python -m tests.evidence.vectors.make_golden`
from fixed inputs (keys from fixed seeds, fixed times, three short segments of synthetic audio).
verify.py must accept it, and rebuilding it from the same inputs with the builder
(api.bundle.assemble) must reproduce every format member byte for byte: a change to the header
bytes, a statement, the enrolment statement, the manifest, the tree head, an entry or a proof is a
format change, and this test is where it is noticed. README.txt, README.ja.txt and verify.py are
the shipped texts, free to change; only their SHA256SUMS lines (and so the signature) follow them.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.evidence.vectors.make_golden import GOLDEN, SEGMENTS, existing_flacs, golden_facts
from tests.support import bundle_forge as forge

VERIFY = Path(__file__).resolve().parents[2] / "evidence" / "bundle" / "verify.py"
SHIPPED_TEXTS = {"README.txt", "README.ja.txt", "verify.py"}
SIGNED_OVER_TEXTS = {"SHA256SUMS", "SHA256SUMS.sig"}  # cover the texts' hashes too


def _verifier() -> ModuleType:
    spec = importlib.util.spec_from_file_location("countersign_bundle_verify_golden", VERIFY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def golden() -> dict[str, bytes]:
    return forge.unzipped(GOLDEN.read_bytes())


@pytest.fixture(scope="module")
def rebuilt() -> dict[str, bytes]:
    return forge.bundle(golden_facts(existing_flacs()))


def test_the_golden_bundle_is_small_and_has_what_the_spec_lists(golden: dict[str, bytes]) -> None:
    assert GOLDEN.stat().st_size < 200_000
    for name in ("manifest.json", "recording/header.bin", "device/enrolment.json", "custody/tree_head.bin",
                 "custody/proofs.json", "recording/status.json", "service_key.pem", "consent/notice.txt"):  # fmt: skip
        assert name in golden
    assert sum(n.endswith(".statement") for n in golden) == SEGMENTS


def test_verify_py_accepts_the_golden_bundle(golden: dict[str, bytes]) -> None:
    verifier = _verifier()
    found = verifier.Findings()
    verifier.verify_inner(golden, bytes(forge.service_key().verify_key), found)
    assert verifier.verdict_of(found, None) == "VALID"
    assert found.segments == SEGMENTS


def test_rebuilding_reproduces_every_format_member(golden: dict[str, bytes], rebuilt: dict[str, bytes]) -> None:
    assert set(rebuilt) == set(golden)
    changed = [
        name
        for name in sorted(golden)
        if name not in SHIPPED_TEXTS | SIGNED_OVER_TEXTS and rebuilt[name] != golden[name]
    ]
    assert not changed, f"format members changed (regenerate only for a deliberate format change): {changed}"


def test_the_sums_lines_of_format_members_are_unchanged(golden: dict[str, bytes], rebuilt: dict[str, bytes]) -> None:
    def lines(members: dict[str, bytes]) -> dict[str, str]:
        out = {}
        for line in members["SHA256SUMS"].decode().splitlines():
            digest, name = line.split("  ", 1)
            if name not in SHIPPED_TEXTS:
                out[name] = digest
        return out

    assert lines(rebuilt) == lines(golden)


def test_the_golden_statements_are_the_documented_layout(golden: dict[str, bytes]) -> None:
    import hashlib

    previous = hashlib.sha256(golden["recording/header.bin"]).digest()
    for index in range(SEGMENTS):
        statement = golden[f"segments/{index:06d}.statement"]
        assert len(statement) == 141 and statement.startswith(b"countersign/segment/v1\x00")
        assert statement[77:109] == hashlib.sha256(golden[f"segments/{index:06d}.flac"]).digest()
        assert statement[109:141] == previous
        assert int.from_bytes(statement[40:44], "big") == index and statement[44] == (index == SEGMENTS - 1)
        previous = hashlib.sha256(statement).digest()
    assert golden["recording/header.bin"].startswith(b"countersign/recording-header/v1\x00")
    assert golden["custody/tree_head.bin"].startswith(b"countersign/audit-tree-head/v1\n")
