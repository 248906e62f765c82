"""Unit tests of the evidence format contract (envelope, chain, audio), no server.

These pin down what the recorder and the service agree on: an envelope opens
only with its key and only at its place in its recording; a chain verifies only
when every segment is present, in order, from this recording and this device,
after an unaltered header.
"""

from __future__ import annotations

import dataclasses
import hashlib
import uuid
from typing import Any

import nacl.signing
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evidence import FORMAT_VERSION, audio
from evidence.chain import (
    ChainReport,
    SegmentStatement,
    SignedSegment,
    header_hash,
    sign_header,
    sign_statement,
    verify_chain,
    verify_header,
)
from evidence.envelope import (
    HEADER_BYTES,
    KEY_BYTES,
    NONCE_BYTES,
    TAG_BYTES,
    associated_data,
    check_envelope,
    new_data_key,
    open_segment,
    seal_segment,
)
from evidence.errors import EvidenceError, FormatError, IntegrityError

# Hypothesis: no example database in the working tree, no wall-clock deadline (CI machines vary).
HYPOTHESIS = settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

RID = uuid.UUID("00112233-4455-6677-8899-aabbccddeeff")


# --------------------------------------------------------------------------- envelope


def test_envelope_round_trip() -> None:
    key = new_data_key()
    assert len(key) == KEY_BYTES
    plaintext = b"fLaC" + bytes(range(256)) * 4
    env = seal_segment(key, RID, 3, False, plaintext)
    assert env[0] == FORMAT_VERSION
    assert len(env) == HEADER_BYTES + len(plaintext) + TAG_BYTES
    assert plaintext not in env  # it is encrypted, not just wrapped
    assert open_segment(key, RID, 3, False, env) == plaintext


def test_envelope_nonce_is_fresh() -> None:
    key = new_data_key()
    a = seal_segment(key, RID, 0, False, b"same")
    b = seal_segment(key, RID, 0, False, b"same")
    assert a[1:HEADER_BYTES] != b[1:HEADER_BYTES]
    assert a != b


def test_envelope_every_single_byte_flip_fails() -> None:
    """Borg-style: each bit pattern change at each position is caught, and never yields plaintext."""
    key = new_data_key()
    plaintext = b"tiny segment"
    env = seal_segment(key, RID, 1, True, plaintext)
    assert len(env) == HEADER_BYTES + len(plaintext) + TAG_BYTES
    for position in range(len(env)):
        for mask in (0x01, 0x80, 0xFF):
            tampered = bytearray(env)
            tampered[position] ^= mask
            with pytest.raises((IntegrityError, FormatError)) as caught:
                opened = open_segment(key, RID, 1, True, bytes(tampered))
                pytest.fail(f"flip {mask:#04x} at byte {position} opened to {opened!r}")
            expected = FormatError if position == 0 else IntegrityError
            assert isinstance(caught.value, expected), (position, mask, caught.value)
            assert plaintext.decode() not in str(caught.value)


def test_envelope_wrong_key() -> None:
    env = seal_segment(new_data_key(), RID, 0, False, b"audio")
    with pytest.raises(IntegrityError, match="does not decrypt"):
        open_segment(new_data_key(), RID, 0, False, env)


@pytest.mark.parametrize(
    ("rid", "index", "final"),
    [
        pytest.param(uuid.UUID(int=RID.int ^ 1), 2, False, id="other-recording"),
        pytest.param(RID, 3, False, id="other-index"),
        pytest.param(RID, 1, False, id="index-minus-one"),
        pytest.param(RID, 2, True, id="final-flag-flipped"),
    ],
)
def test_envelope_bound_to_its_place(rid: uuid.UUID, index: int, final: bool) -> None:
    key = new_data_key()
    env = seal_segment(key, RID, 2, False, b"segment two")
    assert open_segment(key, RID, 2, False, env) == b"segment two"
    with pytest.raises(IntegrityError):
        open_segment(key, rid, index, final, env)


@pytest.mark.parametrize("version", [0, FORMAT_VERSION + 1, 0xFF])
def test_envelope_unknown_version(version: int) -> None:
    key = new_data_key()
    env = bytearray(seal_segment(key, RID, 0, False, b"audio"))
    env[0] = version
    with pytest.raises(FormatError, match=f"unknown envelope version {version}"):
        check_envelope(bytes(env))
    with pytest.raises(FormatError):
        open_segment(key, RID, 0, False, bytes(env))


def test_envelope_truncated() -> None:
    key = new_data_key()
    env = seal_segment(key, RID, 0, True, b"some audio bytes")
    for length in range(len(env)):
        short = env[:length]
        expected = FormatError if length < HEADER_BYTES + TAG_BYTES else IntegrityError
        with pytest.raises(expected):
            open_segment(key, RID, 0, True, short)
    with pytest.raises(FormatError, match="too short"):
        check_envelope(b"")
    with pytest.raises(IntegrityError):  # extended, not truncated: the tag no longer matches either
        open_segment(key, RID, 0, True, env + b"\x00")


def test_errors_carry_their_user_message() -> None:
    err = IntegrityError("segment 3 does not decrypt")
    assert str(err).startswith("Integrity check failed")
    assert err.detail == "segment 3 does not decrypt"
    assert isinstance(err, EvidenceError)
    assert str(FormatError()) == "Malformed evidence"


@HYPOTHESIS
@given(
    plaintext=st.binary(max_size=2048),
    rid_int=st.integers(min_value=0, max_value=2**128 - 1),
    index=st.integers(min_value=0, max_value=2**32 - 1),
    final=st.booleans(),
    change=st.sampled_from(["rid", "index", "final"]),
    data=st.data(),
)
def test_envelope_property(
    plaintext: bytes, rid_int: int, index: int, final: bool, change: str, data: st.DataObject
) -> None:
    """open(seal(x)) == x, and any change of (recording id, index, final) fails."""
    key = new_data_key()
    rid = uuid.UUID(int=rid_int)
    env = seal_segment(key, rid, index, final, plaintext)
    assert open_segment(key, rid, index, final, env) == plaintext

    other_rid, other_index, other_final = rid, index, final
    if change == "rid":
        other_rid = uuid.UUID(int=data.draw(st.integers(0, 2**128 - 1).filter(lambda v: v != rid_int), "other rid"))
    elif change == "index":
        other_index = data.draw(st.integers(0, 2**32 - 1).filter(lambda v: v != index), "other index")
    else:
        other_final = not final
    with pytest.raises(IntegrityError):
        open_segment(key, other_rid, other_index, other_final, env)


# --------------------------------------------------------------------------- chain


@dataclasses.dataclass
class Chain:
    key: nacl.signing.SigningKey
    header: dict[str, Any]
    header_signature: bytes
    segments: list[SignedSegment]

    @property
    def verify_key(self) -> nacl.signing.VerifyKey:
        return self.key.verify_key

    def verify(self, segments: list[SignedSegment] | None = None) -> ChainReport:
        chosen = self.segments if segments is None else segments
        return verify_chain(self.verify_key, self.header, self.header_signature, chosen)


def make_header(rid: uuid.UUID, consent: str = "given") -> dict[str, Any]:
    return {
        "version": FORMAT_VERSION,
        "recording_id": str(rid),
        "device_id": "device-1",
        "started_at": "2024-05-06T07:08:09+00:00",
        "sample_rate": 16000,
        "channels": 1,
        "consent": {"outcome": consent, "notice_id": "front-desk", "notice_version": 1, "language": "en"},
    }


def signed_segment(
    key: nacl.signing.SigningKey, rid: uuid.UUID, index: int, final: bool, prev: bytes, data_key: bytes
) -> SignedSegment:
    plaintext = f"segment {index} of {rid}".encode()
    env = seal_segment(data_key, rid, index, final, plaintext)
    statement = SegmentStatement(
        rid, index, final, hashlib.sha256(env).digest(), hashlib.sha256(plaintext).digest(), prev
    )
    return SignedSegment(statement, sign_statement(key, statement))


def make_chain(count: int, final: bool = True, key: nacl.signing.SigningKey | None = None) -> Chain:
    key = key or nacl.signing.SigningKey.generate()
    rid = uuid.uuid4()
    header = make_header(rid)
    data_key = new_data_key()
    prev = header_hash(header)
    segments = []
    for i in range(count):
        seg = signed_segment(key, rid, i, final and i == count - 1, prev, data_key)
        segments.append(seg)
        prev = seg.statement.link_hash()
    return Chain(key, header, sign_header(key, header), segments)


@pytest.mark.parametrize("final", [True, False], ids=["final", "not-final"])
def test_chain_good(final: bool) -> None:
    chain = make_chain(5, final=final)
    report = chain.verify()
    assert report == ChainReport(segments=5, final=final, head=chain.segments[-1].statement.link_hash())


def test_chain_empty_is_valid_not_final() -> None:
    chain = make_chain(0)
    report = chain.verify()
    assert report.segments == 0 and not report.final and report.head == header_hash(chain.header)


def test_chain_truncated_device_destroyed_verifies_as_not_final() -> None:
    """A recording cut short (no final segment ever arrives) is incomplete, not altered."""
    chain = make_chain(5, final=True)
    for keep in range(1, 5):
        report = chain.verify(chain.segments[:keep])
        assert report.segments == keep
        assert report.final is False
        assert report.head == chain.segments[keep - 1].statement.link_hash()


def _reordered(segs: list[SignedSegment]) -> list[SignedSegment]:
    return list(reversed(segs))


def _dropped_middle(segs: list[SignedSegment]) -> list[SignedSegment]:
    return segs[:2] + segs[3:]


def _swapped_pair(segs: list[SignedSegment]) -> list[SignedSegment]:
    return [segs[0], segs[2], segs[1], *segs[3:]]


def _duplicated(segs: list[SignedSegment]) -> list[SignedSegment]:
    return [*segs[:2], segs[1], *segs[2:]]


def _dropped_first(segs: list[SignedSegment]) -> list[SignedSegment]:
    return segs[1:]


@pytest.mark.parametrize("attack", [_reordered, _dropped_middle, _swapped_pair, _duplicated, _dropped_first])
def test_chain_rejects_rearrangement(attack: Any) -> None:
    chain = make_chain(5)
    with pytest.raises(IntegrityError):
        chain.verify(attack(chain.segments))


def test_chain_rejects_renumbered_segments() -> None:
    """Dropping a segment and renumbering the rest to hide the gap breaks the signatures."""
    chain = make_chain(5)
    kept = chain.segments[:2] + chain.segments[3:]
    renumbered = [SignedSegment(dataclasses.replace(s.statement, index=i), s.signature) for i, s in enumerate(kept)]
    with pytest.raises(IntegrityError, match="bad device signature on segment 2"):
        chain.verify(renumbered)


def test_chain_rejects_relinked_segments() -> None:
    """Even with indexes and prev links rewritten to look right, the signatures catch it."""
    chain = make_chain(4)
    kept = [chain.segments[0], chain.segments[2], chain.segments[3]]
    prev = header_hash(chain.header)
    forged = []
    for i, s in enumerate(kept):
        statement = dataclasses.replace(s.statement, index=i, prev_hash=prev)
        forged.append(SignedSegment(statement, s.signature))
        prev = statement.link_hash()
    with pytest.raises(IntegrityError, match="bad device signature"):
        chain.verify(forged)


def test_chain_rejects_segment_from_another_recording() -> None:
    key = nacl.signing.SigningKey.generate()
    chain, other = make_chain(4, key=key), make_chain(4, key=key)  # same device, two recordings
    mixed = [*chain.segments[:2], other.segments[2], chain.segments[3]]
    with pytest.raises(IntegrityError, match="belongs to another recording"):
        chain.verify(mixed)
    with pytest.raises(IntegrityError, match="belongs to another recording"):
        chain.verify([other.segments[0]])


def test_chain_rejects_segment_from_another_recording_even_relabelled() -> None:
    """Relabelling the stolen statement with this recording's id and link breaks its signature."""
    key = nacl.signing.SigningKey.generate()
    chain, other = make_chain(2, final=False, key=key), make_chain(1, final=False, key=key)
    stolen = other.segments[0].statement
    relabelled = dataclasses.replace(
        stolen, recording_id=chain.segments[0].statement.recording_id, prev_hash=header_hash(chain.header)
    )
    with pytest.raises(IntegrityError, match="bad device signature on segment 0"):
        chain.verify([SignedSegment(relabelled, other.segments[0].signature)])


def test_chain_rejects_segment_signed_by_another_key() -> None:
    chain = make_chain(3)
    intruder = nacl.signing.SigningKey.generate()
    seg = chain.segments[1]
    resigned = SignedSegment(seg.statement, sign_statement(intruder, seg.statement))
    with pytest.raises(IntegrityError, match="bad device signature on segment 1"):
        chain.verify([chain.segments[0], resigned, chain.segments[2]])


def test_chain_rejects_whole_chain_verified_with_another_key() -> None:
    chain = make_chain(2)
    other_key = nacl.signing.SigningKey.generate().verify_key
    with pytest.raises(IntegrityError, match="recording header"):
        verify_chain(other_key, chain.header, chain.header_signature, chain.segments)


@pytest.mark.parametrize("garbage", [b"", b"\x00" * 64, b"\x00" * 10])
def test_chain_rejects_malformed_signature(garbage: bytes) -> None:
    chain = make_chain(2)
    seg = chain.segments[1]
    with pytest.raises(IntegrityError):
        chain.verify([chain.segments[0], SignedSegment(seg.statement, garbage)])
    with pytest.raises(IntegrityError):
        verify_chain(chain.verify_key, chain.header, garbage, chain.segments)


def test_chain_rejects_altered_segment_statement_fields() -> None:
    chain = make_chain(3)
    seg = chain.segments[1]
    other = hashlib.sha256(b"other").digest()
    for statement in [
        dataclasses.replace(seg.statement, ciphertext_sha256=other),
        dataclasses.replace(seg.statement, plaintext_sha256=other),
        dataclasses.replace(seg.statement, final=True),
    ]:
        altered = SignedSegment(statement, seg.signature)
        with pytest.raises(IntegrityError):
            chain.verify([chain.segments[0], altered, chain.segments[2]])


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda h: h["consent"].update(outcome="objected"), id="consent-outcome"),
        pytest.param(lambda h: h["consent"].update(notice_version=2), id="consent-notice"),
        pytest.param(lambda h: h.pop("consent"), id="consent-removed"),
        pytest.param(lambda h: h.update(sample_rate=8000), id="sample-rate"),
        pytest.param(lambda h: h.update(started_at="2024-05-06T07:08:10+00:00"), id="started-at"),
    ],
)
def test_chain_rejects_modified_header(change: Any) -> None:
    """Consent (or anything else in the header) changed after signing: the header signature fails."""
    chain = make_chain(3)
    tampered = {**chain.header, "consent": dict(chain.header["consent"])}
    change(tampered)
    with pytest.raises(IntegrityError, match="recording header"):
        verify_header(chain.verify_key, tampered, chain.header_signature)
    with pytest.raises(IntegrityError, match="recording header"):
        verify_chain(chain.verify_key, tampered, chain.header_signature, chain.segments)


def test_chain_rejects_header_resigned_by_another_key() -> None:
    chain = make_chain(2)
    intruder = nacl.signing.SigningKey.generate()
    header = make_header(uuid.UUID(chain.header["recording_id"]), consent="objected")
    with pytest.raises(IntegrityError, match="recording header"):
        verify_chain(chain.verify_key, header, sign_header(intruder, header), chain.segments)


def test_chain_rejects_two_finals() -> None:
    key = nacl.signing.SigningKey.generate()
    rid = uuid.uuid4()
    header = make_header(rid)
    data_key = new_data_key()
    first = signed_segment(key, rid, 0, True, header_hash(header), data_key)
    second = signed_segment(key, rid, 1, True, first.statement.link_hash(), data_key)
    with pytest.raises(IntegrityError, match="follows the final segment"):
        verify_chain(key.verify_key, header, sign_header(key, header), [first, second])


def test_chain_rejects_segment_after_final() -> None:
    chain = make_chain(3, final=True)
    data_key = new_data_key()
    rid = chain.segments[0].statement.recording_id
    extra = signed_segment(chain.key, rid, 3, False, chain.segments[-1].statement.link_hash(), data_key)
    with pytest.raises(IntegrityError, match="segment 3 follows the final segment"):
        chain.verify([*chain.segments, extra])


def test_statement_rejects_malformed_fields() -> None:
    good = hashlib.sha256(b"x").digest()
    with pytest.raises(FormatError, match="out of range"):
        SegmentStatement(RID, -1, False, good, good, good)
    with pytest.raises(FormatError, match="out of range"):
        SegmentStatement(RID, 2**32, False, good, good, good)
    with pytest.raises(FormatError, match="prev_hash"):
        SegmentStatement(RID, 0, False, good, good, good[:31])


# --------------------------------------------------------------------------- golden vectors
#
# These constants were computed once from the implementation and pasted here.
# They pin the wire format: the bytes a device signs, the link hash that chains
# segments, the AEAD associated data and the envelope layout. Evidence already
# stored (and recorders already deployed) depend on these exact bytes; if one of
# these tests fails, the format changed. That must never happen by accident: a
# deliberate change needs a new FORMAT_VERSION and new domain strings, with the
# old version still verifiable, not an edit to these constants.

GOLDEN_SEED = bytes(range(32))
GOLDEN_VERIFY_KEY = "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8"
GOLDEN_HEADER = {
    "version": 1,
    "recording_id": "00112233-4455-6677-8899-aabbccddeeff",
    "device_id": "dev-1",
    "started_at": "2024-01-02T03:04:05+00:00",
    "sample_rate": 16000,
    "channels": 1,
    "consent": {"outcome": "given", "notice_id": "n", "notice_version": 1},
}
GOLDEN_HEADER_HASH = "a87e8de72beb494e167bb564d03d0bf3d16aec799820a2ad669ca63895257df3"
GOLDEN_HEADER_SIGNATURE = (
    "6c10480cc80d81e5e9d451fd66d6e3d1c026938f325822dae395115d5355e056"
    "d2722208166583b64d5e09ecf24d720648d569fdc90547f1f85cbb6eb058bd0c"
)
GOLDEN_STATEMENT = (
    "636f756e7465727369676e2f7365676d656e742f763100"  # b"countersign/segment/v1\0"
    "01"  # format version
    "00112233445566778899aabbccddeeff"  # recording id
    "00000007"  # index
    "01"  # final
    "305531dcc50ebca31cf1d5b31e9fc76ed51f66b3b6dd5a030c6539ae6532f979"  # sha256(b"ciphertext")
    "96d62e2abd3e42de5f50330fb8efc4c5599835278077b21e9aa0b33c1df07a1c"  # sha256(b"plaintext")
    "a87e8de72beb494e167bb564d03d0bf3d16aec799820a2ad669ca63895257df3"  # prev = header hash
)
GOLDEN_LINK_HASH = "c3c24a5a8fae5dcf123a5b60a209e9afb3b53e8d48a8c242d16dd94d9d7c5e37"
GOLDEN_STATEMENT_SIGNATURE = (
    "63dde2ec9ae4206aa8911c9d05e04d5d27b8e28b9bd514c885a9ec0407cef11d"
    "e9d3a7f3017fd753599513adead16799ca0aba71b71cc4a732c2e707076b4f01"
)
GOLDEN_AAD = "636f756e7465727369676e2f7365676d656e742d616561642f7631000100112233445566778899aabbccddeeff0000000701"
GOLDEN_DATA_KEY = bytes(range(100, 132))
GOLDEN_NONCE = bytes(range(200, 224))
GOLDEN_ENVELOPE = (
    "01c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedfd2a40f64db5daaed847e580d393e1a85508968615ab2c7ea8f4383"
)


def golden_statement() -> SegmentStatement:
    return SegmentStatement(
        recording_id=RID,
        index=7,
        final=True,
        ciphertext_sha256=hashlib.sha256(b"ciphertext").digest(),
        plaintext_sha256=hashlib.sha256(b"plaintext").digest(),
        prev_hash=header_hash(GOLDEN_HEADER),
    )


def test_golden_statement_encoding_is_stable() -> None:
    key = nacl.signing.SigningKey(GOLDEN_SEED)
    assert bytes(key.verify_key).hex() == GOLDEN_VERIFY_KEY
    assert header_hash(GOLDEN_HEADER).hex() == GOLDEN_HEADER_HASH
    assert sign_header(key, GOLDEN_HEADER).hex() == GOLDEN_HEADER_SIGNATURE  # Ed25519 is deterministic
    statement = golden_statement()
    assert statement.to_bytes().hex() == GOLDEN_STATEMENT
    assert statement.link_hash().hex() == GOLDEN_LINK_HASH
    assert sign_statement(key, statement).hex() == GOLDEN_STATEMENT_SIGNATURE


def test_golden_header_hash_ignores_key_order() -> None:
    """Canonical JSON: the same header with its keys in another order hashes the same."""
    shuffled = dict(reversed(list(GOLDEN_HEADER.items())))
    assert header_hash(shuffled).hex() == GOLDEN_HEADER_HASH


def test_golden_chain_still_verifies() -> None:
    """Evidence signed by yesterday's code still verifies with today's."""
    verify_key = nacl.signing.VerifyKey(bytes.fromhex(GOLDEN_VERIFY_KEY))
    header = {**GOLDEN_HEADER, "recording_id": str(RID)}
    genesis = SegmentStatement(
        RID,
        0,
        False,
        hashlib.sha256(b"ciphertext").digest(),
        hashlib.sha256(b"plaintext").digest(),
        header_hash(header),
    )
    key = nacl.signing.SigningKey(GOLDEN_SEED)
    report = verify_chain(
        verify_key,
        header,
        bytes.fromhex(GOLDEN_HEADER_SIGNATURE),
        [SignedSegment(genesis, sign_statement(key, genesis))],
    )
    assert report.segments == 1 and not report.final


def test_golden_envelope_is_stable(monkeypatch: pytest.MonkeyPatch) -> None:
    assert associated_data(RID, 7, True).hex() == GOLDEN_AAD
    # A stored envelope keeps opening ...
    assert open_segment(GOLDEN_DATA_KEY, RID, 7, True, bytes.fromhex(GOLDEN_ENVELOPE)) == b"countersign"
    # ... and sealing with the same nonce produces the same bytes (layout: version | nonce | ciphertext+tag).
    monkeypatch.setattr("evidence.envelope.nacl.utils.random", lambda n: GOLDEN_NONCE[:n])
    assert len(GOLDEN_NONCE) == NONCE_BYTES
    assert seal_segment(GOLDEN_DATA_KEY, RID, 7, True, b"countersign").hex() == GOLDEN_ENVELOPE


# --------------------------------------------------------------------------- audio


def test_audio_round_trip_flac_and_wav() -> None:
    rng = np.random.default_rng(1)
    pcm = rng.integers(-32768, 32767, size=(1600, 1), dtype=np.int16)
    for fmt, magic in (("flac", b"fLaC"), ("wav", b"RIFF")):
        data = audio.encode(pcm, 16000, fmt)
        assert data[:4] == magic
        decoded, rate = audio.decode(data)
        assert rate == 16000
        np.testing.assert_array_equal(decoded, pcm)  # lossless


def test_audio_decode_rejects_garbage() -> None:
    with pytest.raises(FormatError, match="not decodable audio"):
        audio.decode(b"not audio at all")
