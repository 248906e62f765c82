"""Offline recovery keys on the server side: register one, read a recording without the service,
import the signed record of that read into the audit log.

- add_offline: the public halves (`countersign recovery generate` wrote them) become an evidence
  key of custody "offline", current among offline keys; GET /v1/keys lists it with seal_to, so
  devices seal every new recording to it as well as to the service's current key. An older
  offline key becomes previous (still sealed to, until `countersign keys retire` stops that).
- recover: with only the offline private key, a database backup and the object store (no
  service key files, no passphrase, no running service): the device's signatures, the chain
  and every ciphertext and plaintext hash are checked, the data key is unsealed with the offline
  key, the audio is written, and a recovery record signed with the recovery key beside it.
  What cannot be checked without the service's key is the database against the sealed audit log
  (api.anchors): the device key is the backup's. The record names it, and the import checks it.
- import_recovery: the record's signature against the registered recovery verify key, then one
  audit entry (target recording:ID, so it is in the recording's custody); a record already
  imported is not imported again (by its SHA-256).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.anchors import check_recording
from api.core.audit import record_event
from api.core.db import make_engine, transaction
from api.core.keys import CURRENT, OFFLINE, PREVIOUS
from api.core.models import AccessLog, Device, EvidenceKey, Recording, Segment, utcnow
from api.core.storage import BlobStore, ObjectMissing
from api.core.storage.filesystem import FilesystemStore
from api.key_custody import Custody, KeyRefused, KeyUsageError
from api.retrieval import joined_audio, no_audio, verify_recording_chain
from evidence import recovery
from evidence.audit_actions import Action
from evidence.envelope import open_segment
from evidence.errors import IntegrityError
from evidence.text import neutral

RECORD_SUFFIX = ".recovery.json"
FORMATS = {".flac": "flac", ".wav": "wav"}


def _target(key_id: str) -> str:
    return f"evidence-key:{key_id}"


# --- add-offline -----------------------------------------------------------------------------------------


def add_offline(custody: Custody, public_file: Path) -> tuple[str, str | None]:
    """Register an offline key from its public file (audited). Returns (key id, the offline key it
    superseded, now previous). Registering the same key again is refused."""
    doc = recovery.read_public_document(public_file)
    kid = str(doc["key_id"])
    with transaction(custody.sessions) as session:
        if session.get(EvidenceKey, kid) is not None:
            raise KeyRefused(f"evidence key {kid} is already registered")
        old = session.scalar(
            select(EvidenceKey).where(EvidenceKey.state == CURRENT, EvidenceKey.custody == OFFLINE).with_for_update()
        )
        if old is not None:
            old.state = PREVIOUS
        session.add(
            EvidenceKey(
                key_id=kid,
                public_key=doc["public_key"],
                state=CURRENT,
                custody=OFFLINE,
                recovery_verify_key=doc["recovery_verify_key"],
            )
        )
        session.flush()
        record_event(
            session,
            actor="system",
            action=Action.KEY_OFFLINE_ADD,
            target=_target(kid),
            detail={
                "public_key": doc["public_key"].hex(),
                "recovery_key_id": doc["recovery_key_id"],
                "recovery_verify_key": doc["recovery_verify_key"].hex(),
                "previous_offline_key": old.key_id if old else None,
            },
        )
        return kid, old.key_id if old else None


# --- recover ---------------------------------------------------------------------------------------------


def open_store(spec: str, endpoint_url: str | None = None, region: str = "us-east-1") -> BlobStore:
    """A backup's object store: a folder (a copy of DATA/objects) or s3://BUCKET[/PREFIX]
    (credentials: the usual AWS chain). Only read."""
    if spec.startswith("s3://"):
        from api.core.storage.s3 import S3Store  # boto3 only when asked for

        bucket, _, prefix = spec.removeprefix("s3://").partition("/")
        if not bucket:
            raise KeyUsageError(f"--store {spec}: no bucket")
        return S3Store(bucket, prefix=prefix, endpoint_url=endpoint_url, region=region, check=False)
    path = Path(spec)
    if not path.is_dir():
        raise KeyUsageError(f"--store {spec}: no such folder")
    return FilesystemStore(path)


@dataclass(frozen=True)
class Recovered:
    output: Path
    record: Path
    frames: int
    output_sha256: str
    segments: int


def _segments_opened(
    store: BlobStore, key: recovery.OfflineKey, recording: Recording, rows: list[Segment]
) -> list[tuple[Segment, bytes]]:
    data_key = key.unseal({k.key_id: k.sealed for k in recording.sealed_keys})
    rid = uuid.UUID(recording.id)
    opened = []
    for row in rows:
        try:
            envelope = store.get(row.object_key)
        except ObjectMissing as exc:
            raise IntegrityError(f"segment {row.index} ({row.object_key}) is missing from the store") from exc
        if hashlib.sha256(envelope).digest() != row.ciphertext_sha256:
            raise IntegrityError(
                f"segment {row.index} ({row.object_key}) in the store is not the one the device signed"
            )
        plaintext = open_segment(data_key, rid, row.index, row.final, envelope)
        if hashlib.sha256(plaintext).digest() != row.plaintext_sha256:
            raise IntegrityError(f"segment {row.index} decrypts to audio the device did not sign")
        opened.append((row, plaintext))
    return opened


def recover(
    database_url: str,
    store: BlobStore,
    key: recovery.OfflineKey,
    recording_id: str,
    output: Path,
    *,
    operator: str,
    reason: str,
) -> Recovered:
    """Read one recording from a backup with the offline key: verify, decrypt, write the audio and
    the signed recovery record (OUTPUT.recovery.json). Nothing is written unless every check passed."""
    if not reason.strip() or not operator.strip():
        raise KeyUsageError("a recovery needs --operator and --reason: they go into the signed record")
    fmt = FORMATS.get(output.suffix.lower())
    if fmt is None:
        raise KeyUsageError(f"-o {output}: give a .flac or .wav file name")
    try:
        rid = str(uuid.UUID(recording_id))
    except ValueError:
        raise KeyUsageError(f"{recording_id!r} is not a recording id") from None
    record_path = output.with_name(output.name + RECORD_SUFFIX)
    engine = make_engine(database_url)
    try:
        with Session(engine) as session:
            recording = session.get(Recording, rid)
            if recording is None:
                raise KeyUsageError(f"no recording {rid} in this database")
            if recording.purge_state is not None:
                raise KeyRefused(f"recording {rid} was purged ({recording.purge_state}): nothing is left to read")
            device = session.get(Device, recording.device_id)
            rows = verify_recording_chain(session, recording, anchored=False)
            if not rows:
                raise no_audio(recording)  # verified: an objection record, or nothing was captured
            opened = _segments_opened(store, key, recording, rows)
            audio_bytes, frames = joined_audio(recording, opened, fmt)
            assert device is not None and device.public_key is not None  # verify_recording_chain checked
            segments = [
                {
                    "index": r.index,
                    "final": r.final,
                    "ciphertext_sha256": r.ciphertext_sha256.hex(),
                    "plaintext_sha256": r.plaintext_sha256.hex(),
                }
                for r in rows
            ]
            device_id, device_key = device.id, device.public_key.hex()
            status = recording.status
    finally:
        engine.dispose()
    digest = hashlib.sha256(audio_bytes).hexdigest()
    body: dict[str, Any] = {
        "recording_id": rid,
        "operator": operator,
        "reason": reason,
        "recovered_at": utcnow().isoformat(),
        "offline_key_id": key.key_id,
        "device_id": device_id,
        "device_public_key": device_key,
        "status": status,
        "segments": segments,
        "output": {"name": output.name, "format": fmt, "frames": frames, "sha256": digest},
    }
    document = recovery.sign_record(key, body)
    recovery.write_atomically(output, audio_bytes)
    recovery.write_atomically(record_path, (json.dumps(document, indent=2) + "\n").encode())
    return Recovered(output, record_path, frames, digest, len(rows))


# --- import-recovery -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Imported:
    recording_id: str
    record_sha256: str
    seq: int
    already: bool  # imported before: nothing appended
    log_check: str  # how the record compares with the service's own log and rows


def _log_check(session: Session, body: dict[str, Any]) -> str:
    """What the service's sealed log says of what the record claims was read (never a refusal: the
    read happened whatever it found, and the log must say so)."""
    recording = session.get(Recording, str(body.get("recording_id")))
    if recording is None or recording.purge_state is not None:
        return "recording no longer held: not compared"
    device = session.get(Device, recording.device_id)
    rows = list(session.scalars(select(Segment).where(Segment.recording_id == recording.id).order_by(Segment.index)))
    if device is None:
        return "mismatch: the recording's device is unknown"
    if (device.public_key or b"").hex() != body.get("device_public_key"):
        return "mismatch: the record's device key is not the recording's"
    claimed = [(s.get("index"), s.get("ciphertext_sha256")) for s in body.get("segments", [])]
    if claimed != [(r.index, r.ciphertext_sha256.hex()) for r in rows]:
        return "mismatch: the record's segments are not the recording's"
    try:
        check_recording(session, recording, device, rows)
    except IntegrityError as exc:
        return f"mismatch: {exc.detail}"
    return "match: device key, site and segment hashes as the audit log recorded them"


def import_recovery(custody: Custody, record_file: Path) -> Imported:
    """Verify a recovery record against its registered recovery key and append it to the audit log."""
    try:
        document = json.loads(record_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise KeyUsageError(f"cannot read {record_file}: {getattr(exc, 'strerror', None) or exc}") from None
    body = document.get("record") if isinstance(document, dict) else None
    if not isinstance(body, dict):
        raise recovery.RecordRefused(f"{record_file} is not a Countersign recovery record")
    kid = str(body.get("offline_key_id", ""))
    with transaction(custody.sessions) as session:
        row = session.get(EvidenceKey, kid)
        if row is None or row.custody != OFFLINE or row.recovery_verify_key is None:
            raise recovery.RecordRefused(f"it names offline key {kid!r}, which is not a registered offline key")
        verified = recovery.verify_record(document, row.recovery_verify_key)
        digest = recovery.record_sha256(verified)
        rid = str(verified.get("recording_id"))
        target = f"recording:{rid}"
        earlier = session.execute(
            select(AccessLog.seq, AccessLog.detail).where(
                AccessLog.target == target, AccessLog.action == Action.KEY_RECOVERY_IMPORT
            )
        ).all()
        for seq, detail in earlier:
            if detail.get("record_sha256") == digest:
                return Imported(rid, digest, seq, True, str(detail.get("log_check", "")))
        check = _log_check(session, verified)
        entry = record_event(
            session,
            actor=f"recovery:{neutral(str(verified.get('operator', '')), 60)}",
            action=Action.KEY_RECOVERY_IMPORT,
            target=target,
            purpose=str(verified.get("reason", "")),
            detail={
                "record": verified,
                "signature": document.get("signature"),
                "record_sha256": digest,
                "recovery_key_id": recovery.key_id_for(row.recovery_verify_key),
                "log_check": check,
            },
        )
    return Imported(rid, digest, entry.seq, False, check)
