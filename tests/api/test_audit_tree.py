"""The audit log's Merkle tree: signed tree heads, inclusion and consistency proofs, and the insider who edits the DB.

Every proof the service gives is checked here the way an auditor checks it
(evidence.audit_log.verify_tree_head, evidence.merkle), with the service key
from `server init`, never trusting the reply. The attacks go straight to the
database (tests.api.test_audit_log.attacker_sql drops the append-only guards).
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from api.bootstrap import InitResult
from api.core.audit_tree import consistency_proof, inclusion_proof, latest_tree_head
from api.core.models import AccessLog, AuditHead, AuditNode
from api.core.settings import Settings
from evidence.audit_log import ENTRY_FIELDS, GENESIS, chain_hash, entry_hash, verify_export, verify_tree_head
from evidence.merkle import CompactRange, root, verify_consistency, verify_inclusion
from tests.api.test_audit_log import activity, attacker_sql, export, public_key, services
from tests.client.conftest import Live, live  # noqa: F401  (the live-server fixture, for the CLI tests)
from tests.conftest import World, bearer, countersign


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "server", env="development", audit_checkpoint_entries=5)


def signed(head: dict[str, Any], key: bytes) -> bool:
    return verify_tree_head(
        key,
        head["size"],
        bytes.fromhex(head["root"]),
        bytes.fromhex(head["chain_hash"]),
        head["at"],
        bytes.fromhex(head["signature"]),
    )


def proven(reply: dict[str, Any], key: bytes) -> bool:
    """What `countersign audit prove` checks: the entry hashes to its leaf, the head is signed, the path holds."""
    head = reply["tree_head"]
    leaf = entry_hash({k: reply["entry"][k] for k in ENTRY_FIELDS})
    path = [bytes.fromhex(h) for h in reply["path"]]
    return (
        signed(head, key)
        and reply["tree_size"] == head["size"]
        and verify_inclusion(leaf, reply["leaf_index"], reply["tree_size"], path, bytes.fromhex(head["root"]))
    )


def heads(client: TestClient) -> list[dict[str, Any]]:
    reply = client.get("/v1/audit/tree-heads")
    assert reply.status_code == 200, reply.text
    return list(reply.json())


def prove(client: TestClient, world: World, seq: int, **params: int) -> dict[str, Any]:
    reply = client.get(f"/v1/audit/proof/{seq}", params=params, headers=bearer(world.auditor))
    assert reply.status_code == 200, reply.text
    return dict(reply.json())


def leaves_from_fields(client: TestClient) -> list[bytes]:
    with services(client).sessions() as session:
        from api.core.audit import entry_fields

        return [entry_hash(entry_fields(r)) for r in session.scalars(select(AccessLog).order_by(AccessLog.seq))]


def test_tree_heads_are_signed_roots_of_the_log(client: TestClient, world: World, initialised: InitResult) -> None:
    activity(client, world)
    key = public_key(initialised)
    listed = heads(client)
    assert len(listed) >= 4
    leaves = leaves_from_fields(client)
    with services(client).sessions() as session:
        chains: dict[int, bytes] = {s: c for s, c in session.execute(select(AccessLog.seq, AccessLog.chain_hash))}
    for head in listed:
        assert signed(head, key)
        assert bytes.fromhex(head["root"]) == root(leaves[: head["size"]])  # a naive root of the entries' own hashes
        assert bytes.fromhex(head["chain_hash"]) == chains[head["size"]]
    assert client.get("/v1/audit/tree-head").json() == listed[-1]
    assert client.get("/v1/audit/tree-head", params={"size": listed[0]["size"]}).json() == listed[0]
    assert client.get("/v1/audit/tree-head", params={"size": 10**9}).status_code == 404
    checkpoints = client.get("/v1/audit/checkpoints").json()
    assert {c["seq"]: c["tree_root"] for c in checkpoints} == {h["size"]: h["root"] for h in listed}
    paged = client.get("/v1/audit/tree-heads", params={"after": listed[0]["size"], "limit": 2}).json()
    assert paged == listed[1:3]
    with services(client).sessions() as session:
        latest = latest_tree_head(session)
        assert latest.public() == listed[-1] and latest.at_text == listed[-1]["at"]
        assert verify_tree_head(key, latest.size, latest.root, latest.chain_hash, latest.at_text, latest.signature)
        assert latest.message.startswith(b"countersign/audit-tree-head/v1\n")


def test_every_entry_proves_into_every_tree_head(client: TestClient, world: World, initialised: InitResult) -> None:
    activity(client, world)
    key = public_key(initialised)
    listed = heads(client)
    size = listed[-1]["size"]
    for seq in range(1, size + 1):
        reply = prove(client, world, seq)
        assert reply["leaf_index"] == seq - 1 and reply["entry"]["seq"] == seq
        assert proven(reply, key), seq
    older = listed[1]
    for seq in range(1, older["size"] + 1):
        reply = prove(client, world, seq, size=older["size"])
        assert reply["tree_head"] == older and proven(reply, key)
    # The module functions the evidence bundle uses give the same paths.
    with services(client).sessions() as session:
        assert [p.hex() for p in inclusion_proof(session, 3, older["size"])] == prove(client, world, 3, **{
            "size": older["size"]
        })["path"]  # fmt: skip
        assert inclusion_proof(session, 1, 1) == []


def test_proof_of_an_entry_past_the_last_head_signs_one(
    client: TestClient, world: World, initialised: InitResult
) -> None:
    activity(client, world, 1)
    with services(client).sessions() as session:
        last = session.scalar(select(AuditHead.seq))
    reply = prove(client, world, last)  # not covered yet: the service signs a tree head now, as an export does
    assert reply["tree_size"] >= last and proven(reply, public_key(initialised))


def test_consistency_between_signed_heads(client: TestClient, world: World, initialised: InitResult) -> None:
    activity(client, world)
    key = public_key(initialised)
    listed = heads(client)
    for old in listed:
        for new in listed:
            if old["size"] > new["size"]:
                continue
            reply = client.get("/v1/audit/consistency", params={"old": old["size"], "new": new["size"]})
            assert reply.status_code == 200, reply.text
            body = reply.json()
            assert body["old"] == old and body["new"] == new and signed(body["new"], key)
            proof = [bytes.fromhex(h) for h in body["proof"]]
            assert verify_consistency(
                old["size"], new["size"], bytes.fromhex(old["root"]), bytes.fromhex(new["root"]), proof
            )
    with services(client).sessions() as session:
        assert consistency_proof(session, listed[0]["size"], listed[0]["size"]) == []


def test_roles_and_bad_input(client: TestClient, world: World) -> None:
    activity(client, world, 1)
    listed = heads(client)
    first, size = listed[0]["size"], listed[-1]["size"]
    for token in (world.officer, world.admin, world.device.token):
        assert client.get("/v1/audit/proof/1", headers=bearer(token)).status_code == 403
    assert client.get("/v1/audit/proof/1").status_code == 401
    assert client.get("/v1/audit/tree-heads").status_code == 200  # public, like the checkpoints
    assert client.get("/v1/audit/consistency", params={"old": first, "new": size}).status_code == 200
    auditor = bearer(world.auditor)
    assert client.get("/v1/audit/proof/999999", headers=auditor).status_code == 404
    assert client.get("/v1/audit/proof/3", params={"size": 2}, headers=auditor).status_code == 422
    assert client.get("/v1/audit/proof/3", params={"size": size - 1}, headers=auditor).status_code == 409
    assert client.get("/v1/audit/proof/0", headers=auditor).status_code == 422
    assert client.get("/v1/audit/proof/x", headers=auditor).status_code == 422
    assert client.get("/v1/audit/consistency", params={"old": size, "new": 1}).status_code == 422
    assert client.get("/v1/audit/consistency", params={"old": size - 1, "new": size}).status_code == 409
    assert client.get("/v1/audit/consistency", params={"old": 1}).status_code == 422
    # Proofs are read access to the log: each one is audited.
    prove(client, world, 1)
    with services(client).sessions() as session:
        row = session.scalars(select(AccessLog).where(AccessLog.target == "audit:1")).first()
        assert row is not None and row.actor.startswith("user:") and row.detail["proof"] == 1


def test_tampered_entry_fails_inclusion(client: TestClient, world: World, initialised: InitResult) -> None:
    """An insider edits a signed entry, recomputing its entry hash so the row looks consistent."""
    activity(client, world)
    key = public_key(initialised)
    size = heads(client)[-1]["size"]
    with services(client).sessions() as session:
        from api.core.audit import entry_fields

        victim = session.scalars(
            select(AccessLog).where(AccessLog.action == "api:evidence:read", AccessLog.seq <= size)
        ).first()
        assert victim is not None
        fields = {**entry_fields(victim), "purpose": "routine check, nothing to see"}
    assert proven(prove(client, world, victim.seq, size=size), key)
    attacker_sql(
        client,
        f"UPDATE access_log SET purpose = 'routine check, nothing to see', entry_hash = x'{entry_hash(fields).hex()}' "
        f"WHERE seq = {victim.seq}",
    )
    reply = prove(client, world, victim.seq, size=size)
    assert reply["entry"]["purpose"] == "routine check, nothing to see"
    assert not proven(reply, key)
    # Its neighbours' paths hold the edited hash as a sibling: they fail too (detected, never silently wrong).
    neighbour = victim.seq + 1 if victim.seq % 2 else victim.seq - 1
    assert not proven(prove(client, world, neighbour, size=size), key)


def rewrite_everything(client: TestClient, victim_seq: int, purpose: str) -> None:
    """The hostile insider without the key: edit one entry, recompute every entry hash, chain link and node."""
    with services(client).sessions() as session:
        from api.core.audit import entry_fields

        rows = list(session.scalars(select(AccessLog).order_by(AccessLog.seq)))
        filled = session.scalar(select(AuditHead.nodes_filled)) or 0
        fields_list = [entry_fields(r) for r in rows]
    statements, prev = [], GENESIS
    acc = CompactRange()
    nodes = []
    for row, fields in zip(rows, fields_list, strict=True):
        if row.seq == victim_seq:
            fields = {**fields, "purpose": purpose}
        leaf = entry_hash(fields)
        prev = chain_hash(prev, leaf)
        if acc.size < filled:
            nodes += acc.append(leaf)
        if row.seq >= victim_seq:
            extra = f", purpose = '{purpose}'" if row.seq == victim_seq else ""
            statements.append(
                f"UPDATE access_log SET entry_hash = x'{leaf.hex()}', chain_hash = x'{prev.hex()}'{extra} "
                f"WHERE seq = {row.seq}"
            )
    statements += [
        f"UPDATE audit_nodes SET hash = x'{h.hex()}' WHERE level = {level} AND \"index\" = {index}"
        for level, index, h in nodes
    ]
    attacker_sql(client, *statements, f"UPDATE audit_head SET chain_hash = x'{prev.hex()}'")


def test_rewritten_log_fails_consistency_with_a_saved_head(
    client: TestClient, world: World, initialised: InitResult
) -> None:
    activity(client, world, 1)
    key = public_key(initialised)
    saved = heads(client)[-1]  # an outsider keeps this one
    activity(client, world, 1)
    later = heads(client)[-1]
    assert later["size"] > saved["size"]
    with services(client).sessions() as session:
        victim = session.scalar(select(AccessLog.seq).where(AccessLog.seq <= saved["size"] - 2).order_by(AccessLog.seq))
    assert victim is not None
    rewrite_everything(client, victim, "rewritten")
    # The service's own proofs now come from the rewritten nodes: against the saved root they fail.
    reply = client.get("/v1/audit/consistency", params={"old": saved["size"], "new": later["size"]}).json()
    proof = [bytes.fromhex(h) for h in reply["proof"]]
    assert reply["old"] == saved  # the signed heads themselves were not touched (the insider cannot re-sign)
    assert not verify_consistency(
        saved["size"], later["size"], bytes.fromhex(saved["root"]), bytes.fromhex(later["root"]), proof
    )
    assert not proven(prove(client, world, victim, size=saved["size"]), key)
    # And the service refuses to sign a tree head over the rewritten tree: nothing after `later` gets signed.
    activity(client, world, 1)
    assert heads(client)[-1] == later
    report = verify_export(export(client, world), key)
    assert not report.ok and "differs from what the service signed" in report.problems[0]


def test_export_interleaves_tree_heads_and_range_prefix(
    client: TestClient, world: World, initialised: InitResult
) -> None:
    activity(client, world)
    key = public_key(initialised)
    lines = export(client, world)
    header = json.loads(lines[0])
    assert header["format"] == "countersign-audit-export/v3" and header["checkpoints"] == "inline"
    records = [json.loads(line) for line in lines[1:]]
    for before, record in itertools.pairwise(records):
        if record["type"] == "checkpoint":
            assert before["type"] in ("entry", "checkpoint") and record["tree_root"]
            assert (before.get("entry") or before.get("entry_escaped") or before)["seq"] == record["seq"]  # right after
    report = verify_export(lines, key)
    assert report.ok and report.tree_heads == report.checkpoints >= 4, report.problems
    assert report.tree_root == bytes.fromhex(records[-1]["tree_root"])

    part = export(client, world, after=7)
    prefix = json.loads(part[0])["tree_prefix"]
    assert len(prefix) == bin(7).count("1")
    report = verify_export(part, key)
    assert report.ok and report.tree_heads >= 1, report.problems
    # A forged prefix (the chain is untouched): only the signed roots can tell.
    forged = json.loads(part[0])
    forged["tree_prefix"][0] = "00" * 32
    report = verify_export([json.dumps(forged), *part[1:]], key)
    assert not report.ok and "Merkle tree" in report.problems[0]
    # A checkpoint line moved away from its entry is refused.
    moved = [part[0], *[ln for ln in part[1:] if '"checkpoint"' not in ln][:-1]]
    moved.insert(2, next(ln for ln in part if '"checkpoint"' in ln))
    assert not verify_export(moved, key).ok


def test_corrupt_node_is_detected_never_trusted(client: TestClient, world: World, initialised: InitResult) -> None:
    activity(client, world)
    key = public_key(initialised)
    size = heads(client)[-1]["size"]
    with services(client).engine.begin() as conn:
        level, index = conn.execute(select(AuditNode.level, AuditNode.index).where(AuditNode.level == 1)).first()
    # An insider with a database shell (who drops the append-only guard first) zeroes one node.
    attacker_sql(
        client, f"UPDATE audit_nodes SET hash = x'{bytes(32).hex()}' WHERE level = {level} AND \"index\" = {index}"
    )
    broken = [seq for seq in range(1, size + 1) if not proven(prove(client, world, seq, size=size), key)]
    assert broken and all(seq - 1 >> 1 != index for seq in broken)  # the entries under the node prove via siblings


def test_cli_prove_tree_head_and_consistency(live: Live, tmp_path: Path) -> None:  # noqa: F811
    live.upload(1)
    none_yet = live.run("", "audit", "tree-head", check=False)  # a fresh service signs every 1,000 entries / 10 min
    assert none_yet.returncode == 1 and "has not signed a tree head yet" in none_yet.stderr
    proved = live.run(live.auditor, "audit", "prove", "1", "--public-key", live.public_key).stdout
    assert proved.startswith("OK: entry 1 (cli:server:init by ") and "Merkle tree of" in proved  # signed one now
    saved = tmp_path / "head.json"
    out = live.run("", "audit", "tree-head", "--save", str(saved), "--public-key", live.public_key).stdout
    assert out.startswith("tree head: ") and json.loads(saved.read_text())["size"] >= 1
    old = json.loads(saved.read_text())["size"]
    as_json = json.loads(live.run(live.auditor, "audit", "prove", "1", "--json").stdout)
    assert as_json["verified"] is True and as_json["leaf_index"] == 0

    live.upload(2)
    live.run(live.auditor, "audit", "export", "-o", str(tmp_path / "a.jsonl"))  # signs a tree head now
    new = live.get(live.auditor, "/v1/audit/tree-head")["size"]
    assert new > old
    ok = live.run("", "audit", "consistency", str(saved), str(new), "--public-key", live.public_key)
    assert ok.stdout.strip().startswith(f"OK: the log at {new} extends the log at {old}: nothing before {old} was")

    backwards = live.run("", "audit", "consistency", str(new), str(saved), check=False)
    assert backwards.returncode == 1 and "shorter" in backwards.stdout
    forged = json.loads(saved.read_text())
    forged["root"] = "00" * 32
    (tmp_path / "forged.json").write_text(json.dumps(forged))
    bad = live.run("", "audit", "consistency", str(tmp_path / "forged.json"), str(new), check=False)
    assert bad.returncode == 1 and "not signed" in bad.stdout
    (tmp_path / "junk.json").write_text("{}")
    junk = live.run("", "audit", "consistency", str(tmp_path / "junk.json"), str(new), check=False)
    assert junk.returncode == 2 and junk.stderr.startswith("error:") and len(junk.stderr.splitlines()) == 1
    missing = live.run(live.auditor, "audit", "prove", "99999", check=False)
    assert missing.returncode == 1 and "404" in missing.stderr and "Traceback" not in missing.stderr
    officer = live.run(live.officer, "audit", "prove", "1", check=False)
    assert officer.returncode == 1 and "403" in officer.stderr
    wrong_key = live.run(live.auditor, "audit", "prove", "1", "--public-key", "00" * 32, check=False)
    assert wrong_key.returncode == 1 and "not signed" in wrong_key.stdout
    assert countersign("audit", "prove", "--help").returncode == 0
