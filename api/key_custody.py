"""Evidence key custody on the service's data directory: list, rotate, retire, rewrap, destroy, passphrase.

These act on the key files and the database directly (like `countersign server reset-admin`):
they need the private keys, so they run on the server with COUNTERSIGN_KEY_PASSPHRASE. Every
change is audited as the system. The state model (EvidenceKey.state, api.core.keys)::

    current ──rotate──► previous ──retire──► retired ──destroy──► destroyed
    (devices seal to it) (still accepted     (refused alone;      (private key file and every
                          and read)           still read)          data key sealed to it gone)

`rewrap` reseals to the current key the data keys of live recordings that are sealed to a
previous or retired key but not to the current one, so that a retired key can be destroyed.
A running service picks a rotation up by itself: a read needing a key id it does not hold
reloads the key directory (KeyCustodian.reload).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import nacl.public
from sqlalchemy import ColumnElement, delete, exists, func, insert, select
from sqlalchemy.orm import Session, aliased, sessionmaker

from api.core.audit import record_event
from api.core.db import make_engine, transaction
from api.core.keys import (
    CURRENT,
    DESTROYED,
    KEYS_DIR,
    PREVIOUS,
    RETIRED,
    SERVICE,
    KeyCustodian,
    destroy_key_file,
    reprotect,
    zero_knowledge_db,
)
from api.core.models import EvidenceKey, Recording, SealedKey, utcnow
from api.core.services import audit_sessions
from api.core.settings import MIN_PASSPHRASE_LENGTH, Settings, looks_like_placeholder
from evidence.audit_actions import Action
from evidence.errors import CountersignError, ExitCode, IntegrityError

Say = Callable[[str], None]
NEW_PASSPHRASE_ENV = "COUNTERSIGN_NEW_KEY_PASSPHRASE"
DEFAULT_BATCH = 1000


class KeyUsageError(CountersignError):
    """Cannot do that"""

    exit_code = ExitCode.USAGE


class KeyRefused(CountersignError):
    """Refused"""

    exit_code = ExitCode.FAILED


@dataclass
class Custody:
    settings: Settings
    keys: KeyCustodian
    sessions: sessionmaker[Session]


@contextmanager
def open_custody(settings: Settings) -> Iterator[Custody]:
    """The unlocked keys and audited sessions of the service at settings.data_dir."""
    keys = KeyCustodian.load(settings.data_dir, settings.passphrase())
    assert keys.signing_key is not None  # load() refuses to return without one
    engine = make_engine(settings.sqlalchemy_url)
    try:
        yield Custody(settings, keys, audit_sessions(engine, keys.signing_key, settings))
    finally:
        engine.dispose()


def key_path(data_dir: Path, key_id: str) -> Path:
    return data_dir / KEYS_DIR / f"evidence-{key_id}.key"


def _target(key_id: str) -> str:
    return f"evidence-key:{key_id}"


def _key(session: Session, key_id: str) -> EvidenceKey:
    row = session.get(EvidenceKey, key_id, with_for_update=True)
    if row is None:
        raise KeyUsageError(f"no evidence key {key_id!r}; 'countersign keys list' shows them")
    return row


def _current(session: Session) -> EvidenceKey:
    row = session.scalar(select(EvidenceKey).where(EvidenceKey.state == CURRENT, EvidenceKey.custody == SERVICE))
    if row is None:
        if zero_knowledge_db(session):  # nothing to rewrap to, and rotate would refuse: say why
            raise KeyRefused("zero-knowledge mode: the service holds no evidence key to rewrap to")
        raise KeyRefused("there is no current evidence key: run 'countersign keys rotate' to make one")
    return row


# --- list ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyRow:
    key_id: str
    created_at: datetime
    state: str
    custody: str
    recordings: int  # recordings with a data key sealed to it (purged ones have none left)
    file: bool  # its private key file is in the data directory


def list_keys(custody: Custody) -> list[KeyRow]:
    """Every evidence key with how many recordings are sealed to it: one GROUP BY query."""
    query = (
        select(
            EvidenceKey.key_id,
            EvidenceKey.created_at,
            EvidenceKey.state,
            EvidenceKey.custody,
            func.count(SealedKey.recording_id),
        )
        .outerjoin(SealedKey, SealedKey.key_id == EvidenceKey.key_id)
        .group_by(EvidenceKey.key_id, EvidenceKey.created_at, EvidenceKey.state, EvidenceKey.custody)
        .order_by(EvidenceKey.created_at, EvidenceKey.key_id)
    )
    with custody.sessions() as session:
        rows = session.execute(query).all()
    data_dir = custody.settings.data_dir
    return [KeyRow(k, c, s, cu, n, key_path(data_dir, k).exists()) for k, c, s, cu, n in rows]


# --- rotate, retire -------------------------------------------------------------------------------------


def rotate(custody: Custody) -> tuple[str, str | None]:
    """A new current key (file first, then its row); the old current becomes previous. Returns (new, old)."""
    data_dir = custody.settings.data_dir
    kid = custody.keys.add_evidence_key(data_dir, custody.settings.passphrase())
    try:
        with transaction(custody.sessions) as session:
            old = session.scalar(
                select(EvidenceKey)
                .where(EvidenceKey.state == CURRENT, EvidenceKey.custody == SERVICE)
                .with_for_update()
            )
            if old is not None:
                old.state = PREVIOUS
                session.flush()  # before the new row: at most one current (ix_evidence_keys_one_current)
            public = bytes(custody.keys.evidence_keys[kid].public_key)
            session.add(EvidenceKey(key_id=kid, public_key=public, state=CURRENT, custody=SERVICE))
            session.flush()
            record_event(
                session,
                actor="system",
                action=Action.KEY_ROTATE,
                target=_target(kid),
                detail={"previous": old.key_id if old else None},
            )
            old_id = old.key_id if old else None
    except BaseException:
        destroy_key_file(key_path(data_dir, kid))  # never used: nothing was sealed to it
        raise
    return kid, old_id


OTHER = aliased(SealedKey)  # another sealed key of the same recording, in the counts below


def _live_sealed_to(session: Session, key_id: str, unless: ColumnElement[bool]) -> int:
    """Live recordings sealed to key_id that have no other sealed key matching `unless`.

    `unless` is a condition on the aliased SealedKey `OTHER` (another row of the same recording).
    """
    return int(
        session.scalar(
            select(func.count())
            .select_from(SealedKey)
            .join(Recording, Recording.id == SealedKey.recording_id)
            .where(
                SealedKey.key_id == key_id,
                Recording.purge_state.is_(None),
                ~exists().where(OTHER.recording_id == SealedKey.recording_id, unless),
            )
        )
        or 0
    )


def _needing_rewrap(session: Session, key_id: str, current: str) -> int:
    """Live recordings sealed to key_id and not to the current key."""
    return _live_sealed_to(session, key_id, OTHER.key_id == current)


def retire(custody: Custody, key_id: str) -> int:
    """No longer sealed to, and no longer enough alone for new audio; reads still open it.
    Returns how many live recordings still need `keys rewrap` before it can be destroyed."""
    with transaction(custody.sessions) as session:
        row = _key(session, key_id)
        if row.state == CURRENT and row.custody == SERVICE:
            raise KeyRefused(f"{key_id} is the current evidence key: run 'countersign keys rotate' first")
        if row.state in (RETIRED, DESTROYED):
            raise KeyRefused(f"{key_id} is already {row.state}")
        current = session.scalar(
            select(EvidenceKey.key_id).where(EvidenceKey.state == CURRENT, EvidenceKey.custody == SERVICE)
        )
        pending = _needing_rewrap(session, key_id, current) if current else 0
        was, row.state, row.retired_at = row.state, RETIRED, utcnow()
        record_event(
            session,
            actor="system",
            action=Action.KEY_RETIRE,
            target=_target(key_id),
            detail={"was": was, "recordings_to_rewrap": pending},
        )
    return pending


# --- rewrap ----------------------------------------------------------------------------------------------


@dataclass
class RewrapResult:
    current: str = ""
    rewrapped: int = 0
    batches: int = 0
    dropped: int = 0
    failed: dict[str, str] = field(default_factory=dict)  # recording id -> why its data key did not open
    unheld: list[str] = field(default_factory=list)  # previous/retired keys whose private file is gone


def _batch_ids(session: Session, after: str, old: list[str], current: str, size: int) -> list[str]:
    """The next live recordings (by id) with a data key sealed to an old key and none to the current.

    Locked (PostgreSQL): a purge claiming one waits for this batch, and one it claimed first is
    seen as "shredding" here and skipped."""
    mine = aliased(SealedKey)
    theirs = aliased(SealedKey)
    return list(
        session.scalars(
            select(Recording.id)
            .where(
                Recording.id > after,
                Recording.purge_state.is_(None),
                exists().where(mine.recording_id == Recording.id, mine.key_id.in_(old)),
                ~exists().where(theirs.recording_id == Recording.id, theirs.key_id == current),
            )
            .order_by(Recording.id)
            .limit(size)
            .with_for_update(of=Recording)
        )
    )


def rewrap(
    custody: Custody,
    batch: int = DEFAULT_BATCH,
    drop_old: bool = False,
    say: Say = lambda _line: None,
    after_batch: Callable[[int], None] | None = None,
) -> RewrapResult:
    """Reseal to the current key every live recording's data key that is sealed to a previous or
    retired key but not to the current one; commit (and audit) per batch. A rerun skips what is
    done, so it is safe to interrupt anywhere. With drop_old, then delete the data keys sealed to
    retired keys of recordings that now have one sealed to the current key (after those commits)."""
    if batch < 1:
        raise KeyUsageError("--batch must be at least 1")
    result = RewrapResult()
    with custody.sessions() as session:
        current = _current(session)
        result.current, current_public = current.key_id, current.public_key
        olds = session.execute(
            select(EvidenceKey.key_id, EvidenceKey.state).where(
                EvidenceKey.state.in_((PREVIOUS, RETIRED)), EvidenceKey.custody == SERVICE
            )
        ).all()
    target = nacl.public.SealedBox(nacl.public.PublicKey(current_public))
    held = custody.keys.evidence_keys
    old = sorted(kid for kid, _ in olds if kid in held)
    result.unheld = sorted(kid for kid, _ in olds if kid not in held)
    for kid in result.unheld:
        say(f"warning: no private key file for {kid}: recordings sealed only to it cannot be rewrapped")
    boxes = {kid: nacl.public.SealedBox(held[kid]) for kid in old}
    after = ""
    while old:
        with transaction(custody.sessions) as session:
            ids = _batch_ids(session, after, old, result.current, batch)
            if not ids:
                break
            after = ids[-1]
            rows = session.execute(
                select(SealedKey.recording_id, SealedKey.key_id, SealedKey.sealed)
                .where(SealedKey.recording_id.in_(ids), SealedKey.key_id.in_(old))
                .order_by(SealedKey.recording_id, SealedKey.key_id)
            ).all()
            new: dict[str, bytes] = {}
            used: set[str] = set()
            for rid, kid, blob in rows:
                if rid in new:
                    continue
                try:
                    data_key = boxes[kid].decrypt(blob)
                except Exception as exc:  # nacl CryptoError: the sealed blob was altered
                    result.failed[rid] = str(IntegrityError(f"data key sealed to {kid} does not open ({exc})"))
                    continue
                new[rid] = target.encrypt(data_key)
                result.failed.pop(rid, None)
                used.add(kid)
            if new:
                session.execute(
                    insert(SealedKey),
                    [{"recording_id": rid, "key_id": result.current, "sealed": blob} for rid, blob in new.items()],
                )
                # Under the write lock now (SQLite: writers are serialised; PostgreSQL: the rows are
                # locked): anything a purge claimed meanwhile loses its new data key again.
                session.execute(
                    delete(SealedKey).where(
                        SealedKey.key_id == result.current,
                        SealedKey.recording_id.in_(list(new)),
                        SealedKey.recording_id.in_(
                            select(Recording.id).where(Recording.id.in_(list(new)), Recording.purge_state.is_not(None))
                        ),
                    )
                )
                record_event(
                    session,
                    actor="system",
                    action=Action.KEY_REWRAP,
                    target=_target(result.current),
                    detail={"recordings": len(new), "from": sorted(used), "first": min(new), "last": max(new)},
                )
        result.rewrapped += len(new)
        result.batches += 1
        say(f"batch {result.batches}: {len(new)} rewrapped ({result.rewrapped} in all)")
        if after_batch is not None:
            after_batch(result.batches)
        if len(ids) < batch:
            break
    if drop_old:
        result.dropped = drop_retired_sealed(custody, result.current)
        say(f"deleted {result.dropped} data keys sealed to retired keys")
    with transaction(custody.sessions) as session:
        record_event(
            session,
            actor="system",
            action=Action.KEY_REWRAP,
            target=_target(result.current),
            detail={
                "complete": True,
                "recordings": result.rewrapped,
                "batches": result.batches,
                "dropped": result.dropped,
                "failed": sorted(result.failed),
            },
        )
    return result


def drop_retired_sealed(custody: Custody, current: str) -> int:
    """Delete data keys sealed to retired keys of recordings that have one sealed to the current key."""
    mine = aliased(SealedKey)
    with transaction(custody.sessions) as session:
        retired = list(
            session.scalars(
                select(EvidenceKey.key_id).where(EvidenceKey.state == RETIRED, EvidenceKey.custody == SERVICE)
            )
        )
        if not retired:
            return 0
        gone = session.execute(
            delete(SealedKey)
            .where(
                SealedKey.key_id.in_(retired),
                exists().where(mine.recording_id == SealedKey.recording_id, mine.key_id == current),
            )
            .execution_options(synchronize_session=False)
        )
        count = int(gone.rowcount or 0)  # type: ignore[attr-defined]
        record_event(
            session,
            actor="system",
            action=Action.KEY_DROP_SEALED,
            target=_target(current),
            detail={"retired_keys": retired, "sealed_keys_deleted": count},
        )
    return count


# --- destroy ---------------------------------------------------------------------------------------------


def sealed_only_to(session: Session, key_id: str) -> int:
    """Live recordings whose data key is sealed to key_id and to no other key."""
    return _live_sealed_to(session, key_id, OTHER.key_id != key_id)


def destroy(custody: Custody, key_id: str) -> int:
    """Destroy a retired key: delete every data key sealed to it, mark it destroyed (one audited
    transaction), then overwrite and unlink its private key file. Refused while any live recording
    is sealed only to it. A rerun after a crash between the two finishes the file. Returns how
    many sealed data keys were deleted."""
    path = key_path(custody.settings.data_dir, key_id)
    deleted = 0
    with transaction(custody.sessions) as session:
        row = _key(session, key_id)
        if row.custody != SERVICE:
            raise KeyRefused(f"{key_id} is an offline key: the service holds no private half to destroy")
        if row.state == DESTROYED:
            if not path.exists():
                raise KeyRefused(f"{key_id} is already destroyed")
        elif row.state != RETIRED:
            raise KeyRefused(f"{key_id} is {row.state}: retire it first ('countersign keys retire {key_id}')")
        else:
            only = sealed_only_to(session, key_id)
            if only:
                raise KeyRefused(
                    f"{only} live recordings are sealed only to {key_id}; "
                    "run 'countersign keys rewrap' first (destroying it would lose them)"
                )
            gone = session.execute(
                delete(SealedKey).where(SealedKey.key_id == key_id).execution_options(synchronize_session=False)
            )
            deleted = int(gone.rowcount or 0)  # type: ignore[attr-defined]
            row.state, row.destroyed_at = DESTROYED, utcnow()
            record_event(
                session,
                actor="system",
                action=Action.KEY_DESTROY,
                target=_target(key_id),
                detail={"sealed_keys_deleted": deleted, "key_file": path.name},
            )
    destroy_key_file(path)
    custody.keys.evidence_keys.pop(key_id, None)
    return deleted


# --- passphrase ------------------------------------------------------------------------------------------


def read_new_passphrase(path: Path | None) -> bytes:
    """The new passphrase: from a file (first line) or COUNTERSIGN_NEW_KEY_PASSPHRASE; checked like the old."""
    if path is not None:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise KeyUsageError(
                f"cannot read --new-passphrase-file {path}: {getattr(exc, 'strerror', None) or exc}"
            ) from None
        value = lines[0] if lines else ""
        where = f"--new-passphrase-file {path}"
    else:
        value = os.environ.get(NEW_PASSPHRASE_ENV, "")
        where = NEW_PASSPHRASE_ENV
    if not value:
        raise KeyUsageError(f"give the new passphrase with --new-passphrase-file or {NEW_PASSPHRASE_ENV}")
    if looks_like_placeholder(value) or len(value) < MIN_PASSPHRASE_LENGTH:
        raise KeyUsageError(f"{where} must be a real secret of at least {MIN_PASSPHRASE_LENGTH} characters")
    return value.encode()


def change_passphrase(settings: Settings, new: bytes, say: Say = lambda _line: None) -> list[str]:
    """Re-encrypt every key file under `new` (crash-safe: api.core.keys.reprotect), then check that
    they all open with it and audit the change. Returns the files re-encrypted."""
    old = settings.passphrase()
    if old == new:
        raise KeyUsageError("the new passphrase is the current one")
    changed = reprotect(settings.data_dir / KEYS_DIR, old, new, say)
    keys = KeyCustodian.load(settings.data_dir, new)  # every file opens with the new passphrase
    assert keys.signing_key is not None
    engine = make_engine(settings.sqlalchemy_url)
    try:
        with transaction(audit_sessions(engine, keys.signing_key, settings)) as session:
            record_event(
                session,
                actor="system",
                action=Action.KEY_PASSPHRASE,
                target="keys",
                detail={"files": changed},
            )
    finally:
        engine.dispose()
    return changed
