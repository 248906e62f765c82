"""The wire contract (evidence.wire) and the one device-side writer (evidence.writer), no server.

The parser is what the service applies to every header before trusting it, so
each field is refused when missing, of the wrong type or out of range, and
unknown fields are refused too. The writer is what the recorder, the test
devices and the benchmarks share, so its output must verify with the offline
verifiers, and the recorder and the test device must agree on the header.
"""

from __future__ import annotations

import copy
import hashlib
import json
import uuid
from pathlib import Path
from typing import Any

import nacl.public
import nacl.signing
import numpy as np
import pytest

from evidence import FORMAT_VERSION, audio, wire
from evidence.chain import (
    SegmentStatement,
    SignedSegment,
    header_hash,
    verify_chain,
    verify_header,
    verify_segment,
)
from evidence.envelope import open_segment
from evidence.errors import FormatError, KeyUnavailableError
from evidence.wire import HeaderError, RecordingHeader, UploadHeaders
from evidence.writer import RecordingWriter, seal_segment_at
from recorder.home import DeviceHome
from recorder.recording import LiveRecording, record_objection
from recorder.spool import Spool
from tests.support.factories import SimDevice, consent_record, tone

EVIDENCE_KEY = nacl.public.PrivateKey.generate()
SIGNING_KEY = nacl.signing.SigningKey.generate()


def given_header() -> dict[str, Any]:
    return {
        "version": FORMAT_VERSION,
        "recording_id": str(uuid.uuid4()),
        "device_id": "dev-1",
        "started_at": "2024-05-06T07:08:09+09:00",
        "consent": consent_record("given").to_dict(),
        "sample_rate": 16000,
        "channels": 1,
        "segment_seconds": 5.0,
        "codec": "flac",
    }


def objection_header() -> dict[str, Any]:
    header = given_header()
    header["consent"] = consent_record("objected").to_dict()
    for name in ("sample_rate", "channels", "segment_seconds", "codec"):
        del header[name]
    return header


# --------------------------------------------------------------------------- the header parser


@pytest.mark.parametrize("make", [given_header, objection_header], ids=["given", "objected"])
def test_header_round_trips(make: Any) -> None:
    data = make()
    parsed = RecordingHeader.parse(copy.deepcopy(data))
    assert parsed.to_dict() == data
    assert json.dumps(parsed.to_dict()) == json.dumps(data)  # the same key order too (spool files)
    assert header_hash(parsed.to_dict()) == header_hash(data)  # so the same signed bytes
    assert RecordingHeader.parse(parsed.to_dict()) == parsed
    assert str(parsed.recording_id) == data["recording_id"]
    assert parsed.started.utcoffset() is not None and parsed.started.hour == 22  # 07:08+09:00 in UTC


def test_integer_segment_seconds_stays_an_integer() -> None:
    """5 and 5.0 are different canonical JSON: converting would break the device's signature."""
    data = {**given_header(), "segment_seconds": 5}
    assert RecordingHeader.parse(data).to_dict()["segment_seconds"] == 5
    assert header_hash(RecordingHeader.parse(data).to_dict()) == header_hash(data)


@pytest.mark.parametrize("name", ["extra", "Version", "sealed_keys", "header_signature", "sample-rate"])
def test_header_refuses_unknown_fields(name: str) -> None:
    for make in (given_header, objection_header):
        with pytest.raises(HeaderError, match=f"unknown field.*{name}"):
            RecordingHeader.parse({**make(), name: 1})


@pytest.mark.parametrize("name", wire.FIELDS)
def test_given_header_refuses_each_missing_field(name: str) -> None:
    data = given_header()
    del data[name]
    with pytest.raises(HeaderError, match=f"missing field.*{name}"):
        RecordingHeader.parse(data)


@pytest.mark.parametrize("name", ["version", "recording_id", "device_id", "started_at", "consent"])
def test_objection_header_refuses_each_missing_field(name: str) -> None:
    data = objection_header()
    del data[name]
    with pytest.raises(HeaderError, match=f"missing field.*{name}"):
        RecordingHeader.parse(data)


def test_objection_may_carry_valid_audio_parameters() -> None:
    parsed = RecordingHeader.parse({**objection_header(), "sample_rate": 16000, "channels": 1})
    assert (parsed.sample_rate, parsed.channels, parsed.segment_seconds, parsed.codec) == (16000, 1, None, None)
    assert not parsed.consented


WRONG_VALUES = [
    ("version", True, "version"),
    ("version", 99, "version"),
    ("version", "1", "version"),
    ("version", 1.0, "version"),
    ("recording_id", "../../etc/passwd", "recording_id"),
    ("recording_id", 5, "recording_id"),
    ("recording_id", "00112233445566778899AABBCCDDEEFF", "recording_id"),  # not canonical
    ("device_id", 7, "device_id"),
    ("device_id", "", "device_id"),
    ("started_at", "yesterday", "started_at"),
    ("started_at", 1700000000, "started_at"),
    ("started_at", "2024-01-01T10:00:00", "time zone"),
    ("started_at", "9999-12-31T23:59:59-23:59", "out of range"),
    ("consent", "yes", "consent"),
    ("consent", ["given"], "consent"),
    ("sample_rate", True, "sample_rate"),
    ("sample_rate", 16000.0, "sample_rate"),
    ("sample_rate", "16000", "sample_rate"),
    ("sample_rate", 7999, "sample_rate"),
    ("sample_rate", 96001, "sample_rate"),
    ("sample_rate", None, "sample_rate"),
    ("channels", True, "channels"),
    ("channels", 0, "channels"),
    ("channels", 3, "channels"),
    ("channels", "two", "channels"),
    ("segment_seconds", True, "segment_seconds"),
    ("segment_seconds", "5", "segment_seconds"),
    ("segment_seconds", 0, "segment_seconds"),
    ("segment_seconds", -1.0, "segment_seconds"),
    ("segment_seconds", float("nan"), "segment_seconds"),
    ("segment_seconds", float("inf"), "segment_seconds"),
    ("segment_seconds", 10**400, "segment_seconds"),
    ("codec", "mp3", "codec"),
    ("codec", None, "codec"),
]


@pytest.mark.parametrize(("name", "value", "word"), WRONG_VALUES, ids=[f"{n}={v!r}"[:40] for n, v, _ in WRONG_VALUES])
def test_header_refuses_wrong_values(name: str, value: Any, word: str) -> None:
    with pytest.raises(HeaderError, match=word):
        RecordingHeader.parse({**given_header(), name: value})


@pytest.mark.parametrize(
    "params",
    [{"sample_rate": "abc"}, {"sample_rate": 1.5, "channels": 1}, {"sample_rate": 16000}, {"channels": 1}],
)
def test_objection_audio_parameters_must_be_valid_and_together(params: dict[str, Any]) -> None:
    with pytest.raises(HeaderError, match=r"sample_rate|channels"):
        RecordingHeader.parse({**objection_header(), **params})


@pytest.mark.parametrize("data", [None, [], "header", 5])
def test_header_must_be_an_object(data: Any) -> None:
    with pytest.raises(FormatError, match="object"):
        RecordingHeader.parse(data)


def test_header_error_is_a_format_error_with_a_message() -> None:
    with pytest.raises(FormatError) as caught:
        RecordingHeader.parse({})
    assert str(caught.value).startswith("Malformed recording header: missing field")


# --------------------------------------------------------------------------- upload headers and paths


def test_upload_headers_round_trip_and_lengths() -> None:
    fields = UploadHeaders(True, b"\x01" * 32, b"\x02" * 32, b"\x03" * 64)
    sent = fields.to_dict()
    assert set(sent) == set(wire.UPLOAD_HEADER_NAMES) and sent[wire.SEGMENT_FINAL] == "1"
    assert UploadHeaders.parse(sent) == fields
    for name, short in [(wire.PLAINTEXT_SHA256, "00" * 31), (wire.PREV_HASH, "00" * 33), (wire.SIGNATURE, "0" * 127)]:
        with pytest.raises(FormatError, match=f"{name} must be"):
            UploadHeaders.parse({**sent, name: short})
    with pytest.raises(FormatError, match="must be 32 bytes of hex"):
        UploadHeaders.parse({**sent, wire.PREV_HASH: "zz" * 32})
    with pytest.raises(FormatError, match="0 or 1"):
        UploadHeaders.parse({**sent, wire.SEGMENT_FINAL: "true"})
    for name in wire.UPLOAD_HEADER_NAMES:
        with pytest.raises(FormatError, match=f"{name} is required"):
            UploadHeaders.parse({k: v for k, v in sent.items() if k != name})


def test_paths() -> None:
    rid = uuid.UUID(int=1)
    assert wire.segment_path(rid, 3) == f"/v1/recordings/{rid}/segments/3"
    assert wire.interrupt_path(str(rid)) == f"/v1/recordings/{rid}/interrupt"
    assert wire.incident_path(rid) == f"/v1/recordings/{rid}/incident"
    assert (wire.RECORDINGS, wire.ENROL, wire.KEYS) == ("/v1/recordings", "/v1/enrol", "/v1/keys")


# --------------------------------------------------------------------------- the writer


def start_writer(**kwargs: Any) -> RecordingWriter:
    return RecordingWriter.start(
        SIGNING_KEY,
        "dev-1",
        consent_record("given").to_dict(),
        {"ek-1": EVIDENCE_KEY.public_key, "ek-2": bytes(nacl.public.PrivateKey.generate().public_key)},
        sample_rate=16000,
        channels=1,
        segment_seconds=1.0,
        **kwargs,
    )


def test_writer_output_verifies_and_decrypts() -> None:
    writer = start_writer()
    body = writer.create_body()
    assert RecordingHeader.parse(body["header"]) == writer.header
    verify_header(SIGNING_KEY.verify_key, body["header"], bytes.fromhex(body["header_signature"]))
    assert [k["key_id"] for k in body["sealed_keys"]] == ["ek-1", "ek-2"]
    data_key = nacl.public.SealedBox(EVIDENCE_KEY).decrypt(bytes.fromhex(body["sealed_keys"][0]["sealed"]))

    plaintexts = [audio.encode(tone(0.2, seed=i), 16000) for i in range(3)]
    sealed = [writer.seal(p, final=i == 2) for i, p in enumerate(plaintexts)]
    assert writer.closed and writer.data_key == b""  # the final segment drops the key
    report = verify_chain(SIGNING_KEY.verify_key, body["header"], writer.header_signature, [s.signed for s in sealed])
    assert (report.segments, report.final, report.head) == (3, True, sealed[-1].link)
    prev = header_hash(body["header"])
    for seg, plaintext in zip(sealed, plaintexts, strict=True):
        verify_segment(SIGNING_KEY.verify_key, seg.signed, prev, writer.id)
        assert open_segment(data_key, writer.id, seg.index, seg.final, seg.envelope) == plaintext
        parsed = UploadHeaders.parse(seg.upload_headers())
        assert (parsed.final, parsed.prev_hash, parsed.signature) == (seg.final, prev, seg.signed.signature)
        prev = seg.link
    with pytest.raises(FormatError, match="closed"):
        writer.seal(plaintexts[0], final=False)


def test_writer_prepare_does_not_move_the_chain() -> None:
    writer = start_writer()
    first = writer.prepare(b"segment", final=False)
    again = writer.prepare(b"segment", final=False)  # e.g. the spool write failed: seal index 0 again
    assert first.index == again.index == 0 and writer.index == 0
    writer.accept(again)
    with pytest.raises(FormatError, match="not the next"):
        writer.accept(first)
    assert writer.seal(b"next", final=False).index == 1


def test_stateless_seal_matches_the_writer() -> None:
    writer = start_writer()
    seg = seal_segment_at(SIGNING_KEY, writer.data_key, writer.id, 0, False, b"x", writer.prev)
    verify_segment(SIGNING_KEY.verify_key, seg.signed, header_hash(writer.header_dict), writer.id)


def test_writer_objection_and_no_key() -> None:
    objection = RecordingWriter.start(SIGNING_KEY, "dev-1", consent_record("objected").to_dict(), {})
    assert objection.sealed_keys == [] and objection.data_key == b"" and objection.closed
    assert set(objection.header_dict) == {"version", "recording_id", "device_id", "started_at", "consent"}
    with pytest.raises(FormatError, match="objection"):
        objection.seal(b"audio", final=True)
    with pytest.raises(KeyUnavailableError):
        RecordingWriter.start(SIGNING_KEY, "dev-1", consent_record("given").to_dict(), {}, sample_rate=16000)


# --------------------------------------------------------------------------- recorder and test device agree


def enrolled_home(tmp_path: Path) -> DeviceHome:
    home = DeviceHome(tmp_path / "home")
    home.root.mkdir()
    seed = bytes(SIGNING_KEY)
    keys = {"ek-1": bytes(EVIDENCE_KEY.public_key).hex()}
    home.save({"device_id": "dev-1", "server": "http://127.0.0.1:1"}, seed, "token", keys, [])
    return home


def test_recorder_and_sim_device_build_the_same_headers(tmp_path: Path) -> None:
    home = enrolled_home(tmp_path)
    spool = Spool(home.spool_dir, 10**8)
    sim = SimDevice("dev-1", "token", SIGNING_KEY, {"ek-1": bytes(EVIDENCE_KEY.public_key)})

    live = LiveRecording(home, spool, consent_record("given"), 16000, 1, 1.0)
    simulated = sim.new_recording("given")
    assert list(live.header) == list(simulated.header)  # same keys, same order
    assert set(live.header["consent"]) == set(simulated.header["consent"])
    assert RecordingHeader.parse(live.header).to_dict() == live.header
    assert RecordingHeader.parse(simulated.header).to_dict() == simulated.header

    objected = record_objection(home, spool, consent_record("objected")).meta()
    sim_objected = sim.new_recording("objected")
    assert list(objected["header"]) == list(sim_objected.header)
    assert objected["sealed_keys"] == sim_objected.sealed_keys == []

    # The spool keeps what the uploader sends: the create body, state, and per-segment statements.
    meta = live.spooled.meta()
    assert list(meta) == ["header", "header_signature", "sealed_keys", "state"]
    assert meta["header"] == live.header and meta["state"] == "recording"
    pcm = np.zeros((16000, 1), dtype=np.int16)
    live.add(pcm, final=False)
    live.add(pcm, final=True)
    segments = []
    for index in live.spooled.segments():
        envelope, statement = live.spooled.segment(index)
        assert set(statement) == {"final", "ciphertext_sha256", "plaintext_sha256", "prev_hash", "signature"}
        headers = wire.upload_headers(
            statement["final"], statement["plaintext_sha256"], statement["prev_hash"], statement["signature"]
        )
        segments.append((envelope, UploadHeaders.parse(headers)))
    assert live.closed and live.spooled.meta()["state"] == "closed"

    signed = [
        SignedSegment(
            SegmentStatement(live.id, i, h.final, hashlib.sha256(env).digest(), h.plaintext_sha256, h.prev_hash),
            h.signature,
        )
        for i, (env, h) in enumerate(segments)
    ]
    report = verify_chain(SIGNING_KEY.verify_key, meta["header"], bytes.fromhex(meta["header_signature"]), signed)
    assert (report.segments, report.final) == (2, True)
