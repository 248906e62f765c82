"""What a read trusts, checked against the tamper-evident log before anything is decrypted.

The database rows a read starts from (the device's public key, the recording's
site and device, each segment's ciphertext hash) are not signed: anyone who can
write the database could swap in a device key of their own, re-sign forged audio
with it, and point a recording at another site. So each of those facts is also
written into the audit log when it becomes true (enrolment: device, site, key;
creation: the recording's device and site; upload: each segment's ciphertext
hash), and a read compares the rows with those entries.

An entry counts only if the service wrote it: its content must hash to its chain
link from the previous entry, and that link must carry the service's seal (a
keyed BLAKE2b MAC, api.core.audit). Someone with database access but without the
service's key can delete or edit entries (the read then fails, loudly), but
cannot write one that passes.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.core.audit import ENTRY_COLUMNS, SIGNER_KEY, CheckpointPolicy, entry_fields
from api.core.models import AccessLog, Device, Recording, Segment
from evidence.audit_actions import Action
from evidence.audit_log import GENESIS, chain_hash, entry_hash
from evidence.errors import IntegrityError

Entry = TypeVar("Entry", bound=Any)  # an AccessLog, or a row of ENTRY_COLUMNS


@dataclass(frozen=True)
class Enrolment:
    """A device's identity as the log recorded it when it enrolled."""

    device_id: str
    site_id: str
    public_key: bytes
    entry: AccessLog  # the genuine entry itself (an evidence bundle carries it with its inclusion proof)


def _policy(session: Session) -> CheckpointPolicy:
    policy: CheckpointPolicy | None = session.info.get(SIGNER_KEY)
    if policy is None:  # fail closed: without the seal key nothing in the log can be trusted
        raise IntegrityError("the service cannot check its audit log (no signing key)")
    return policy


def _genuine(session: Session, policy: CheckpointPolicy, rows: Sequence[Entry]) -> list[Entry]:
    """The entries among `rows` that this service wrote, unaltered (one query for their predecessors)."""
    wanted = {row.seq - 1 for row in rows if row.seq > 1}
    prev: dict[int, bytes] = {
        seq: link
        for seq, link in session.execute(select(AccessLog.seq, AccessLog.chain_hash).where(AccessLog.seq.in_(wanted)))
    }
    genuine = []
    for row in rows:
        before = GENESIS if row.seq == 1 else prev.get(row.seq - 1)
        if before is None:
            continue
        link = chain_hash(before, entry_hash(entry_fields(row)))
        if link == row.chain_hash and hmac.compare_digest(policy.seal(link), row.seal):
            genuine.append(row)
    return genuine


def enrolment_of(session: Session, device_id: str) -> Enrolment:
    """The device's latest genuine enrolment entry; IntegrityError if there is none."""
    policy = _policy(session)
    rows = session.scalars(
        select(AccessLog)
        .where(
            AccessLog.action == Action.DEVICE_ENROL,
            AccessLog.target == f"device:{device_id}",
            AccessLog.outcome == "allowed",
        )
        .order_by(AccessLog.seq.desc())
    ).all()
    for row in _genuine(session, policy, rows):
        site, key = row.detail.get("site"), row.detail.get("public_key")
        if isinstance(site, str) and isinstance(key, str):
            try:
                return Enrolment(device_id, site, bytes.fromhex(key), row)
            except ValueError:
                continue
    raise IntegrityError(f"the audit log holds no enrolment of device {device_id}: its key cannot be trusted")


def check_recording(session: Session, recording: Recording, device: Device, rows: Sequence[Segment]) -> None:
    """Refuse the read unless the device key, the site and every segment hash match the log."""
    enrolment = enrolment_of(session, recording.device_id)
    if device.public_key != enrolment.public_key:
        raise IntegrityError("the device key in the database is not the one the device enrolled with")
    if device.site_id != enrolment.site_id or recording.site_id != enrolment.site_id:
        raise IntegrityError(f"the recording's site is not the site its device enrolled at ({enrolment.site_id})")

    policy = _policy(session)
    target = f"recording:{recording.id}"
    # Plain rows, not ORM objects: an hour's read re-checks 720 upload entries (api.core.audit.ENTRY_COLUMNS).
    created = session.execute(
        select(*ENTRY_COLUMNS).where(
            AccessLog.target == target, AccessLog.action.in_([Action.RECORDING_CREATE, Action.CONSENT_OBJECTED])
        )
    ).all()
    if not any(row.actor == f"device:{recording.device_id}" for row in _genuine(session, policy, created)):
        raise IntegrityError("the audit log does not record this device creating the recording")

    uploads = session.execute(
        select(*ENTRY_COLUMNS).where(AccessLog.target == target, AccessLog.action == Action.SEGMENT_UPLOAD)
    ).all()
    logged = {}
    for row in _genuine(session, policy, uploads):
        index, digest = row.detail.get("index"), row.detail.get("sha256")
        if isinstance(index, int) and isinstance(digest, str):
            logged[index] = digest
    for segment in rows:
        digest = logged.get(segment.index)
        if digest is None:
            raise IntegrityError(f"the audit log does not record segment {segment.index} being received")
        if digest != segment.ciphertext_sha256.hex():
            raise IntegrityError(f"segment {segment.index} is not the ciphertext the service received")
