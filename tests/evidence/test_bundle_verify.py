"""verify.py, the verifier inside every evidence bundle: valid bundles pass, every tamper is named.

Most cases import evidence/bundle/verify.py by path (as the recipient runs it: no package) and call
its checks in-process, on bundles from tests/support/bundle_forge.py (the real builder,
api.bundle.assemble, over an invented recording; and the insider's tools: re-signing with the
service key). A representative handful run `python verify.py` as a subprocess in a fresh
virtualenv that holds PyNaCl and nothing else, on the oldest Python the bundle promises (3.9)
when this machine has it, and one case goes end to end through the service's export route.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import random
import stat
import sys
import zipfile
from pathlib import Path
from types import ModuleType
from typing import Any

import nacl.pwhash
import pytest
from nacl.public import PrivateKey

from evidence.bundle.crypto import passphrase_key
from tests.support import bundle_forge as forge
from tests.support.verifier import run_verify

REPO = Path(__file__).resolve().parents[2]
VERIFY = REPO / "evidence" / "bundle" / "verify.py"


def load_verifier() -> ModuleType:
    spec = importlib.util.spec_from_file_location("countersign_bundle_verify", VERIFY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


V = load_verifier()
BASE = forge.bundle()
SERVICE = bytes(forge.service_key().verify_key)
OTHER_SERVICE = bytes(forge.other_service_key().verify_key)
REC = f"{forge.RECORDING_ID}"
FAST_KDF = {
    "alg": "argon2id13",
    "salt": "00112233445566778899aabbccddeeff",
    "opslimit": nacl.pwhash.argon2id.OPSLIMIT_MIN,
    "memlimit": nacl.pwhash.argon2id.MEMLIMIT_MIN,
}


def verify(members: dict[str, bytes], service_key: bytes | None = None) -> tuple[Any, Any]:
    """(findings, failure or None), as verify.py's checks 2-8 leave them."""
    found = V.Findings()
    try:
        V.verify_inner(members, service_key, found)
    except V.Check as failure:
        return found, failure
    return found, None


def verdict(members: dict[str, bytes], service_key: bytes | None = None) -> str:
    found, failure = verify(members, service_key)
    return V.verdict_of(found, failure)


def invalid(members: dict[str, bytes], file: str, check: str = "", service_key: bytes | None = None) -> Any:
    """Assert INVALID, that the first failure names `file`, and (if given) that its check says `check`."""
    _, failure = verify(members, service_key)
    assert failure is not None, f"expected INVALID naming {file}; it verified"
    assert failure.file == file, failure.reason("en")
    assert check in failure.en, failure.reason("en")
    assert failure.ja and failure.reason("ja").startswith(file)
    return failure


def copy() -> dict[str, bytes]:
    return dict(BASE)


def entry_seq(members: dict[str, bytes], action: str, index: int | None = None) -> int:
    for name in sorted(members):
        if name.startswith("custody/entries/"):
            entry = json.loads(members[name])
            if entry["action"] == action and (index is None or entry["detail"].get("index") == index):
                return int(entry["seq"])
    raise AssertionError(f"no {action} entry")


# --------------------------------------------------------------------------- valid bundles


def test_a_valid_bundle_is_valid_against_its_own_key_and_the_published_one() -> None:
    found, failure = verify(copy())
    assert failure is None
    assert V.verdict_of(found, None) == "VALID"
    assert found.key_from_bundle
    found, failure = verify(copy(), SERVICE)
    assert failure is None and not found.key_from_bundle
    assert found.segments == 3 and found.complete


def test_the_report_says_what_the_bundle_holds_in_english_and_japanese() -> None:
    found, _ = verify(copy())
    en = V.as_text(found, None, "en")
    ja = V.as_text(found, None, "ja")
    assert en.startswith("Countersign evidence bundle: VALID\n")
    assert ja.startswith("Countersign 証拠バンドル: 有効 (VALID)\n")
    fp = V.grouped(hashlib.sha256(SERVICE).hexdigest())
    for text in (en, ja):
        assert "北口窓口 1番 (dev-north-1)" in text and "北口窓口 (north)" in text
        assert forge.NOTICE_TEXT.splitlines()[0] in text
        assert "S-0042" in text and "2026-03-02T10:00:07+09:00" in text
        assert "山田 花子" in text and "api:evidence:export" in text and "警察への提出 K-2026-001" in text
        assert fp in text
    assert "3 of 3 complete" in en and "3 件中 3 件、完全" in ja
    assert "compare this fingerprint" in en.lower() and "照合してください" in ja
    given, _ = verify(copy(), SERVICE)
    assert "compare this fingerprint" not in V.as_text(given, None, "en").lower()


def test_a_partial_recording_is_valid_partial_never_valid() -> None:
    members = forge.bundle(forge.Facts(segments=2, final=False))
    found, failure = verify(members)
    assert failure is None
    assert V.verdict_of(found, None) == "VALID (PARTIAL)"
    text = V.as_text(found, None, "en")
    assert "partial: segments 0..1; the recording was cut short (device lost)" in text
    assert "the device sent nothing after them" in text  # the manifest's partial reason
    assert V.as_json(found, None)["partial"] is True
    # ...and an insider who calls it complete is caught: the chain has no final segment.
    forge.edit_json(members, "manifest.json", lambda m: m.update(complete=True))
    forge.resign_sums(members)
    invalid(members, "manifest.json", "complete is true, but the segment chain says false")


def test_a_recording_with_no_segment_at_all_is_partial() -> None:
    members = forge.bundle(forge.Facts(segments=0, final=False))
    assert verdict(members) == "VALID (PARTIAL)"
    found, failure = verify(members)
    assert failure is None  # what it is (nothing captured), not a failed check
    assert "none: no audio was captured (consent was given, no segment arrived)" in V.as_text(found, None, "en")
    assert "音声は記録されていません" in V.as_text(found, None, "ja")


def test_an_objection_record_has_no_audio_and_is_valid() -> None:
    members = forge.bundle(forge.Facts(segments=0, outcome="objected"))
    found, failure = verify(members)
    assert failure is None and V.verdict_of(found, None) == "VALID"
    assert "no audio" in V.as_text(found, None, "en")


def test_json_report() -> None:
    found, _ = verify(copy(), SERVICE)
    report = V.as_json(found, None)
    assert report["verdict"] == "VALID" and report["valid"] and not report["partial"]
    assert report["service_key"]["fingerprint"] == hashlib.sha256(SERVICE).hexdigest()
    assert report["segments"] == {"count": 3, "final": True, "complete": True}
    assert report["custody"][0]["action"] == "api:device:enrol"
    json.dumps(report)


# --------------------------------------------------------------------------- every byte of every member

FLIPS = [(name, where, key) for name in sorted(BASE) for where in ("first", "middle", "last") for key in ("", "given")]


@pytest.mark.parametrize(("name", "where", "key"), FLIPS, ids=[f"{n}-{w}{'-key' if k else ''}" for n, w, k in FLIPS])
def test_a_single_flipped_byte_anywhere_is_invalid_and_named(name: str, where: str, key: str) -> None:
    """With --service-key (`key`) or trusting the bundle's own service_key.pem."""
    members = copy()
    data = members[name]
    at = {"first": 0, "middle": len(data) // 2, "last": len(data) - 1}[where]
    members[name] = forge.flip(data, at)
    _, failure = verify(members, SERVICE if key else None)
    assert failure is not None, f"a flip at {where} of {name} verified"
    assert name in failure.reason("en")
    if name in ("SHA256SUMS", "SHA256SUMS.sig"):
        assert failure.file == "SHA256SUMS" and "service signature invalid" in failure.en
    elif name == "service_key.pem" and not key:  # the key everything else is checked against
        assert failure.file == name or (failure.file == "SHA256SUMS" and "signature invalid" in failure.en)
    else:  # everything else is caught by SHA256SUMS, whose signature holds
        assert failure.file == name and failure.en == "SHA-256 does not match SHA256SUMS"


def test_the_flip_matrix_covers_every_member() -> None:
    assert {n for n, _, _ in FLIPS} == set(BASE)
    assert len(FLIPS) == 6 * len(BASE) >= 180


# --------------------------------------------------------------------------- the insider with the service key


def test_an_edited_audio_byte_with_re_signed_sums_breaks_the_device_signature_chain() -> None:
    members = copy()
    members["segments/000001.flac"] = forge.flip(members["segments/000001.flac"], 100)
    forge.resign_sums(members)
    invalid(members, "segments/000001.flac", "not the plaintext hash the device signed")


def test_swapped_segments() -> None:
    members = copy()
    for kind in ("flac", "statement", "sig"):
        a, b = f"segments/000001.{kind}", f"segments/000002.{kind}"
        members[a], members[b] = members[b], members[a]
    invalid(dict(members), "segments/000001.flac", "SHA-256 does not match SHA256SUMS")
    forge.resign_sums(members)
    invalid(members, "segments/000001.statement", "is segment 2, in the place of segment 1")


def test_a_dropped_segment() -> None:
    members = copy()
    for kind in ("flac", "statement", "sig"):
        del members[f"segments/000001.{kind}"]
    forge.resign_sums(members)
    invalid(members, "segments/000001.flac", "missing")
    # renumbered to hide the gap: segment 2's statement still says 2 (and its link skips 1)
    for kind in ("flac", "statement", "sig"):
        members[f"segments/000001.{kind}"] = members.pop(f"segments/000002.{kind}")
    forge.edit_json(members, "manifest.json", lambda m: m.update(segments=2))
    forge.resign_sums(members)
    invalid(members, "segments/000001.statement", "is segment 2, in the place of segment 1")


def test_only_the_audio_of_a_segment_dropped() -> None:
    members = copy()
    del members["segments/000002.flac"]
    forge.resign_sums(members)
    invalid(members, "segments/000002.flac", "missing")


def test_the_last_segment_dropped_is_caught_by_the_upload_log() -> None:
    members = copy()
    for kind in ("flac", "statement", "sig"):
        del members[f"segments/000002.{kind}"]
    forge.edit_json(members, "manifest.json", lambda m: m.update(segments=2, complete=False, partial_reason="lost"))
    forge.resign_sums(members)
    seq = entry_seq(members, "api:segment:upload", 2)
    invalid(members, f"custody/entries/{seq:012d}.json", "records segment 2 being received")


def test_a_cut_short_recording_can_at_worst_pass_as_partial_never_as_complete() -> None:
    """An insider who also hides the last upload entry: the chain itself still says it has no end."""
    members = copy()
    for kind in ("flac", "statement", "sig"):
        del members[f"segments/000002.{kind}"]
    seq = entry_seq(members, "api:segment:upload", 2)
    del members[f"custody/entries/{seq:012d}.json"]
    forge.edit_json(members, "custody/proofs.json", lambda p: p.pop(f"{seq:012d}"))
    forge.edit_json(members, "manifest.json", lambda m: m.update(segments=2, complete=False, partial_reason="lost"))
    forge.resign_sums(members)
    assert verdict(members) == "VALID (PARTIAL)"
    forge.edit_json(members, "manifest.json", lambda m: m.update(complete=True))
    forge.resign_sums(members)
    invalid(members, "manifest.json", "complete is true")


def test_a_custody_entry_removed() -> None:
    members = copy()
    seq = entry_seq(members, "api:segment:upload", 1)
    del members[f"custody/entries/{seq:012d}.json"]
    forge.resign_sums(members)
    invalid(members, "custody/proofs.json", f"a proof for {seq:012d}, whose entry is not in the bundle")
    forge.edit_json(members, "custody/proofs.json", lambda p: p.pop(f"{seq:012d}"))
    forge.resign_sums(members)
    invalid(members, "segments/000001.statement", "does not record this segment being received")


def test_the_enrolment_entry_removed() -> None:
    members = copy()
    seq = entry_seq(members, "api:device:enrol")
    del members[f"custody/entries/{seq:012d}.json"]
    forge.edit_json(members, "custody/proofs.json", lambda p: p.pop(f"{seq:012d}"))
    forge.resign_sums(members)
    invalid(members, "device/enrolment.json", f"its audit entry (seq {seq}) is not in custody/entries")


def test_a_custody_entry_edited() -> None:
    members = copy()
    seq = entry_seq(members, "api:evidence:read")
    name = f"custody/entries/{seq:012d}.json"
    entry = json.loads(members[name])
    entry["purpose"] = "routine check"
    members[name] = V.canonical_json(entry)
    forge.resign_sums(members)
    invalid(members, name, "inclusion proof does not reach the tree head")


def test_an_entry_about_another_recording_slipped_in() -> None:
    members = copy()
    seq = entry_seq(members, "api:evidence:read")
    name = f"custody/entries/{seq:012d}.json"
    entry = json.loads(members[name])
    entry["target"] = "recording:someone-else"
    members[name] = V.canonical_json(entry)
    forge.resign_sums(members)
    invalid(members, name, "inclusion proof does not reach")  # the proof fails before relevance is asked


def test_a_forged_inclusion_proof() -> None:
    members = copy()
    seq = entry_seq(members, "api:recording:create")
    key = f"{seq:012d}"

    def forge_path(proofs: dict[str, Any]) -> None:
        proofs[key]["path"][0] = hashlib.sha256(b"forged").hexdigest()

    forge.edit_json(members, "custody/proofs.json", forge_path)
    forge.resign_sums(members)
    invalid(members, f"custody/entries/{key}.json", "inclusion proof does not reach the tree head")


def test_a_proof_for_another_leaf_or_tree() -> None:
    members = copy()
    key = f"{entry_seq(members, 'api:recording:create'):012d}"
    forge.edit_json(members, "custody/proofs.json", lambda p: p[key].update(leaf_index=0))
    forge.resign_sums(members)
    invalid(members, f"custody/entries/{key}.json", "not for leaf seq-1")
    members = copy()
    forge.edit_json(members, "custody/proofs.json", lambda p: p[key].update(tree_size=p[key]["tree_size"] + 1))
    forge.resign_sums(members)
    invalid(members, f"custody/entries/{key}.json", "not for leaf seq-1")


def test_a_tree_head_json_that_disagrees_with_the_signed_one() -> None:
    members = copy()
    forge.edit_json(members, "custody/tree_head.json", lambda h: h.update(size=h["size"] + 1))
    forge.resign_sums(members)
    invalid(members, "custody/tree_head.json", "does not agree")


def test_sums_signed_by_another_key() -> None:
    members = copy()
    forge.resign_sums(members, forge.other_service_key())
    invalid(members, "SHA256SUMS", "service signature invalid")


def test_a_whole_bundle_re_signed_by_another_service_key() -> None:
    """Valid to itself (it is a consistent forgery), INVALID against the organisation's published key."""
    other = forge.other_service_key()
    members = forge.bundle(forge.Facts(service=other))
    found, failure = verify(members)
    assert failure is None and found.key_from_bundle
    assert V.fingerprint(found.service_key) != hashlib.sha256(SERVICE).hexdigest()  # what the reader compares
    invalid(members, "SHA256SUMS", "service signature invalid", service_key=SERVICE)


def test_a_manifest_naming_another_key() -> None:
    members = copy()
    forge.edit_json(members, "manifest.json", lambda m: m["service"].update(public_key=OTHER_SERVICE.hex()))
    forge.resign_sums(members)
    invalid(members, "manifest.json", "not the key in service_key.pem")


def test_service_key_pem_swapped_but_sums_signed_by_the_real_key() -> None:
    members = copy()
    from api.bundle.assemble import public_key_pem

    members["service_key.pem"] = public_key_pem(OTHER_SERVICE)
    forge.resign_sums(members)
    invalid(members, "service_key.pem", "not the service key given with --service-key", service_key=SERVICE)


def test_a_notice_changed_by_one_character() -> None:
    members = copy()
    text = forge.NOTICE_TEXT.replace("録音されます", "録音されません", 1)
    members["consent/notice.txt"] = text.encode("utf-8")
    forge.resign_sums(members)
    invalid(members, "consent/notice.txt", "not the notice hash in the consent record")


def test_a_device_key_swapped_for_another_devices() -> None:
    """The insider enrols another device's key in the bundle: the device's own signatures then fail."""
    members = copy()
    _swap_enrolled_key(members)
    invalid(members, "recording/header.bin", "device signature invalid")


def test_a_device_key_swapped_and_the_recording_re_signed_with_it() -> None:
    """Even with the other device's key for every signature, the log recorded the real enrolment."""
    members = forge.bundle(forge.Facts(device=forge.other_device_key()))
    real = copy()
    for name in ("custody/entries/" + n.rsplit("/", 1)[1] for n in real if n.startswith("custody/entries/")):
        members[name] = real[name]  # the log as it really is: it enrolled the real device key
    members["custody/proofs.json"] = real["custody/proofs.json"]
    for name in ("custody/tree_head.bin", "custody/tree_head.sig", "custody/tree_head.json"):
        members[name] = real[name]
    forge.resign_sums(members)
    seq = entry_seq(members, "api:device:enrol")
    invalid(members, f"custody/entries/{seq:012d}.json", "does not record the enrolment")


def _swap_enrolled_key(members: dict[str, bytes]) -> None:
    from api.bundle.assemble import public_key_pem

    other = bytes(forge.other_device_key().verify_key)
    enrolment = json.loads(members["device/enrolment.json"])
    enrolment["public_key"] = other.hex()
    members["device/enrolment.json"] = V.canonical_json(enrolment)
    members["device/device_key.pem"] = public_key_pem(other)
    forge.sign(members, "device/enrolment.json", forge.service_key())
    forge.resign_sums(members)


def test_device_key_pem_not_the_enrolled_key() -> None:
    from api.bundle.assemble import public_key_pem

    members = copy()
    members["device/device_key.pem"] = public_key_pem(bytes(forge.other_device_key().verify_key))
    forge.resign_sums(members)
    invalid(members, "device/device_key.pem", "not the key the service enrolled")


def test_a_segment_from_another_recording() -> None:
    other = forge.bundle(forge.Facts(flacs=[forge.flac_bytes(7), forge.flac_bytes(8), forge.flac_bytes(9)]))
    members = copy()
    for kind in ("flac", "statement", "sig"):
        members[f"segments/000001.{kind}"] = other[f"segments/000001.{kind}"]
    forge.resign_sums(members)
    invalid(members, "segments/000001.statement", "previous link is not SHA-256 of segments/000000.statement")


def test_an_unlisted_or_unexpected_file() -> None:
    members = copy()
    members["notes.txt"] = b"hello"
    invalid(dict(members), "notes.txt", "not listed in SHA256SUMS")
    members = copy()
    members["segments/000009.flac"] = b"x"
    forge.resign_sums(members)
    invalid(members, "segments/000009.flac", "not one of the 3 segments")


# --------------------------------------------------------------------------- garbage in, a reason out


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("manifest.json", b"{not json"),
        ("manifest.json", b'{"format": "countersign-evidence-bundle/v1", "format": "x"}'),
        ("manifest.json", b"[]"),
        ("recording/status.json", b"\xff\xfe"),
        ("custody/proofs.json", b'{"000000000004": 7}'),
        ("custody/actors.json", b"null"),
        ("recording/header.bin", b"countersign/recording-header/v1\x00{"),
        ("custody/tree_head.bin", b"short"),
        ("segments/000000.statement", b"short"),
        ("device/device_key.pem", b"-----BEGIN PUBLIC KEY-----\n!!!\n-----END PUBLIC KEY-----\n"),
    ],
)
def test_garbage_re_signed_is_invalid_not_a_traceback(name: str, content: bytes) -> None:
    members = copy()
    members[name] = content
    forge.resign_sums(members)
    _, failure = verify(members)
    assert failure is not None
    assert failure.file == name or failure.file.startswith("custody/entries/"), failure.reason("en")


@pytest.mark.parametrize("name", ["SHA256SUMS", "SHA256SUMS.sig", "service_key.pem", "manifest.json"])
def test_a_missing_member(name: str) -> None:
    members = copy()
    del members[name]
    if name not in ("SHA256SUMS", "SHA256SUMS.sig"):
        forge.resign_sums(members)
    _, failure = verify(members)
    assert failure is not None and failure.file == name and "missing" in failure.en


def test_sums_out_of_order_or_malformed() -> None:
    members = copy()
    lines = members["SHA256SUMS"].decode().splitlines(keepends=True)
    members["SHA256SUMS"] = "".join([lines[1], lines[0], *lines[2:]]).encode()
    forge.sign(members, "SHA256SUMS", forge.service_key(), "SHA256SUMS.sig")
    invalid(members, "SHA256SUMS", "out of order")
    members["SHA256SUMS"] = b"not a sums file\n"
    forge.sign(members, "SHA256SUMS", forge.service_key(), "SHA256SUMS.sig")
    invalid(members, "SHA256SUMS", "line 1")


def test_the_terminal_sees_no_escape_sequences() -> None:
    assert V.shown("a\x1b[2Jb\u202ec") == "a\\u001b[2Jb\\u202ec"
    assert V.shown("line\nnext", keep_newlines=True) == "line\nnext"


# --------------------------------------------------------------------------- Merkle


def test_inclusion_matches_the_forge_and_evidence_merkle_on_random_trees() -> None:
    merkle = pytest.importorskip("evidence.merkle")
    rng = random.Random(6962)
    for size in [*range(1, 40), 63, 64, 65, 127, 128, 129, 1000]:
        leaves = [hashlib.sha256(rng.randbytes(8)).digest() for _ in range(size)]
        root = forge.mth(leaves)
        assert merkle.root(leaves) == root
        for index in {0, size - 1, rng.randrange(size), rng.randrange(size)}:
            path = forge.path(index, leaves)
            assert merkle.inclusion_proof(index, size, lambda lv, i, lf=leaves: _subtree(lf, lv, i)) == path
            assert V.verify_inclusion(leaves[index], index, size, path, root)
            assert merkle.verify_inclusion(leaves[index], index, size, path, root)
            wrong = [*path[:-1], bytes(32)] if path else [bytes(32)]
            assert not V.verify_inclusion(leaves[index], index, size, wrong, root)
            assert not V.verify_inclusion(leaves[index], index, size, [*path, bytes(32)], root)
            for i, n in ((index + 1, size), (index, size + 1), (index ^ 1, size), (index, size - 1), (-1, size)):
                # a wrong position or size fails, or passes, exactly as in evidence.merkle
                assert V.verify_inclusion(leaves[index], i, n, path, root) == merkle.verify_inclusion(
                    leaves[index], i, n, path, root
                ), (index, size, i, n)


def _subtree(leaves: list[bytes], level: int, index: int) -> bytes:
    return forge.mth(leaves[index << level : (index + 1) << level])


def test_rfc_6962_vectors() -> None:
    inputs = ("", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f")
    leaves = [V.leaf_hash(bytes.fromhex(x)) for x in inputs]
    root = bytes.fromhex("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328")
    path = [
        bytes.fromhex("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
        bytes.fromhex("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
        bytes.fromhex("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
    ]
    assert V.verify_inclusion(leaves[5], 5, 8, path, root)
    assert forge.mth(leaves) == root


# --------------------------------------------------------------------------- the outer layer, in-process


def _outer_members(outer: bytes) -> dict[str, bytes]:
    return V.read_zip(outer, "bundle.zip")


def test_decrypts_what_write_outer_writes_with_a_key_and_a_passphrase() -> None:
    inner = forge.zipped(BASE)
    recipient = PrivateKey.generate()
    outer = _outer_members(forge.encrypted(inner, recipient))
    assert V.open_outer(outer, V.Opener(private_key=bytes(recipient))) == inner
    derived = passphrase_key(b"correct horse", FAST_KDF)
    outer = _outer_members(forge.encrypted(inner, derived, FAST_KDF))
    assert V.open_outer(outer, V.Opener(passphrase=lambda: b"correct horse")) == inner


def test_wrong_key_or_passphrase() -> None:
    inner = forge.zipped(BASE)
    outer = _outer_members(forge.encrypted(inner, PrivateKey.generate()))
    with pytest.raises(V.Check) as caught:
        V.open_outer(outer, V.Opener(private_key=bytes(PrivateKey.generate())))
    assert caught.value.file == "bundle.enc" and "cannot be opened with this key" in caught.value.en
    outer = _outer_members(forge.encrypted(inner, passphrase_key(b"right", FAST_KDF), FAST_KDF))
    with pytest.raises(V.Check) as caught:
        V.open_outer(outer, V.Opener(passphrase=lambda: b"wrong"))
    assert caught.value.file == "bundle.enc"


@pytest.mark.parametrize("damage", ["truncated", "cut-at-chunk", "flipped", "appended", "header"])
def test_altered_bundle_enc(damage: str) -> None:
    recipient = PrivateKey.generate()
    outer = _outer_members(forge.encrypted(forge.zipped(BASE), recipient))
    enc = outer["bundle.enc"]
    outer["bundle.enc"] = {
        "truncated": enc[: len(enc) - 10],
        "cut-at-chunk": enc[:24],
        "flipped": forge.flip(enc, len(enc) // 2),
        "appended": enc + b"\x00",
        "header": forge.flip(enc, 3),
    }[damage]
    with pytest.raises(V.Check) as caught:
        V.open_outer(outer, V.Opener(private_key=bytes(recipient)))
    assert caught.value.file == "bundle.enc"


def test_hostile_kdf_parameters_are_refused_before_any_work() -> None:
    derived = passphrase_key(b"p", FAST_KDF)
    outer = _outer_members(forge.encrypted(forge.zipped(BASE), derived, dict(FAST_KDF, memlimit=1 << 40)))
    with pytest.raises(V.Check, match="unreasonable"):
        V.open_outer(outer, V.Opener(passphrase=lambda: b"p"))


def test_no_key_for_an_encrypted_bundle_is_a_usage_error() -> None:
    outer = _outer_members(forge.encrypted(forge.zipped(BASE), PrivateKey.generate()))
    with pytest.raises(V.Usage):
        V.open_outer(outer, V.Opener())


# --------------------------------------------------------------------------- main(), in-process


def _main(tmp_path: Path, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = V.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_main_on_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "inner.zip"
    good.write_bytes(forge.zipped(BASE))
    code, out, _ = _main(tmp_path, capsys, str(good), "--lang", "en", "--service-key", SERVICE.hex())
    assert code == 0 and out.startswith("Countersign evidence bundle: VALID\n")
    code, out, _ = _main(tmp_path, capsys, str(good), "--json")
    assert code == 0 and json.loads(out)["verdict"] == "VALID"
    for garbage in (b"", b"PK\x03\x04garbage", b"not a zip at all", forge.zipped(BASE)[:1000]):
        bad = tmp_path / "bad.zip"
        bad.write_bytes(garbage)
        code, out, err = _main(tmp_path, capsys, str(bad), "--lang", "en")
        assert code == 1 and "INVALID" in out and "Traceback" not in out + err
    code, _, err = _main(tmp_path, capsys, str(tmp_path / "absent.zip"))
    assert code == 2 and err
    code, _, err = _main(tmp_path, capsys, str(good), "--service-key", "nonsense")
    assert code == 2 and "--service-key" in err


def test_extract(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipient = PrivateKey.generate()
    key = tmp_path / "recipient.key"
    key.write_text(bytes(recipient).hex() + "\n")
    outer = tmp_path / "bundle.zip"
    outer.write_bytes(forge.encrypted(forge.zipped(BASE), recipient))
    code, _, _ = _main(tmp_path, capsys, str(outer), "--key", str(key), "--extract", str(tmp_path / "out"))
    assert code == 0
    for name, data in BASE.items():
        assert (tmp_path / "out" / name).read_bytes() == data
    assert stat.S_IMODE((tmp_path / "out" / "manifest.json").stat().st_mode) == 0o600
    code, _, err = _main(tmp_path, capsys, str(outer), "--key", str(key), "--extract", str(tmp_path / "out"))
    assert code == 2 and "empty" in err  # never written over


def test_extract_refuses_names_that_escape() -> None:
    assert not V.safe_name("../x") and not V.safe_name("/etc/x") and not V.safe_name("a\\b") and not V.safe_name("")
    assert V.safe_name("segments/000000.flac")


def test_keygen(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "recipient.key"
    code, out, _ = _main(tmp_path, capsys, "keygen", str(path), "--lang", "en")
    assert code == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    private = PrivateKey(bytes.fromhex(path.read_text().strip()))
    assert out.strip() == bytes(private.public_key).hex()
    code, _, _ = _main(tmp_path, capsys, "keygen", str(path))
    assert code == 2 and private == PrivateKey(bytes.fromhex(path.read_text().strip()))


# --------------------------------------------------------------------------- the real thing: a fresh venv


def test_fresh_venv_valid_encrypted_bundle_ja_and_en(bare_python: Path, tmp_path: Path) -> None:
    keygen = run_verify(bare_python, tmp_path, "keygen", "recipient.key")
    assert keygen.returncode == 0, keygen.stderr
    public = bytes.fromhex(keygen.stdout.strip())
    outer = io.BytesIO()
    from evidence.bundle.crypto import write_outer

    write_outer(outer, [forge.zipped(BASE)], public)
    (tmp_path / "bundle.zip").write_bytes(outer.getvalue())
    ja = run_verify(bare_python, tmp_path, "bundle.zip", "--key", "recipient.key", LANG="ja_JP.UTF-8")
    assert ja.returncode == 0, ja.stdout + ja.stderr
    assert ja.stdout.startswith("Countersign 証拠バンドル: 有効 (VALID)")
    assert "照合してください" in ja.stdout
    en = run_verify(bare_python, tmp_path, "bundle.zip", "--key", "recipient.key", "--lang", "en",
                    "--service-key", SERVICE.hex())  # fmt: skip
    assert en.returncode == 0 and en.stdout.startswith("Countersign evidence bundle: VALID"), en.stdout + en.stderr
    js = run_verify(bare_python, tmp_path, "bundle.zip", "--key", "recipient.key", "--json")
    assert js.returncode == 0 and json.loads(js.stdout)["verdict"] == "VALID"


def test_fresh_venv_passphrase_and_wrong_passphrase(bare_python: Path, tmp_path: Path) -> None:
    derived = passphrase_key("合言葉 correct horse".encode(), FAST_KDF)
    (tmp_path / "bundle.zip").write_bytes(forge.encrypted(forge.zipped(BASE), derived, FAST_KDF))
    (tmp_path / "pass.txt").write_text("合言葉 correct horse\n", encoding="utf-8")
    ok = run_verify(bare_python, tmp_path, "bundle.zip", "--passphrase-file", "pass.txt", "--lang", "en")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    env = run_verify(bare_python, tmp_path, "bundle.zip", "--lang", "en", COUNTERSIGN_BUNDLE_PASSPHRASE="wrong")
    assert env.returncode == 1 and "bundle.enc: cannot be opened with this key" in env.stdout
    none = run_verify(bare_python, tmp_path, "bundle.zip", "--lang", "en")  # no TTY, no passphrase
    assert none.returncode == 2 and "Traceback" not in none.stderr


def test_fresh_venv_tampered_and_partial_and_garbage(bare_python: Path, tmp_path: Path) -> None:
    members = copy()
    members["segments/000001.flac"] = forge.flip(members["segments/000001.flac"], 0)
    (tmp_path / "flipped.zip").write_bytes(forge.zipped(members))
    done = run_verify(bare_python, tmp_path, "flipped.zip", "--lang", "en")
    assert done.returncode == 1
    assert "INVALID" in done.stdout and "segments/000001.flac: SHA-256 does not match SHA256SUMS" in done.stdout
    (tmp_path / "partial.zip").write_bytes(forge.zipped(forge.bundle(forge.Facts(segments=2, final=False))))
    done = run_verify(bare_python, tmp_path, "partial.zip", "--lang", "en")
    assert done.returncode == 0 and "VALID (PARTIAL)" in done.stdout
    other = forge.bundle(forge.Facts(service=forge.other_service_key()))
    (tmp_path / "other.zip").write_bytes(forge.zipped(other))
    done = run_verify(bare_python, tmp_path, "other.zip", "--lang", "en", "--service-key", SERVICE.hex())
    assert done.returncode == 1 and "SHA256SUMS: service signature invalid" in done.stdout
    (tmp_path / "garbage.zip").write_bytes(b"PK\x05\x06" + bytes(18))
    done = run_verify(bare_python, tmp_path, "garbage.zip")
    assert done.returncode == 1 and "Traceback" not in done.stdout + done.stderr
    done = run_verify(bare_python, tmp_path, "--no-such-flag")
    assert done.returncode == 2


def test_end_to_end_an_officers_export_verifies(bare_python: Path, tmp_path: Path, client: Any, world: Any) -> None:
    """A simulated device records, the officer exports through the API; the recipient verifies."""
    from tests.support.bundles import recorded_bundle

    exported = recorded_bundle(client, world, segments=3)
    (tmp_path / "bundle.zip").write_bytes(exported.outer)
    (tmp_path / "recipient.key").write_text(bytes(exported.recipient).hex())
    with zipfile.ZipFile(io.BytesIO(exported.outer)) as outer:
        shipped = outer.read("verify.py")
    assert shipped == VERIFY.read_bytes()  # the verifier ships verbatim
    (tmp_path / "verify.py").write_bytes(shipped)
    service = bytes(client.app.state.services.keys.signing_key.verify_key).hex()
    done = run_verify(bare_python, tmp_path, "bundle.zip", "--key", "recipient.key", "--service-key", service,
                      "--lang", "en")  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("Countersign evidence bundle: VALID\n")
    assert "3 of 3 complete" in done.stdout and "api:evidence:export" in done.stdout
