"""Evidence bundles made from nothing but keys: the verifier's tests, and what an attacker would use.

`inputs()` invents a whole recording (a device key, a signed header with its consent record,
signed segments, an audit log with its Merkle tree and a signed tree head) from fixed seeds and
fixed times, and `bundle()` lays it out with the real builder (api.bundle.assemble), so the
valid bundles here are byte for byte what the service would write for the same facts.

The rest is the insider's toolbox: someone who holds the *service* key (a rogue administrator)
can re-sign SHA256SUMS, the manifest's listing, an enrolment, after changing whatever they
like (`resign_sums`, `sign`); they still cannot sign as a device. tests/evidence/test_bundle_*
use both to show what the verifier catches.
"""

from __future__ import annotations

import hashlib
import io
import json
import uuid
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import nacl.signing
from nacl.public import PrivateKey

from api.bundle.assemble import (
    BundleInputs,
    CustodyEntry,
    Enrolment,
    SegmentEvidence,
    TreeHead,
    assemble,
    inner_zip,
)
from consent.records import ConsentRecord
from evidence.audit_log import GENESIS, chain_hash, entry_hash, tree_head_message
from evidence.bundle.crypto import write_outer
from evidence.chain import SegmentStatement, header_hash, sign_header, sign_statement

SERVICE_SEED = bytes(range(32))
DEVICE_SEED = bytes(range(32, 64))
OTHER_DEVICE_SEED = bytes(range(64, 96))
OTHER_SERVICE_SEED = bytes(range(96, 128))
RECORDING_ID = uuid.UUID("0b5e1a2c-3d4e-4f60-8a1b-2c3d4e5f6a7b")
DEVICE_ID = "dev-north-1"
SITE_ID = "north"
NOTICE_TEXT = (
    "この窓口での会話は、サービスの品質向上と職員・お客様の安全のため録音されます。\n"
    "録音を望まない場合はお申し出ください。録音は規則に従い保存期間の後に消去されます。\n"
)
UNSIGNED = ("SHA256SUMS", "SHA256SUMS.sig", "SHA256SUMS.tsr")


def service_key() -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey(SERVICE_SEED)


def device_key() -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey(DEVICE_SEED)


def other_device_key() -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey(OTHER_DEVICE_SEED)


def other_service_key() -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey(OTHER_SERVICE_SEED)


# --------------------------------------------------------------------------- an RFC 6962 tree, naively


def _leaf(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(leaves: Sequence[bytes]) -> bytes:
    """RFC 6962 §2.1 MTH over leaf hashes (recursive: this is a test reference, not a service)."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = _split(len(leaves))
    return _node(mth(leaves[:k]), mth(leaves[k:]))


def path(index: int, leaves: Sequence[bytes]) -> list[bytes]:
    """RFC 6962 §2.1.1 PATH(m, D[n]), leaf to root."""
    if len(leaves) <= 1:
        return []
    k = _split(len(leaves))
    if index < k:
        return [*path(index, leaves[:k]), mth(leaves[k:])]
    return [*path(index - k, leaves[k:]), mth(leaves[:k])]


# --------------------------------------------------------------------------- a recording, invented


def flac_bytes(index: int, seconds: float = 0.25) -> bytes:
    """A short real FLAC (a seeded tone), one per segment."""
    from evidence import audio
    from tests.support.factories import tone

    return audio.encode(tone(seconds, rate=8000, freq=330.0 + 110 * index, seed=index), 8000, "flac")


@dataclass
class Facts:
    """Everything a bundle says, as plain data, so a test can change one thing before building."""

    segments: int = 3
    final: bool = True
    outcome: str = "given"
    flacs: list[bytes] = field(default_factory=list)
    service: nacl.signing.SigningKey = field(default_factory=service_key)
    device: nacl.signing.SigningKey = field(default_factory=device_key)
    notice_text: str = NOTICE_TEXT
    unrelated: int = 5  # other recordings' entries in the log, before and after ours (not in the excerpt)
    timestamp: Callable[[bytes], bytes] | None = None

    def flac(self, index: int) -> bytes:
        while len(self.flacs) <= index:
            self.flacs.append(flac_bytes(len(self.flacs)))
        return self.flacs[index]


def _time(minute: int, second: int = 0) -> str:
    return f"2026-03-02T01:{minute:02d}:{second:02d}.000000+00:00"


def header(facts: Facts) -> dict[str, Any]:
    consent = ConsentRecord(
        notice_id="counter-ja",
        notice_version=2,
        notice_sha256=hashlib.sha256(facts.notice_text.encode("utf-8")).hexdigest(),
        language="ja",
        method="displayed",
        presented_at="2026-03-02T10:00:00+09:00",
        decided_at="2026-03-02T10:00:07+09:00",
        outcome=facts.outcome,
        staff_code="S-0042",
    )
    data: dict[str, Any] = {
        "version": 1,
        "recording_id": str(RECORDING_ID),
        "device_id": DEVICE_ID,
        "started_at": "2026-03-02T10:00:08+09:00",
        "consent": consent.to_dict(),
    }
    if facts.outcome == "given":
        data.update(sample_rate=8000, channels=1, segment_seconds=1, codec="flac")
    return data


def segments(facts: Facts, head: Mapping[str, Any]) -> list[SegmentEvidence]:
    out = []
    prev = header_hash(head)
    for index in range(facts.segments):
        flac = facts.flac(index)
        statement = SegmentStatement(
            recording_id=RECORDING_ID,
            index=index,
            final=facts.final and index == facts.segments - 1,
            ciphertext_sha256=hashlib.sha256(b"envelope of " + flac).digest(),  # the device's sealed upload
            plaintext_sha256=hashlib.sha256(flac).digest(),
            prev_hash=prev,
        )
        out.append(SegmentEvidence(statement, sign_statement(facts.device, statement), flac))
        prev = statement.link_hash()
    return out


def audit_log(facts: Facts, segs: Sequence[SegmentEvidence]) -> list[dict[str, Any]]:
    """The service's whole log: other business around our recording's entries."""
    rec, dev = f"recording:{RECORDING_ID}", f"device:{DEVICE_ID}"
    plan: list[tuple[str, str, str | None, str | None, dict[str, Any]]] = [
        ("cli:admin", "cli:server:init", None, None, {}),
        ("user:admin", "api:site:create", f"site:{SITE_ID}", None, {"name": "North counter"}),
        ("user:admin", "api:device:create", dev, None, {"site": SITE_ID}),
        (dev, "api:device:enrol", dev, None, {"site": SITE_ID, "public_key": bytes(facts.device.verify_key).hex()}),
    ]
    plan += [("device:dev-south", "api:segment:upload", f"recording:other-{i}", None, {"index": i}) for i in range(3)]
    created = "api:recording:create" if facts.outcome == "given" else "api:consent:objected"
    plan.append((dev, created, rec, None, {"notice": "counter-ja/v2/ja"}))
    for seg in segs:
        st = seg.statement
        plan.append(
            (
                dev,
                "api:segment:upload",
                rec,
                None,
                {"index": st.index, "final": st.final, "sha256": st.ciphertext_sha256.hex()},
            )
        )
    plan += [("user:officer-7", "api:evidence:list", None, None, {"site": SITE_ID, "results": 1})] * facts.unrelated
    plan.append(("user:officer-7", "api:evidence:read", rec, "苦情対応の確認 (case K-2026-001)", {}))
    plan.append(("user:officer-7", "api:evidence:export", rec, "警察への提出 K-2026-001", {"case": "K-2026-001"}))
    return [
        {"seq": seq, "at": _time(10 + seq // 60, seq % 60), "actor": actor, "action": action, "target": target,
         "outcome": "allowed", "purpose": purpose, "detail": detail}
        for seq, (actor, action, target, purpose, detail) in enumerate(plan, 1)
    ]  # fmt: skip


def inputs(facts: Facts | None = None) -> BundleInputs:
    facts = facts or Facts()
    head = header(facts)
    segs = segments(facts, head)
    log = audit_log(facts, segs)
    leaves = [entry_hash(e) for e in log]
    chain = GENESIS
    for leaf in leaves:
        chain = chain_hash(chain, leaf)
    size, root, at = len(log), mth(leaves), _time(59, 59)
    message = tree_head_message(size, root, chain, at)
    tree = TreeHead(size, root, chain, at, message, bytes(facts.service.sign(message).signature))
    rec, dev = f"recording:{RECORDING_ID}", f"device:{DEVICE_ID}"
    enrol = next(e for e in log if e["action"] == "api:device:enrol")
    excerpt = [e for e in log if e is enrol or e["target"] == rec]
    export = log[-1]
    final = bool(segs) and segs[-1].statement.final
    complete = final or facts.outcome != "given"
    return BundleInputs(
        recording_id=str(RECORDING_ID),
        header=head,
        header_signature=sign_header(facts.device, head),
        notice_text=facts.notice_text,
        enrolment=Enrolment(
            DEVICE_ID, "北口窓口 1番", SITE_ID, bytes(facts.device.verify_key), enrol["at"], enrol["seq"]
        ),
        segments=segs,
        joined_flac=b"".join(s.flac or b"" for s in segs) if segs else None,
        status={
            "status": "complete" if final else ("objected" if facts.outcome != "given" else "interrupted"),
            "started_at": "2026-03-02T01:00:08.000000+00:00",
            "ended_at": "2026-03-02T01:00:09.000000+00:00" if complete else None,
            "site_id": SITE_ID,
            "site_name": "北口窓口",
            "device_id": DEVICE_ID,
            "device_name": "北口窓口 1番",
            "incident_category": "complaint",
            "retain_until": "2027-03-02T01:00:08.000000+00:00",
            "retain_reason": "hold",
            "holds": [
                {"case_ref": "K-2026-001", "reason": "警察からの照会", "placed_at": "2026-03-02T01:30:00.000000+00:00"}
            ],
        },
        export={
            "exported_at": at,
            "exported_by": "山田 花子",
            "exported_by_id": "user:officer-7",
            "case_ref": "K-2026-001",
            "purpose": "警察への提出 K-2026-001",
            "recipient": "第七警察署",
            "export_audit_seq": export["seq"],
        },
        tree_head=tree,
        custody=[CustodyEntry(e, path(e["seq"] - 1, leaves)) for e in excerpt],
        actors={dev: "北口窓口 1番", "user:officer-7": "山田 花子"},
        complete=complete,
        partial_reason=None if complete else f"segments 0..{len(segs) - 1} arrived; the device sent nothing after them",
        published_at="https://city.example.jp/countersign/service-key",
    )


def bundle(facts: Facts | None = None) -> dict[str, bytes]:
    """A valid inner bundle's members (no PDF: the report has its own tests)."""
    facts = facts or Facts()
    return assemble(inputs(facts), facts.service, timestamp=facts.timestamp)


# --------------------------------------------------------------------------- the insider's toolbox


def sign(members: dict[str, bytes], name: str, key: nacl.signing.SigningKey, sig: str | None = None) -> None:
    """Re-sign one member in place (`name`.sig, or `sig`) with `key`."""
    target = sig or name.rsplit(".", 1)[0] + ".sig"
    members[target] = bytes(key.sign(members[name]).signature)


def resign_sums(members: dict[str, bytes], key: nacl.signing.SigningKey | None = None) -> None:
    """SHA256SUMS recomputed over the members as they are now and signed (by the service key unless told)."""
    listed = {n: d for n, d in members.items() if n not in UNSIGNED}
    sums = "".join(f"{hashlib.sha256(d).hexdigest()}  {n}\n" for n, d in sorted(listed.items())).encode()
    members["SHA256SUMS"] = sums
    members["SHA256SUMS.sig"] = bytes((key or service_key()).sign(sums).signature)
    members.pop("SHA256SUMS.tsr", None)  # a time-stamp cannot be re-made for other bytes


def edit_json(members: dict[str, bytes], name: str, change: Callable[[dict[str, Any]], None]) -> None:
    """Change a pretty-printed JSON member the way the builder writes it."""
    value = json.loads(members[name])
    change(value)
    members[name] = (json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


def zipped(members: Mapping[str, bytes]) -> bytes:
    return inner_zip(members)


def unzipped(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def encrypted(inner: bytes, recipient: PrivateKey, kdf: dict[str, Any] | None = None) -> bytes:
    out = io.BytesIO()
    write_outer(out, [inner], bytes(recipient.public_key), kdf)
    return out.getvalue()
