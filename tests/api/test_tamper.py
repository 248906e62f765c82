"""Tampering with stored evidence, through the real API.

Each attack is either refused at upload or reported at read: POST .../audio
answers 409 with an integrity message, never audio, and the access log holds
the read (committed first) followed by the failed integrity check.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import nacl.public
import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from api.core.models import AccessLog, Device, Recording, SealedKey, Segment, utcnow
from api.core.services import Services
from api.core.storage.interface import segment_key
from evidence import audio
from evidence.chain import SegmentStatement, header_hash, sign_statement
from evidence.envelope import new_data_key
from tests.conftest import World, bearer
from tests.support.backends import POSTGRES_S3
from tests.support.factories import SimDevice, SimRecording, tone

PURPOSE = "tamper test: check the evidence"
INTEGRITY = "Integrity check failed"
AUDIO_MAGICS = (b"fLaC", b"RIFF")


# --------------------------------------------------------------------------- helpers


def services(client: TestClient) -> Services:
    return client.app.state.services  # type: ignore[attr-defined,no-any-return]


def open_recording(client: TestClient, dev: SimDevice, rec: SimRecording) -> None:
    reply = client.post("/v1/recordings", json=rec.create_body(), headers=dev.auth)
    assert reply.status_code == 201, reply.text


def put_segment(
    client: TestClient, dev: SimDevice, rid: uuid.UUID, index: int, envelope: bytes, headers: dict[str, str]
):
    return client.put(
        f"/v1/recordings/{rid}/segments/{index}",
        content=envelope,
        headers={**dev.auth, "Content-Type": "application/octet-stream", **headers},
    )


def upload(client: TestClient, dev: SimDevice, rec: SimRecording) -> None:
    open_recording(client, dev, rec)
    for seg in rec.segments:
        reply = put_segment(client, dev, rec.id, seg.index, seg.envelope, seg.headers)
        assert reply.status_code == 201, reply.text


def good_recording(client: TestClient, dev: SimDevice, count: int = 4, final: bool = True) -> SimRecording:
    rec = dev.new_recording()
    dev.add_segments(rec, count, final=final)
    upload(client, dev, rec)
    return rec


def read(client: TestClient, token: str, rid: uuid.UUID, fmt: str = "flac"):
    return client.post(f"/v1/evidence/{rid}/audio", json={"purpose": PURPOSE, "format": fmt}, headers=bearer(token))


def expected_pcm(rec: SimRecording) -> np.ndarray:
    return np.concatenate([seg.pcm for seg in rec.segments])


def assert_reads_intact(client: TestClient, token: str, rec: SimRecording) -> None:
    reply = read(client, token, rec.id)
    assert reply.status_code == 200, reply.text
    pcm, rate = audio.decode(reply.content)
    assert rate == 16000
    np.testing.assert_array_equal(pcm, expected_pcm(rec))


def db(client: TestClient, change: Callable[[Session], Any]) -> Any:
    """Run a change directly against the database (the attacker's access), committed."""
    with services(client).sessions() as session, session.begin():
        return change(session)


def log_entries(client: TestClient, rid: uuid.UUID) -> list[AccessLog]:
    with services(client).sessions() as session:
        rows = session.scalars(select(AccessLog).where(AccessLog.target == f"recording:{rid}").order_by(AccessLog.seq))
        return list(rows)


def assert_refused_read(client: TestClient, world: World, rid: uuid.UUID, message: str, fmt: str = "flac") -> None:
    """The read answers 409 with an integrity message, no audio, and leaves read + integrity log entries."""
    before = {e.seq for e in log_entries(client, rid)}
    reply = read(client, world.officer, rid, fmt)
    assert reply.status_code == 409, (reply.status_code, reply.text)
    assert reply.headers["content-type"].startswith("application/json")
    assert not any(magic in reply.content for magic in AUDIO_MAGICS)
    assert "X-Countersign-Frames" not in reply.headers
    detail = reply.json()["detail"]
    assert detail.startswith(INTEGRITY), detail
    assert message in detail, detail

    new = [e for e in log_entries(client, rid) if e.seq not in before]
    assert [(e.action, e.outcome) for e in new] == [
        ("api:evidence:read", "allowed"),
        ("api:evidence:integrity", "failed"),
    ]
    read_entry, failure = new
    assert read_entry.purpose == PURPOSE
    assert read_entry.actor == failure.actor and read_entry.actor.startswith("user:")
    assert read_entry.seq < failure.seq
    assert failure.detail["read"] == read_entry.seq
    assert message in failure.detail["error"]


def stored_keys(client: TestClient, rid: uuid.UUID) -> list[str]:
    return list(services(client).store.list(f"recordings/{rid}/"))


def segment_rows(client: TestClient, rid: uuid.UUID) -> list[Segment]:
    with services(client).sessions() as session:
        return list(session.scalars(select(Segment).where(Segment.recording_id == str(rid)).order_by(Segment.index)))


def recording_row(client: TestClient, rid: uuid.UUID) -> Recording:
    with services(client).sessions() as session:
        row = session.get(Recording, str(rid))
        assert row is not None
        session.expunge(row)
        return row


# --------------------------------------------------------------------------- baseline


def test_untampered_recording_reads_back_exactly(client: TestClient, world: World) -> None:
    rec = good_recording(client, world.device)
    assert stored_keys(client, rec.id) == [segment_key(str(rec.id), i) for i in range(4)]
    assert recording_row(client, rec.id).status == "complete"
    assert_reads_intact(client, world.officer, rec)
    actions = [(e.action, e.outcome) for e in log_entries(client, rec.id)]
    assert actions[-1] == ("api:evidence:read", "allowed")
    assert ("api:evidence:integrity", "failed") not in actions


# --------------------------------------------------------------------------- (a)-(c) the blob store


def _flip_byte(position: int) -> Callable[[Services, uuid.UUID], None]:
    def attack(svc: Services, rid: uuid.UUID) -> None:
        key = segment_key(str(rid), 1)
        data = bytearray(svc.store.get(key))
        data[position % len(data)] ^= 0x01
        svc.store.put(key, bytes(data))

    return attack


def _swap(a: int, b: int) -> Callable[[Services, uuid.UUID], None]:
    def attack(svc: Services, rid: uuid.UUID) -> None:
        ka, kb = segment_key(str(rid), a), segment_key(str(rid), b)
        da, dbytes = svc.store.get(ka), svc.store.get(kb)
        svc.store.put(ka, dbytes)
        svc.store.put(kb, da)

    return attack


def _delete(index: int) -> Callable[[Services, uuid.UUID], None]:
    def attack(svc: Services, rid: uuid.UUID) -> None:
        svc.store.delete(segment_key(str(rid), index))

    return attack


def _truncate(svc: Services, rid: uuid.UUID) -> None:
    key = segment_key(str(rid), 1)
    svc.store.put(key, svc.store.get(key)[:-1])


def _empty(svc: Services, rid: uuid.UUID) -> None:
    svc.store.put(segment_key(str(rid), 1), b"")


def _duplicate(svc: Services, rid: uuid.UUID) -> None:
    svc.store.put(segment_key(str(rid), 2), svc.store.get(segment_key(str(rid), 1)))


@pytest.mark.parametrize(
    ("attack", "message"),
    [
        pytest.param(_flip_byte(0), "segment 1 in the store is not the one the device signed", id="flip-version-byte"),
        pytest.param(_flip_byte(5), "segment 1 in the store is not the one the device signed", id="flip-nonce"),
        pytest.param(_flip_byte(100), "segment 1 in the store is not the one the device signed", id="flip-ciphertext"),
        pytest.param(_flip_byte(-1), "segment 1 in the store is not the one the device signed", id="flip-tag"),
        pytest.param(_truncate, "segment 1 in the store is not the one the device signed", id="truncated-object"),
        pytest.param(_empty, "segment 1 in the store is not the one the device signed", id="emptied-object"),
        pytest.param(_swap(1, 2), "segment 1 in the store is not the one the device signed", id="swap-1-2"),
        pytest.param(_swap(0, 3), "segment 0 in the store is not the one the device signed", id="swap-first-final"),
        pytest.param(_duplicate, "segment 2 in the store is not the one the device signed", id="duplicate-1-over-2"),
        pytest.param(_delete(0), "segment 0 is missing from the store", id="drop-first"),
        pytest.param(_delete(2), "segment 2 is missing from the store", id="drop-middle"),
        pytest.param(_delete(3), "segment 3 is missing from the store", id="drop-final"),
    ],
)
def test_store_tamper_reported_at_read(
    client: TestClient, world: World, attack: Callable[[Services, uuid.UUID], None], message: str
) -> None:
    rec = good_recording(client, world.device)
    attack(services(client), rec.id)
    assert_refused_read(client, world, rec.id, message)


@pytest.mark.parametrize("fmt", ["flac", "wav"])
def test_store_tamper_never_released_in_any_format(client: TestClient, world: World, fmt: str) -> None:
    rec = good_recording(client, world.device)
    _flip_byte(60)(services(client), rec.id)
    assert_refused_read(client, world, rec.id, "segment 1 in the store", fmt=fmt)
    # Repeated attempts are refused (and logged) every time: nothing is cached as "verified".
    assert_refused_read(client, world, rec.id, "segment 1 in the store", fmt=fmt)


def test_store_restored_object_reads_again(client: TestClient, world: World) -> None:
    """The check is on content, not a sticky flag: put the original bytes back and it verifies."""
    rec = good_recording(client, world.device)
    store = services(client).store
    key = segment_key(str(rec.id), 2)
    original = store.get(key)
    store.put(key, original[:-1] + bytes([original[-1] ^ 0xFF]))
    assert_refused_read(client, world, rec.id, "segment 2")
    store.put(key, original)
    assert_reads_intact(client, world.officer, rec)


# --------------------------------------------------------------------------- (d) the database


def _delete_row(index: int) -> Callable[[Session, str], None]:
    def attack(session: Session, rid: str) -> None:
        session.execute(delete(Segment).where(Segment.recording_id == rid, Segment.index == index))

    return attack


def _delete_final_and_recount(session: Session, rid: str) -> None:
    """Truncation hidden from the count: the recording still says complete."""
    session.execute(delete(Segment).where(Segment.recording_id == rid, Segment.index == 3))
    session.execute(update(Recording).where(Recording.id == rid).values(segment_count=3))


def _set_index(old: int, new: int) -> Callable[[Session, str], None]:
    def attack(session: Session, rid: str) -> None:
        session.execute(update(Segment).where(Segment.recording_id == rid, Segment.index == old).values(index=new))

    return attack


def _swap_rows(a: int, b: int) -> Callable[[Session, str], None]:
    def attack(session: Session, rid: str) -> None:
        for old, new in ((a, 9999), (b, a), (9999, b)):
            session.execute(update(Segment).where(Segment.recording_id == rid, Segment.index == old).values(index=new))

    return attack


def _set_field(index: int, **values: Any) -> Callable[[Session, str], None]:
    def attack(session: Session, rid: str) -> None:
        session.execute(update(Segment).where(Segment.recording_id == rid, Segment.index == index).values(**values))

    return attack


def _point_at(index: int, other: int) -> Callable[[Session, str], None]:
    def attack(session: Session, rid: str) -> None:
        _set_field(index, object_key=segment_key(rid, other))(session, rid)

    return attack


def _recount(count: int) -> Callable[[Session, str], None]:
    def attack(session: Session, rid: str) -> None:
        session.execute(update(Recording).where(Recording.id == rid).values(segment_count=count))

    return attack


@pytest.mark.parametrize(
    ("attack", "message"),
    [
        pytest.param(_delete_row(1), "expected segment 1, found segment 2", id="drop-middle-row"),
        pytest.param(_delete_row(0), "expected segment 0, found segment 1", id="drop-first-row"),
        pytest.param(_delete_row(3), "4 segments recorded, 3 found", id="drop-final-row"),
        pytest.param(_delete_final_and_recount, "marked complete but its final segment is missing", id="truncate"),
        pytest.param(_set_index(3, 7), "expected segment 3, found segment 7", id="final-row-moved"),
        pytest.param(_set_index(1, 5), "expected segment 1, found segment 2", id="middle-row-moved-to-end"),
        pytest.param(_swap_rows(1, 2), "bad device signature on segment 1", id="swap-rows"),
        pytest.param(_swap_rows(0, 3), "bad device signature on segment 0", id="swap-first-final-rows"),
        pytest.param(_set_field(3, final=False), "bad device signature on segment 3", id="final-flag-cleared"),
        pytest.param(_set_field(1, final=True), "bad device signature on segment 1", id="early-final-flag"),
        pytest.param(
            _set_field(2, plaintext_sha256=hashlib.sha256(b"x").digest()),
            "bad device signature on segment 2",
            id="plaintext-hash",
        ),
        pytest.param(
            _set_field(2, ciphertext_sha256=hashlib.sha256(b"x").digest()),
            "bad device signature on segment 2",
            id="ciphertext-hash",
        ),
        pytest.param(_set_field(2, signature=bytes(64)), "bad device signature on segment 2", id="signature"),
        pytest.param(_point_at(1, 2), "segment 1 in the store is not the one the device signed", id="object-key"),
        pytest.param(_recount(5), "5 segments recorded, 4 found", id="count-raised"),
        pytest.param(_recount(2), "2 segments recorded, 4 found", id="count-lowered"),
    ],
)
def test_database_tamper_reported_at_read(
    client: TestClient, world: World, attack: Callable[[Session, str], None], message: str
) -> None:
    rec = good_recording(client, world.device)
    db(client, lambda s: attack(s, str(rec.id)))
    assert_refused_read(client, world, rec.id, message)


@pytest.mark.parametrize(
    ("attack", "message"),
    [
        pytest.param(_set_index(0, -1), "segment index -1 out of range", id="index-negative"),
        pytest.param(
            _set_index(3, 2**32),
            "segment index 4294967296 out of range",
            id="index-beyond-u32",
            # PostgreSQL's INTEGER column cannot hold 2**32: there the database itself refuses the attack.
            marks=pytest.mark.skipif(POSTGRES_S3, reason="SQLite only: PostgreSQL INTEGER cannot store 2**32"),
        ),
        pytest.param(_set_field(2, prev_hash=b"short"), "prev_hash must be 32 bytes", id="prev-hash-short"),
        pytest.param(_set_field(1, plaintext_sha256=b""), "plaintext_sha256 must be 32 bytes", id="hash-empty"),
    ],
)
def test_database_rows_made_malformed_reported_as_integrity(
    client: TestClient, world: World, attack: Callable[[Session, str], None], message: str
) -> None:
    """Rows the upload checks accepted, made malformed later: an integrity failure (409, logged), not a 400."""
    rec = good_recording(client, world.device)
    db(client, lambda s: attack(s, str(rec.id)))
    assert_refused_read(client, world, rec.id, message)


def test_database_and_store_rewritten_together_still_fail(client: TestClient, world: World) -> None:
    """Altering the object and updating its recorded hash to match: the device's signature still fails."""
    rec = good_recording(client, world.device)
    store = services(client).store
    key = segment_key(str(rec.id), 1)
    altered = bytearray(store.get(key))
    altered[40] ^= 0x10
    store.put(key, bytes(altered))
    attack = _set_field(1, ciphertext_sha256=hashlib.sha256(altered).digest(), size=len(altered))
    db(client, lambda s: attack(s, str(rec.id)))
    assert_refused_read(client, world, rec.id, "bad device signature on segment 1")


def test_substituted_data_key_reported_at_read(client: TestClient, world: World) -> None:
    """Resealing a different data key to the evidence key: the AEAD refuses to open any segment."""
    rec = good_recording(client, world.device)
    other = new_data_key()

    def reseal(session: Session) -> None:
        for sealed in session.scalars(select(SealedKey).where(SealedKey.recording_id == str(rec.id))):
            pk = nacl.public.PublicKey(world.device.evidence_keys[sealed.key_id])
            sealed.sealed = bytes(nacl.public.SealedBox(pk).encrypt(other))

    db(client, reseal)
    assert_refused_read(client, world, rec.id, "segment 0 does not decrypt")


def test_corrupted_sealed_key_releases_nothing(client: TestClient, world: World) -> None:
    """A sealed data key that no longer opens, although we hold its evidence key, was altered: integrity error."""
    rec = good_recording(client, world.device)
    db(
        client,
        lambda s: s.execute(update(SealedKey).where(SealedKey.recording_id == str(rec.id)).values(sealed=bytes(80))),
    )
    assert_refused_read(client, world, rec.id, "sealed data key")


# --------------------------------------------------------------------------- (e) replay into another recording


def test_replay_at_upload_refused(client: TestClient, world: World) -> None:
    dev = world.device
    r1 = good_recording(client, dev)
    r2 = dev.new_recording()
    open_recording(client, dev, r2)
    seg0 = r1.segments[0]

    # As sent for R1: it points back at R1's header, not R2's.
    reply = put_segment(client, dev, r2.id, 0, seg0.envelope, seg0.headers)
    assert reply.status_code == 409, reply.text
    assert "does not follow" in reply.json()["detail"]

    # With the link rewritten to R2's genesis: the device's signature (over R1's id and link) fails.
    relinked = {**seg0.headers, "X-Prev-Hash": header_hash(r2.header).hex()}
    reply = put_segment(client, dev, r2.id, 0, seg0.envelope, relinked)
    assert reply.status_code == 422, reply.text
    assert "bad device signature on segment 0" in reply.json()["detail"]

    # Nothing of R1 reached R2.
    assert stored_keys(client, r2.id) == []
    assert segment_rows(client, r2.id) == []
    assert recording_row(client, r2.id).segment_count == 0
    # R2 can still take its own segment 0 afterwards.
    dev.add_segments(r2, 1, final=True)
    reply = put_segment(client, dev, r2.id, 0, r2.segments[0].envelope, r2.segments[0].headers)
    assert reply.status_code == 201, reply.text
    assert_reads_intact(client, world.officer, r2)
    assert_reads_intact(client, world.officer, r1)


def test_replay_at_later_index_refused(client: TestClient, world: World) -> None:
    """R1's segment 1 replayed as R2's segment 1, after R2's own segment 0."""
    dev = world.device
    r1 = good_recording(client, dev)
    r2 = dev.new_recording()
    dev.add_segments(r2, 2, final=False)
    open_recording(client, dev, r2)
    put_segment(client, dev, r2.id, 0, r2.segments[0].envelope, r2.segments[0].headers)
    stolen = r1.segments[1]
    reply = put_segment(client, dev, r2.id, 1, stolen.envelope, stolen.headers)
    assert reply.status_code == 409, reply.text
    relinked = {**stolen.headers, "X-Prev-Hash": r2.segments[0].headers["X-Link"]}
    reply = put_segment(client, dev, r2.id, 1, stolen.envelope, relinked)
    assert reply.status_code == 422, reply.text
    assert stored_keys(client, r2.id) == [segment_key(str(r2.id), 0)]


def test_replay_in_store_reported_at_read(client: TestClient, world: World) -> None:
    dev = world.device
    r1, r2 = good_recording(client, dev), good_recording(client, dev)
    store = services(client).store
    store.put(segment_key(str(r2.id), 0), store.get(segment_key(str(r1.id), 0)))
    assert_refused_read(client, world, r2.id, "segment 0 in the store is not the one the device signed")
    assert_reads_intact(client, world.officer, r1)


def test_replay_whole_segment_row_and_object_reported_at_read(client: TestClient, world: World) -> None:
    """Copy R1's segment 1 (object, hashes, signature) over R2's: the signature binds R1's id."""
    dev = world.device
    r1, r2 = good_recording(client, dev), good_recording(client, dev)
    store = services(client).store
    store.put(segment_key(str(r2.id), 1), store.get(segment_key(str(r1.id), 1)))

    def copy_row(session: Session) -> None:
        src = session.get(Segment, (str(r1.id), 1))
        dst = session.get(Segment, (str(r2.id), 1))
        assert src is not None and dst is not None
        for field in ("ciphertext_sha256", "plaintext_sha256", "prev_hash", "signature", "size", "final"):
            setattr(dst, field, getattr(src, field))

    db(client, copy_row)
    assert_refused_read(client, world, r2.id, "bad device signature on segment 1")


def test_replay_resigned_by_device_caught_by_aead_binding(client: TestClient, world: World) -> None:
    """A device (buggy or compromised) re-signs R1's envelope as R2's segment 0, even sharing R1's data key.

    The service cannot decrypt at upload, so it accepts the statement; the AEAD's
    binding to the recording id reports it at read.
    """
    dev = world.device
    r1 = good_recording(client, dev)
    r2 = dev.new_recording()
    r2.data_key, r2.sealed_keys = r1.data_key, r1.sealed_keys
    open_recording(client, dev, r2)
    seg0 = r1.segments[0]
    plaintext_sha256 = bytes.fromhex(seg0.headers["X-Plaintext-Sha256"])
    st = SegmentStatement(
        r2.id, 0, True, hashlib.sha256(seg0.envelope).digest(), plaintext_sha256, header_hash(r2.header)
    )
    headers = {
        "X-Segment-Final": "1",
        "X-Plaintext-Sha256": plaintext_sha256.hex(),
        "X-Prev-Hash": st.prev_hash.hex(),
        "X-Signature": sign_statement(dev.signing_key, st).hex(),
    }
    reply = put_segment(client, dev, r2.id, 0, seg0.envelope, headers)
    assert reply.status_code == 201, reply.text
    assert_refused_read(client, world, r2.id, "segment 0 does not decrypt")


# --------------------------------------------------------------------------- (f) another device's key


@pytest.mark.parametrize("index", [0, 2])
def test_segment_signed_by_another_device_refused(client: TestClient, world: World, index: int) -> None:
    dev, intruder = world.device, world.other_device
    rec = dev.new_recording()
    dev.add_segments(rec, index, final=False)
    upload(client, dev, rec)
    prev = bytes.fromhex(rec.segments[-1].headers["X-Link"]) if rec.segments else header_hash(rec.header)
    forged = intruder.make_segment(rec, index, False, tone(1.0, seed=99), prev)  # right key, right link, wrong signer
    reply = put_segment(client, dev, rec.id, index, forged.envelope, forged.headers)
    assert reply.status_code == 422, reply.text
    assert f"bad device signature on segment {index}" in reply.json()["detail"]

    assert stored_keys(client, rec.id) == [segment_key(str(rec.id), i) for i in range(index)]
    assert [r.index for r in segment_rows(client, rec.id)] == list(range(index))
    row = recording_row(client, rec.id)
    assert row.segment_count == index and row.status == "open"
    uploads = [e for e in log_entries(client, rec.id) if e.action == "api:segment:upload"]
    assert len(uploads) == index


def test_other_device_cannot_upload_into_recording(client: TestClient, world: World) -> None:
    dev, intruder = world.device, world.other_device
    rec = dev.new_recording()
    dev.add_segments(rec, 1)
    open_recording(client, dev, rec)
    forged = intruder.make_segment(rec, 0, True, tone(1.0, seed=7), header_hash(rec.header))
    reply = put_segment(client, intruder, rec.id, 0, forged.envelope, forged.headers)
    assert reply.status_code == 404, reply.text
    assert stored_keys(client, rec.id) == []


def test_header_signed_by_another_device_refused(client: TestClient, world: World) -> None:
    dev = world.device
    rec = dev.new_recording()
    body = {**rec.create_body(), "header_signature": bytes(world.other_device.signing_key.sign(b"x").signature).hex()}
    reply = client.post("/v1/recordings", json=body, headers=dev.auth)
    assert reply.status_code == 422, reply.text
    assert "recording header" in reply.json()["detail"]
    with services(client).sessions() as session:
        assert session.get(Recording, str(rec.id)) is None


def test_device_key_replaced_in_database_reported_at_read(client: TestClient, world: World) -> None:
    rec = good_recording(client, world.device)
    other_key = bytes(world.other_device.signing_key.verify_key)
    db(client, lambda s: s.execute(update(Device).where(Device.id == world.device.id).values(public_key=other_key)))
    assert_refused_read(client, world, rec.id, "bad device signature on recording header")


@pytest.mark.parametrize("public_key", [b"", b"abc", bytes(33)], ids=["empty", "short", "long"])
def test_device_key_malformed_in_database_reported_at_read(client: TestClient, world: World, public_key: bytes) -> None:
    """A corrupted device key is an integrity failure (409, logged), never a 500."""
    rec = good_recording(client, world.device)
    db(client, lambda s: s.execute(update(Device).where(Device.id == world.device.id).values(public_key=public_key)))
    assert_refused_read(client, world, rec.id, "device key")


# --------------------------------------------------------------------------- (g) truncation (device destroyed)


def test_interrupted_recording_reads_what_exists(client: TestClient, world: World) -> None:
    """No final segment ever arrives: the chain verifies, the audio that exists is released, status says so."""
    dev = world.device
    rec = good_recording(client, dev, count=3, final=False)
    shown = client.get(f"/v1/evidence/{rec.id}", headers=bearer(world.officer)).json()
    assert shown["status"] == "open" and shown["segment_count"] == 3

    reply = client.post(f"/v1/recordings/{rec.id}/interrupt", headers=dev.auth)
    assert reply.status_code == 200 and reply.json()["status"] == "interrupted"

    shown = client.get(f"/v1/evidence/{rec.id}", headers=bearer(world.officer)).json()
    assert shown["status"] == "interrupted"
    assert shown["segment_count"] == 3 and shown["ended_at"] is not None
    assert [s["final"] for s in shown["segments"]] == [False, False, False]

    reply = read(client, world.officer, rec.id)
    assert reply.status_code == 200, reply.text
    assert reply.headers["X-Countersign-Frames"] == str(3 * 16000)
    pcm, _ = audio.decode(reply.content)
    np.testing.assert_array_equal(pcm, expected_pcm(rec))
    actions = [(e.action, e.outcome) for e in log_entries(client, rec.id)]
    assert ("api:recording:interrupted", "allowed") in actions
    assert actions[-1] == ("api:evidence:read", "allowed")
    assert ("api:evidence:integrity", "failed") not in actions

    # Once interrupted, a late (or forged) final segment is refused, and the evidence does not change.
    dev.add_segments(rec, 1, final=True)
    late = rec.segments[-1]
    reply = put_segment(client, dev, rec.id, late.index, late.envelope, late.headers)
    assert reply.status_code == 409, reply.text
    assert stored_keys(client, rec.id) == [segment_key(str(rec.id), i) for i in range(3)]


def test_silent_recording_expires_to_interrupted_and_reads(client: TestClient, world: World) -> None:
    """The device went silent (destroyed): listing expires it to interrupted; it still verifies and reads."""
    rec = good_recording(client, world.device, count=2, final=False)
    stale = utcnow() - timedelta(seconds=services(client).settings.interrupted_after_seconds + 60)
    db(client, lambda s: s.execute(update(Recording).where(Recording.id == str(rec.id)).values(last_activity_at=stale)))
    listed = client.get("/v1/evidence", headers=bearer(world.officer)).json()
    assert {r["id"]: r["status"] for r in listed}[str(rec.id)] == "interrupted"
    assert_reads_intact(client, world.officer, rec)


def test_truncated_open_recording_reads_partial(client: TestClient, world: World) -> None:
    """Still open (more may come): the audio so far verifies and reads; status is open."""
    rec = good_recording(client, world.device, count=2, final=False)
    assert recording_row(client, rec.id).status == "open"
    assert_reads_intact(client, world.officer, rec)


# --------------------------------------------------------------------------- no audio is not tampering
#
# A recording that verifies but holds no audio (an objection record; consent given and capture
# produced nothing) is reported as what it is: 409 "No audio to release", audited as a read that
# found no audio, never as a failed integrity check. Segments an insider removes from a recording
# the audit log saw them arrive in are still an integrity failure, however the rows are relabelled.

NO_AUDIO = "No audio to release"


def assert_no_audio(client: TestClient, world: World, rid: uuid.UUID, message: str) -> None:
    before = {e.seq for e in log_entries(client, rid)}
    reply = read(client, world.officer, rid)
    assert reply.status_code == 409, (reply.status_code, reply.text)
    detail = reply.json()["detail"]
    assert detail.startswith(NO_AUDIO) and message in detail, detail
    assert INTEGRITY not in detail
    assert not any(magic in reply.content for magic in AUDIO_MAGICS)
    new = [e for e in log_entries(client, rid) if e.seq not in before]
    assert [(e.action, e.outcome) for e in new] == [
        ("api:evidence:read", "allowed"),
        ("api:evidence:no-audio", "allowed"),
    ]
    assert new[1].detail["read"] == new[0].seq and message in new[1].detail["reason"]
    assert ("api:evidence:integrity", "failed") not in [(e.action, e.outcome) for e in log_entries(client, rid)]


def shown(client: TestClient, world: World, rid: uuid.UUID) -> dict[str, Any]:
    reply = client.get(f"/v1/evidence/{rid}", headers=bearer(world.officer))
    assert reply.status_code == 200, reply.text
    listed = {r["id"]: r for r in client.get("/v1/evidence", headers=bearer(world.officer)).json()}
    assert {k: listed[str(rid)][k] for k in ("status", "audio")} == {k: reply.json()[k] for k in ("status", "audio")}
    return reply.json()  # type: ignore[no-any-return]


def test_open_recording_without_segments_is_not_audio(client: TestClient, world: World) -> None:
    rec = world.device.new_recording()
    open_recording(client, world.device, rec)
    assert (shown(client, world, rec.id)["status"], shown(client, world, rec.id)["audio"]) == ("open", "none")
    assert_no_audio(client, world, rec.id, "no audio has arrived yet")


def test_objection_record_is_not_an_integrity_failure(client: TestClient, world: World) -> None:
    rec = world.device.new_recording(outcome="objected")
    open_recording(client, world.device, rec)
    assert {k: shown(client, world, rec.id)[k] for k in ("status", "audio")} == {
        "status": "objected",
        "audio": "objection",
    }
    assert_no_audio(client, world, rec.id, "this is an objection record")


def test_consented_recording_that_captured_nothing(client: TestClient, world: World) -> None:
    """Capture failed after consent: the device reports it cut short; "no audio was captured", with the status."""
    rec = world.device.new_recording()
    open_recording(client, world.device, rec)
    assert client.post(f"/v1/recordings/{rec.id}/interrupt", headers=world.device.auth).status_code == 200
    assert {k: shown(client, world, rec.id)[k] for k in ("status", "audio")} == {
        "status": "interrupted",
        "audio": "none",
    }
    assert_no_audio(client, world, rec.id, "no audio was captured: the recording is interrupted")


def test_silent_empty_recording_shows_interrupted(client: TestClient, world: World) -> None:
    """Never a segment and the device went silent: shown interrupted before the job runs, no audio captured."""
    rec = world.device.new_recording()
    open_recording(client, world.device, rec)
    stale = utcnow() - timedelta(seconds=services(client).settings.interrupted_after_seconds + 60)
    db(client, lambda s: s.execute(update(Recording).where(Recording.id == str(rec.id)).values(last_activity_at=stale)))
    assert shown(client, world, rec.id)["status"] == "interrupted"
    assert_no_audio(client, world, rec.id, "the recording is interrupted")


def _erase_all_segments(client: TestClient, rid: uuid.UUID, **relabel: Any) -> None:
    """The insider's cover-up: every segment object and row gone, the count zeroed, the row relabelled."""
    for key in stored_keys(client, rid):
        services(client).store.delete(key)

    def erase(session: Session) -> None:
        session.execute(delete(Segment).where(Segment.recording_id == str(rid)))
        session.execute(update(Recording).where(Recording.id == str(rid)).values(segment_count=0, **relabel))

    db(client, erase)


@pytest.mark.parametrize(
    ("relabel", "message"),
    [
        ({}, "recording is marked complete but its final segment is missing"),
        ({"status": "interrupted"}, "the audit log records a final segment (3) being received"),
        ({"status": "open"}, "the audit log records a final segment (3) being received"),
        # Made to look like an objection record: the audit log still saw the segments arrive.
        ({"status": "objected", "consent_outcome": "objected"}, "the audit log records a final segment (3)"),
    ],
    ids=["complete", "relabelled-interrupted", "relabelled-open", "relabelled-objection"],
)
def test_erased_segments_are_still_tampering(
    client: TestClient, world: World, relabel: dict[str, str], message: str
) -> None:
    """An insider deleting every segment row and object of a recording is flagged, never "no audio"."""
    rec = good_recording(client, world.device)
    _erase_all_segments(client, rec.id, **relabel)
    assert_refused_read(client, world, rec.id, message)


def test_empty_recording_relabelled_objection_is_tampering(client: TestClient, world: World) -> None:
    """Consent was given (the device signed it) and nothing arrived: calling it an objection record is a lie."""
    rec = world.device.new_recording()
    open_recording(client, world.device, rec)
    db(
        client,
        lambda s: s.execute(
            update(Recording).where(Recording.id == str(rec.id)).values(status="objected", consent_outcome="objected")
        ),
    )
    assert_refused_read(client, world, rec.id, "the database says consent objected, the signed header given")


def test_erased_rows_with_count_kept_are_tampering(client: TestClient, world: World) -> None:
    rec = good_recording(client, world.device, count=2, final=False)
    db(client, lambda s: s.execute(delete(Segment).where(Segment.recording_id == str(rec.id))))
    assert_refused_read(client, world, rec.id, "2 segments recorded, 0 found")


def test_erased_objects_only_are_tampering(client: TestClient, world: World) -> None:
    rec = good_recording(client, world.device, count=2, final=False)
    for key in stored_keys(client, rec.id):
        services(client).store.delete(key)
    assert_refused_read(client, world, rec.id, "segment 0 is missing from the store")


def test_truncation_relabelled_interrupted_is_detected(client: TestClient, world: World) -> None:
    """Rows and status are not signed, but the tamper-evident audit log recorded the final segment arriving."""
    rec = good_recording(client, world.device)
    services(client).store.delete(segment_key(str(rec.id), 3))

    def truncate(session: Session) -> None:
        _delete_final_and_recount(session, str(rec.id))
        session.execute(update(Recording).where(Recording.id == str(rec.id)).values(status="interrupted"))

    db(client, truncate)
    assert_refused_read(client, world, rec.id, "final segment")


# --------------------------------------------------------------------------- (h) the consent record


def _header_change(change: Callable[[dict[str, Any]], None]) -> Callable[[Session, str], None]:
    def attack(session: Session, rid: str) -> None:
        row = session.get(Recording, rid)
        assert row is not None
        header = {**row.header, "consent": dict(row.header["consent"])}
        change(header)
        row.header = header  # a new object, so the JSON column is written

    return attack


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda h: h["consent"].update(outcome="objected"), id="outcome"),
        pytest.param(lambda h: h["consent"].update(staff_code="S-999"), id="staff-code"),
        pytest.param(lambda h: h["consent"].update(method="verbal"), id="method"),
        pytest.param(lambda h: h["consent"].update(notice_version=h["consent"]["notice_version"] + 1), id="notice"),
        pytest.param(lambda h: h["consent"].pop("decided_at"), id="field-removed"),
        pytest.param(lambda h: h.update(started_at="2000-01-01T00:00:00+00:00"), id="started-at"),
        pytest.param(lambda h: h.update(sample_rate=8000), id="sample-rate"),
    ],
)
def test_tampered_header_reported_at_read(client: TestClient, world: World, change: Any) -> None:
    rec = good_recording(client, world.device)
    db(client, lambda s: _header_change(change)(s, str(rec.id)))
    assert recording_row(client, rec.id).header != rec.header  # the change really landed
    assert_refused_read(client, world, rec.id, "bad device signature on recording header")


def test_header_swapped_with_another_recordings_reported_at_read(client: TestClient, world: World) -> None:
    """R1's genuinely signed header (and signature) put on R2: it names R1, so R2's segments do not belong."""
    dev = world.device
    r1, r2 = dev.new_recording(outcome="given"), good_recording(client, dev)
    open_recording(client, dev, r1)

    def swap(session: Session) -> None:
        src, dst = session.get(Recording, str(r1.id)), session.get(Recording, str(r2.id))
        assert src is not None and dst is not None
        dst.header, dst.header_signature = dict(src.header), src.header_signature

    db(client, swap)
    assert_refused_read(client, world, r2.id, "segment 0 belongs to another recording")


def test_wiped_header_signature_reported_at_read(client: TestClient, world: World) -> None:
    rec = good_recording(client, world.device)
    db(client, lambda s: s.execute(update(Recording).where(Recording.id == str(rec.id)).values(header_signature=b"")))
    assert_refused_read(client, world, rec.id, "bad device signature on recording header")
