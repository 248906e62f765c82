"""The audit log: auditors read and export it; anyone may fetch the signed checkpoints.

Checkpoints, tree heads, consistency proofs and the service public key are
public on purpose: publishing them is what lets outsiders notice if the log is
ever rewritten. An inclusion proof shows an entry, so it is for auditors.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy import literal, select, union_all
from sqlalchemy.orm import Session

from api.core.audit import checkpoint_now, entry_fields, record_committed, record_event
from api.core.audit_tree import (
    NoTreeHead,
    TreeHead,
    TreeIncomplete,
    compact_range_at,
    consistency_proof,
    inclusion_proof,
    latest_tree_head,
    tree_head,
    tree_heads,
)
from api.core.deps import AuditorDep, Principal, ServicesDep, SessionDep, recording_in_scope, require
from api.core.models import AccessLog, AuditCheckpoint, AuditHead, Device, User
from api.core.responses import AUTHED, INPUT, NDJSONResponse, answers, json_refusals
from api.schemas import (
    AccessLogPublic,
    CheckpointPublic,
    ConsistencyProofPublic,
    InclusionProofPublic,
    TreeHeadPublic,
)
from evidence.audit_actions import Action
from evidence.audit_log import GENESIS, export_checkpoint_line, export_entry_line, export_header_line, timestamp

router = APIRouter(prefix="/v1/audit", tags=["audit"])
MAX_SEQ = 2**62  # sequence numbers fit a signed 64-bit column on every backend
AfterSeq = Annotated[int, Query(ge=0, le=MAX_SEQ, description="Only entries after this sequence number.")]
CustodyReader = Annotated[Principal, Depends(require("officer", "auditor"))]
EXPORTED = {200: {"description": "The log as JSON Lines: a header, each entry followed by its checkpoint if any."}}
TreeSize = Annotated[int, Query(ge=1, le=MAX_SEQ, description="A tree size the service signed a tree head for.")]
NO_TREE_HEAD = {404: "The service has signed no tree head (of that size) yet."}
NO_ENTRY = {404: "No entry with this sequence number."}
NOT_SIGNED = {409: "No signed tree head of that size, none covers the entry yet, or the tree is incomplete."}
NO_RECORDING = {404: "No such recording (one outside an officer's sites looks the same)."}


@router.get("", response_model=list[AccessLogPublic], responses=answers(AUTHED, INPUT))
def read_log(
    auditor: AuditorDep,
    session: SessionDep,
    services: ServicesDep,
    after: AfterSeq = 0,
    limit: Annotated[int, Query(ge=1, le=10000)] = 1000,
    target: str | None = None,
) -> list[AccessLogPublic]:
    query = select(AccessLog).where(AccessLog.seq > after)
    if target is not None:
        query = query.where(AccessLog.target == target)
    result = with_actor_names(session, session.scalars(query.order_by(AccessLog.seq).limit(limit)))
    record_committed(
        services.sessions, actor=auditor.actor, action=Action.AUDIT_READ, detail={"after": after, "rows": len(result)}
    )
    return result


def with_actor_names(session: Session, rows: Iterable[AccessLog]) -> list[AccessLogPublic]:
    """The entries, each `user:<id>` and `device:<id>` actor named: one statement for the whole page
    (a UNION of the two lookups), so an auditor, who may not list users, reads who did what."""
    entries = [AccessLogPublic.model_validate(r, from_attributes=True) for r in rows]
    wanted: dict[str, set[str]] = {"user": set(), "device": set()}
    for e in entries:
        kind, _, ident = e.actor.partition(":")
        if kind in wanted and ident:
            wanted[kind].add(ident)
    lookups = [
        select(literal(kind).label("kind"), model.id, model.name).where(model.id.in_(sorted(ids)))
        for kind, model, ids in (("user", User, wanted["user"]), ("device", Device, wanted["device"]))
        if ids
    ]
    if not lookups:
        return entries
    names = {f"{kind}:{ident}": name for kind, ident, name in session.execute(union_all(*lookups))}
    for e in entries:
        e.actor_name = names.get(e.actor)
    return entries


def _checkpoint_public(c: AuditCheckpoint) -> CheckpointPublic:
    return CheckpointPublic(
        seq=c.seq,
        chain_hash=c.chain_hash.hex(),
        at=timestamp(c.at),
        signature=c.signature.hex(),
        tree_root=c.tree_root.hex() if c.tree_root is not None else None,
    )


@router.get("/checkpoints", response_model=list[CheckpointPublic], responses=INPUT)
def checkpoints(
    session: SessionDep, after: AfterSeq = 0, limit: Annotated[int, Query(ge=1, le=10000)] = 1000
) -> list[CheckpointPublic]:
    """Signed checkpoints (public): sequence number, chain head, time, Ed25519 signature (and the tree root)."""
    rows = session.scalars(
        select(AuditCheckpoint).where(AuditCheckpoint.seq > after).order_by(AuditCheckpoint.seq).limit(limit)
    )
    return [_checkpoint_public(c) for c in rows]


@router.get("/public-key")
def public_key(services: ServicesDep) -> dict[str, str]:
    """The service's Ed25519 public key, which signs checkpoints (public)."""
    assert services.keys.signing_key is not None
    return {"algorithm": "ed25519", "public_key": bytes(services.keys.signing_key.verify_key).hex()}


def _head_public(head: TreeHead) -> TreeHeadPublic:
    return TreeHeadPublic.model_validate(head.public())


def _signed_head(session: SessionDep, size: int) -> TreeHead:
    try:
        return tree_head(session, size)
    except NoTreeHead as exc:
        raise HTTPException(409, f"the service signed no tree head of size {size}") from exc


@router.get("/tree-heads", response_model=list[TreeHeadPublic], responses=INPUT)
def list_tree_heads(
    session: SessionDep, after: AfterSeq = 0, limit: Annotated[int, Query(ge=1, le=10000)] = 1000
) -> list[TreeHeadPublic]:
    """Signed tree heads (public), oldest first: size, Merkle root, chain head, time, signature."""
    return [_head_public(h) for h in tree_heads(session, after, limit)]


@router.get("/tree-head", response_model=TreeHeadPublic, responses=answers(INPUT, NO_TREE_HEAD))
def get_tree_head(session: SessionDep, size: Annotated[int | None, TreeSize] = None) -> TreeHeadPublic:
    """The latest signed tree head, or the one of exactly `size` entries (public). Save it to check the log later."""
    try:
        return _head_public(latest_tree_head(session) if size is None else tree_head(session, size))
    except NoTreeHead as exc:
        raise HTTPException(404, str(exc)) from exc


@router.get(
    "/proof/{seq}",
    response_model=InclusionProofPublic,
    responses=answers(AUTHED, INPUT, NO_ENTRY, NOT_SIGNED),
)
def proof(
    seq: Annotated[int, Path(ge=1, le=MAX_SEQ)],
    auditor: AuditorDep,
    session: SessionDep,
    services: ServicesDep,
    size: Annotated[int | None, TreeSize] = None,
) -> InclusionProofPublic:
    """Entry `seq` with its RFC 9162 inclusion path to a signed tree head (by default the latest, signed now if
    none covers it yet). Check the head's signature with the service key, then the path: the entry is in the log
    every later tree head extends."""
    entry = session.get(AccessLog, seq)
    if entry is None:
        raise HTTPException(404, f"no entry {seq}")
    if size is not None:
        if size < seq:
            raise HTTPException(422, f"a tree of {size} entries does not hold entry {seq}")
        head = _signed_head(session, size)
    else:
        head = _covering_head(session, services, seq)
    try:
        path = inclusion_proof(session, seq, head.size)
    except TreeIncomplete as exc:
        raise HTTPException(409, str(exc)) from exc
    fields = {**entry_fields(entry), "entry_hash": entry.entry_hash.hex(), "chain_hash": entry.chain_hash.hex()}
    record_committed(
        services.sessions,
        actor=auditor.actor,
        action=Action.AUDIT_READ,
        target=f"audit:{seq}",
        detail={"proof": seq, "size": head.size},
    )
    return InclusionProofPublic(
        entry=fields,
        leaf_index=seq - 1,
        tree_size=head.size,
        path=[p.hex() for p in path],
        tree_head=_head_public(head),
    )


def _covering_head(session: SessionDep, services: ServicesDep, seq: int) -> TreeHead:
    """The latest tree head if it covers entry `seq`; else the service signs one now (as an export does)."""
    try:
        head = latest_tree_head(session)
        if head.size >= seq:
            return head
    except NoTreeHead:
        pass
    with services.sessions() as writer, writer.begin():
        checkpoint_now(writer)
    session.rollback()  # a fresh read: the tree head was committed by another transaction
    try:
        latest: TreeHead | None = latest_tree_head(session)
    except NoTreeHead:
        latest = None
    if latest is None or latest.size < seq:
        raise HTTPException(409, f"no signed tree head covers entry {seq}: the service signs only entries it wrote")
    return latest


@router.get(
    "/consistency",
    response_model=ConsistencyProofPublic,
    responses=answers(INPUT, NOT_SIGNED),
)
def consistency(
    session: SessionDep,
    old: Annotated[int, Query(ge=1, le=MAX_SEQ, description="The older signed tree size.")],
    new: Annotated[int, Query(ge=1, le=MAX_SEQ, description="The newer signed tree size.")],
) -> ConsistencyProofPublic:
    """RFC 9162 consistency proof between two signed tree heads (public): the tree at `new` extends the one
    at `old`, so nothing before `old` was rewritten."""
    if old > new:
        raise HTTPException(422, f"old ({old}) is larger than new ({new})")
    first, second = _signed_head(session, old), _signed_head(session, new)
    try:
        hashes = consistency_proof(session, old, new)
    except TreeIncomplete as exc:
        raise HTTPException(409, str(exc)) from exc
    return ConsistencyProofPublic(old=_head_public(first), new=_head_public(second), proof=[h.hex() for h in hashes])


def _entry_line(e: AccessLog) -> str:
    # The canonical bytes the entry hash covers, verbatim, so `audit verify` hashes what it reads; ASCII only
    # (U+2028, U+0085 and friends travel as \u escapes, so no reader splits a line on them).
    return export_entry_line(entry_fields(e), e.entry_hash, e.chain_hash)


@router.get(
    "/export", response_class=NDJSONResponse, responses=answers(EXPORTED, json_refusals(answers(AUTHED, INPUT)))
)
def export(
    auditor: AuditorDep,
    services: ServicesDep,
    after: AfterSeq = 0,
    until: Annotated[
        int | None, Query(ge=1, le=MAX_SEQ, description="Up to here (extended to the next checkpoint).")
    ] = None,
) -> StreamingResponse:
    """The log (or a range) as JSON Lines, with the checkpoints that cover it; the service signs one now.

    A full export (no `until`) carries every entry up to the current head and
    every checkpoint, so entries the service did not write itself (never signed)
    and entries removed after signing both show up in `audit verify`.
    """
    with services.sessions() as session, session.begin():
        record_event(session, actor=auditor.actor, action=Action.AUDIT_EXPORT, detail={"after": after, "until": until})
        checkpoint_now(session)
        end = session.scalar(select(AuditHead.seq).where(AuditHead.id == 1)) or 0
    complete = until is None or until >= end
    if not complete:
        covering = select(AuditCheckpoint.seq).where(AuditCheckpoint.seq >= until).order_by(AuditCheckpoint.seq)
        with services.sessions() as session:
            end = session.scalar(covering.limit(1)) or end
    assert services.keys.signing_key is not None
    service_key = bytes(services.keys.signing_key.verify_key)

    def checkpoint_line(cp: AuditCheckpoint) -> str:
        # A checkpoint signed before the tree has no root (and its v1 signature).
        return export_checkpoint_line(cp.seq, cp.chain_hash, timestamp(cp.at), cp.signature, cp.tree_root)

    def lines() -> Iterator[str]:
        with services.sessions() as session:
            prev = session.scalar(select(AccessLog.chain_hash).where(AccessLog.seq == after)) if after else GENESIS
            try:  # the perfect subtrees of the entries before the range, so the verifier can continue the root
                prefix: list[str] | None = [h.hex() for h in compact_range_at(session, after).hashes]
            except TreeIncomplete:
                prefix = None
            yield export_header_line(service_key, after + 1, prev or GENESIS, complete=complete, tree_prefix=prefix)
            cps = select(AuditCheckpoint).where(AuditCheckpoint.seq > after)
            if not complete:
                cps = cps.where(AuditCheckpoint.seq <= end)
            checkpoints = list(session.scalars(cps.order_by(AuditCheckpoint.seq)))  # one per 1,000 entries or so
            pending = 0
            entries = select(AccessLog).where(AccessLog.seq > after, AccessLog.seq <= end).order_by(AccessLog.seq)
            for entry in session.execute(entries.execution_options(yield_per=2000)).scalars():
                yield _entry_line(entry)
                # Each checkpoint right after the entry it covers: the verifier checks it there, in one pass.
                while pending < len(checkpoints) and checkpoints[pending].seq <= entry.seq:
                    yield checkpoint_line(checkpoints[pending])
                    pending += 1
            for cp in checkpoints[pending:]:  # signed entries the log no longer holds: the verifier says so
                yield checkpoint_line(cp)

    return StreamingResponse(lines(), media_type="application/x-ndjson")


@router.get(
    "/custody/{recording_id}", response_model=list[AccessLogPublic], responses=answers(AUTHED, INPUT, NO_RECORDING)
)
def custody(
    recording_id: uuid.UUID, request: Request, reader: CustodyReader, session: SessionDep, services: ServicesDep
) -> list[AccessLogPublic]:
    """Every event about one recording, oldest first (officers of its site, auditors)."""
    recording = recording_in_scope(request, services, session, reader, recording_id)
    target = f"recording:{recording.id}"
    rows = session.scalars(select(AccessLog).where(AccessLog.target == target).order_by(AccessLog.seq))
    result = with_actor_names(session, rows)
    record_committed(services.sessions, actor=reader.actor, action=Action.EVIDENCE_CUSTODY, target=target)
    return result
