"""The red team's forgery, replayed: someone who can write the database and the store, and holds no key.

They swap a device's key for one of their own (or add a device), re-sign audio of
their choosing with it, seal a fresh data key to the public evidence key, and
rewrite the segment rows and objects; or they move a recording to another site.
Each forgery below is first shown to be internally consistent (its chain verifies
with the swapped key), so only the anchors in the audit log can catch it.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from typing import Any

import nacl.public
import nacl.signing
from fastapi.testclient import TestClient
from sqlalchemy import delete, update
from sqlalchemy.orm import Session

from api.core.audit import entry_fields
from api.core.models import AccessLog, AuditHead, Device, Recording, SealedKey, Segment, utcnow
from api.core.storage.interface import segment_key
from evidence import audio
from evidence.audit_log import chain_hash, entry_hash
from evidence.chain import SegmentStatement, SignedSegment, header_hash, sign_header, sign_statement, verify_chain
from evidence.envelope import new_data_key, seal_segment
from tests.api.test_audit_log import attacker_sql
from tests.api.test_tamper import assert_refused_read, db, good_recording, read, services
from tests.conftest import World, bearer
from tests.support.factories import SimRecording, tone


@dataclass
class Forgery:
    header: dict[str, Any]
    header_signature: bytes
    sealed: bytes
    segments: list[tuple[SegmentStatement, bytes, bytes]]  # statement, signature, envelope


def forge(rec: SimRecording, key: nacl.signing.SigningKey, evidence_keys: dict[str, bytes], device_id: str) -> Forgery:
    """Re-sign different audio (a 880 Hz tone) as this recording, under `key`, with a fresh data key."""
    header = {**rec.header, "device_id": device_id}
    data_key = new_data_key()
    _, public = next(iter(evidence_keys.items()))
    sealed = bytes(nacl.public.SealedBox(nacl.public.PublicKey(public)).encrypt(data_key))
    prev, out = header_hash(header), []
    for seg in rec.segments:
        plaintext = audio.encode(tone(1.0, freq=880.0, seed=99 + seg.index), 16000)
        envelope = seal_segment(data_key, rec.id, seg.index, seg.final, plaintext)
        st = SegmentStatement(
            rec.id,
            seg.index,
            seg.final,
            hashlib.sha256(envelope).digest(),
            hashlib.sha256(plaintext).digest(),
            prev,
        )
        out.append((st, sign_statement(key, st), envelope))
        prev = st.link_hash()
    forgery = Forgery(header, sign_header(key, header), sealed, out)
    # The forgery is sound on its own terms: with the swapped key, the chain verifies.
    signed = [SignedSegment(st, sig) for st, sig, _ in out]
    assert verify_chain(key.verify_key, header, forgery.header_signature, signed).final
    return forgery


def install(client: TestClient, rec: SimRecording, forgery: Forgery, key_id: str, device_id: str) -> None:
    """Write the forgery over the recording, as an insider with database and store access would."""
    store = services(client).store
    rid = str(rec.id)

    def rewrite(session: Session) -> None:
        session.execute(
            update(Recording)
            .where(Recording.id == rid)
            .values(
                device_id=device_id,
                header=forgery.header,
                header_signature=forgery.header_signature,
                head_hash=forgery.segments[-1][0].link_hash(),
            )
        )
        session.execute(delete(SealedKey).where(SealedKey.recording_id == rid))
        session.add(SealedKey(recording_id=rid, key_id=key_id, sealed=forgery.sealed))
        for st, sig, envelope in forgery.segments:
            session.execute(
                update(Segment)
                .where(Segment.recording_id == rid, Segment.index == st.index)
                .values(
                    ciphertext_sha256=st.ciphertext_sha256,
                    plaintext_sha256=st.plaintext_sha256,
                    prev_hash=st.prev_hash,
                    signature=sig,
                    size=len(envelope),
                )
            )

    db(client, rewrite)
    for st, _, envelope in forgery.segments:
        store.delete(segment_key(rid, st.index))  # with the bucket's credentials, no hold in the way
        store.put(segment_key(rid, st.index), envelope)


def test_a_swapped_device_key_is_refused(client: TestClient, world: World) -> None:
    rec = good_recording(client, world.device)
    rogue = nacl.signing.SigningKey.generate()
    forgery = forge(rec, rogue, world.device.evidence_keys, world.device.id)
    install(client, rec, forgery, next(iter(world.device.evidence_keys)), world.device.id)
    db(
        client,
        lambda s: s.execute(
            update(Device).where(Device.id == world.device.id).values(public_key=bytes(rogue.verify_key))
        ),
    )
    assert_refused_read(client, world, rec.id, "not the one the device enrolled with")


def test_a_rogue_device_row_is_refused(client: TestClient, world: World) -> None:
    rec = good_recording(client, world.device)
    rogue, rogue_id = nacl.signing.SigningKey.generate(), str(uuid.uuid4())
    db(
        client,
        lambda s: s.add(
            Device(
                id=rogue_id,
                name="rogue",
                site_id="north",
                public_key=bytes(rogue.verify_key),
                enrolled_at=utcnow(),
            )
        ),
    )
    forgery = forge(rec, rogue, world.device.evidence_keys, rogue_id)
    install(client, rec, forgery, next(iter(world.device.evidence_keys)), rogue_id)
    assert_refused_read(client, world, rec.id, f"no enrolment of device {rogue_id}")


def test_a_forged_enrolment_entry_does_not_help(client: TestClient, world: World) -> None:
    """Append a correctly chained enrolment for the rogue key: without the service's seal it does not count."""
    rec = good_recording(client, world.device)
    rogue = nacl.signing.SigningKey.generate()
    forgery = forge(rec, rogue, world.device.evidence_keys, world.device.id)
    install(client, rec, forgery, next(iter(world.device.evidence_keys)), world.device.id)

    def append_forged_enrolment(session: Session) -> None:
        session.execute(update(Device).where(Device.id == world.device.id).values(public_key=bytes(rogue.verify_key)))
        head = session.get(AuditHead, 1)
        assert head is not None
        entry = AccessLog(
            seq=head.seq + 1,
            at=utcnow(),
            actor=f"device:{world.device.id}",
            action="api:device:enrol",
            target=f"device:{world.device.id}",
            outcome="allowed",
            purpose=None,
            detail={"site": "north", "public_key": bytes(rogue.verify_key).hex()},
        )
        entry.entry_hash = entry_hash(entry_fields(entry))
        entry.chain_hash = chain_hash(head.chain_hash, entry.entry_hash)
        entry.seal = bytes(32)  # the seal key never left the service
        session.add(entry)
        head.seq, head.chain_hash = entry.seq, entry.chain_hash

    db(client, append_forged_enrolment)
    assert_refused_read(client, world, rec.id, "not the one the device enrolled with")


def test_moving_a_recording_to_another_site_is_refused(client: TestClient, world: World) -> None:
    rec = good_recording(client, world.device)
    db(client, lambda s: s.execute(update(Recording).where(Recording.id == str(rec.id)).values(site_id="south")))
    # The other site's officer now sees it in scope, but the read refuses: the device enrolled at north.
    reply = read(client, world.other_officer, rec.id)
    assert reply.status_code == 409, reply.text
    assert "site its device enrolled at (north)" in reply.json()["detail"]
    assert not reply.content.startswith(b"fLaC")


def test_rewriting_the_log_entries_too_is_refused(client: TestClient, world: World) -> None:
    """The insider also edits the enrolment and upload entries to match the forgery (guards dropped)."""
    rec = good_recording(client, world.device)
    rogue = nacl.signing.SigningKey.generate()
    forgery = forge(rec, rogue, world.device.evidence_keys, world.device.id)
    install(client, rec, forgery, next(iter(world.device.evidence_keys)), world.device.id)
    rogue_hex = bytes(rogue.verify_key).hex()
    statements = [
        f"UPDATE devices SET public_key = x'{rogue_hex}' WHERE id = '{world.device.id}'",
        "UPDATE access_log SET detail = '"
        + json.dumps({"site": "north", "public_key": rogue_hex})
        + f"' WHERE action = 'api:device:enrol' AND target = 'device:{world.device.id}' AND outcome = 'allowed'",
    ]
    for st, _, _ in forgery.segments:
        detail = {"index": st.index, "final": st.final, "sha256": st.ciphertext_sha256.hex()}
        statements.append(
            f"UPDATE access_log SET detail = '{json.dumps(detail)}' WHERE action = 'api:segment:upload' "
            f"AND target = 'recording:{rec.id}' AND CAST(detail AS TEXT) LIKE '%\"index\": {st.index},%'"
        )
    attacker_sql(client, *statements)
    assert_refused_read(client, world, rec.id, f"no enrolment of device {world.device.id}")


def test_enrolment_entry_names_site_and_key(client: TestClient, world: World) -> None:
    reply = client.get("/v1/audit", headers=bearer(world.auditor))
    assert reply.status_code == 200, reply.text
    entries = reply.json()
    enrolments = [e for e in entries if e["action"] == "api:device:enrol" and e["outcome"] == "allowed"]
    keys = {e["detail"]["public_key"] for e in enrolments}
    assert bytes(world.device.signing_key.verify_key).hex() in keys
    assert {e["detail"]["site"] for e in enrolments} == {"north", "south"}
