"""The bundle's chain-of-custody PDF (api.bundle.report), read back with poppler's pdftotext and pdfinfo."""

# ruff: noqa: RUF001  (Japanese text: full-width punctuation on purpose)
from __future__ import annotations

import hashlib
import json
import re
import shutil
import struct
import subprocess
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from api.bundle.report import FONT_ENV, FONT_PACKAGE, ReportError, find_font, render_report, wrap

pytestmark = pytest.mark.skipif(shutil.which("pdftotext") is None, reason="needs poppler-utils (pdftotext, pdfinfo)")

RECORDING = uuid.UUID("0f6a3c1e-5b2d-4c8e-9a70-1d2e3f405162")
DEVICE = "7c1d2e3f-0000-4000-8000-00000000d001"
OFFICER = "user:5a5a5a5a-0000-4000-8000-00000000a001"
NOTICE_JA = (
    "職員と皆さまの安全を守り、適切な応対を確認するため、この応対を録音します。録音は暗号化して保管し、"
    "定められた期間が過ぎると消去します。録音を聞くことができるのは、理由を記録した上で、権限のある担当者だけです。"
    "録音を希望されない場合はお申し出ください。その場合は録音しません。"
)
CASE_REF = "警視庁-2025-000123"
STAFF_CODE = "窓口-S042"


def canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def statement(index: int, final: bool) -> bytes:
    data = b"countersign/segment/v1\0" + struct.pack(
        ">B16sIB32s32s32s", 1, RECORDING.bytes, index, final, bytes(32), bytes([index]) * 32, bytes(32)
    )
    assert len(data) == 141 and data[44] == final
    return data


def entry(seq: int, action: str, actor: str, purpose: str | None = None, outcome: str = "allowed") -> dict[str, Any]:
    minute, second = divmod(seq, 60)
    return {
        "seq": seq,
        "at": f"2025-06-01T{9 + minute // 60:02d}:{minute % 60:02d}:{second:02d}.123456+00:00",
        "actor": actor,
        "action": action,
        "target": f"recording:{RECORDING}",
        "outcome": outcome,
        "purpose": purpose,
        "detail": {},
    }


def members(
    events: int = 3, *, final: bool = True, purpose: str = "刑事事件の捜査のため警察へ提供"
) -> dict[str, bytes]:
    notice = NOTICE_JA.encode()
    header = {
        "recording_id": str(RECORDING),
        "device_id": DEVICE,
        "consent": {
            "notice_id": "counter-recording",
            "notice_version": 1,
            "notice_sha256": hashlib.sha256(notice).hexdigest(),
            "language": "ja",
            "method": "displayed+spoken",
            "presented_at": "2025-06-01T09:00:01+00:00",
            "decided_at": "2025-06-01T09:00:09+00:00",
            "outcome": "given",
            "staff_code": STAFF_CODE,
        },
    }
    fixed = [
        entry(1, "api:device:enrol", "user:admin-1"),
        entry(2, "api:recording:create", f"device:{DEVICE}"),
        entry(3, "api:evidence:read", OFFICER, purpose),
    ]
    more = [entry(seq, "api:evidence:show", OFFICER, f"確認 {seq}") for seq in range(4, events + 1)]
    out: dict[str, bytes] = {
        "manifest.json": canonical(
            {
                "format": "countersign-evidence-bundle/v1",
                "recording_id": str(RECORDING),
                "exported_at": "2025-06-02T01:30:00.000000+00:00",
                "exported_by": "佐藤 花子",
                "exported_by_id": OFFICER,
                "case_ref": CASE_REF,
                "purpose": purpose,
                "recipient": "警視庁 渋谷警察署",
                "complete": final,
                "partial_reason": None if final else "端末が録音中に失われました",
                "segments": 2,
                "export_audit_seq": events,
                "service": {"public_key": "ab" * 32, "fingerprint": "cd" * 32, "published_at": None},
            }
        ),
        "recording/header.bin": b"countersign/recording-header/v1\0" + canonical(header),
        "recording/header.sig": bytes(64),
        "recording/status.json": canonical(
            {
                "status": "complete" if final else "partial",
                "started_at": "2025-06-01T09:00:10+00:00",
                "ended_at": "2025-06-01T09:12:40+00:00",
                "site_id": "site-shibuya",
                "site_name": "渋谷区役所 本庁舎 1階窓口",
                "device_id": DEVICE,
                "device_name": "窓口端末 3番",
                "incident_category": "暴言",
                "retain_until": "2026-06-01T09:00:10+00:00",
                "retain_reason": "事案指定（1年）",
                "holds": [{"case_ref": CASE_REF, "reason": "警察からの照会", "placed_at": "2025-06-01T10:00:00+00:00"}],
            }
        ),
        "consent/notice.txt": notice,
        "device/enrolment.json": canonical(
            {
                "type": "countersign/device-enrolment/v1",
                "device_id": DEVICE,
                "device_name": "窓口端末 3番",
                "site_id": "site-shibuya",
                "public_key": "ef" * 32,
                "enrolled_at": "2025-05-01T00:00:00+00:00",
                "audit_seq": 1,
            }
        ),
        "segments/000000.statement": statement(0, False),
        "segments/000000.sig": bytes(64),
        "segments/000000.flac": b"fLaC" + bytes(100),
        "segments/000001.statement": statement(1, final),
        "segments/000001.sig": bytes(64),
        "segments/000001.flac": b"fLaC" + bytes(200),
        "custody/actors.json": canonical(
            {"user:admin-1": "管理者 山田", f"device:{DEVICE}": "窓口端末 3番", OFFICER: "佐藤 花子"}
        ),
        "custody/tree_head.json": canonical(
            {"size": events + 40, "root": "12" * 32, "chain_hash": "34" * 32, "at": "2025-06-02T01:30:01+00:00"}
        ),
        "SHA256SUMS": b"not listed: made after the report\n",
    }
    for item in [*fixed, *more][:events]:
        out[f"custody/entries/{item['seq']:012d}.json"] = canonical(item)
    return out


def render(tmp_path: Path, bundle: dict[str, bytes], name: str = "report.pdf") -> Path:
    path = tmp_path / name
    path.write_bytes(render_report(bundle))
    return path


def text_of(pdf: Path, mode: str = "-layout") -> str:
    """pdftotext's reading: -layout as on the page; -raw in drawing order (a table cell's lines together)."""
    return subprocess.run(["pdftotext", mode, str(pdf), "-"], check=True, capture_output=True, text=True).stdout


def squeezed(text: str) -> str:
    """Without any whitespace: a wrapped Japanese paragraph reads as one line again."""
    return re.sub(r"\s+", "", text)


def pages(pdf: Path) -> int:
    info = subprocess.run(["pdfinfo", str(pdf)], check=True, capture_output=True, text=True).stdout
    match = re.search(r"^Pages:\s+(\d+)$", info, re.MULTILINE)
    assert match, info
    return int(match.group(1))


@pytest.fixture(autouse=True)
def _default_font(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(FONT_ENV, raising=False)
    try:
        find_font()
    except ReportError as exc:
        pytest.skip(str(exc))


def test_the_report_shows_the_notice_case_staff_code_actors_and_actions(tmp_path: Path) -> None:
    bundle = members()
    pdf = render(tmp_path, bundle)
    assert pdf.read_bytes().startswith(b"%PDF-")
    text = text_of(pdf)
    flat = squeezed(text)
    assert squeezed(NOTICE_JA) in flat  # the whole notice, in order, across its wrapped lines
    for expected in (
        CASE_REF,
        STAFF_CODE,
        str(RECORDING),
        "管理者 山田",
        "窓口端末 3番",
        "佐藤 花子",
        "api:device:enrol",
        "api:recording:create",
        "api:evidence:read",
        "警視庁 渋谷警察署",
        "渋谷区役所 本庁舎 1階窓口",
        "Chain-of-Custody Report",
    ):
        assert squeezed(expected) in flat, expected
    # Tokyo time beside UTC: seq 3 happened at 09:00:03 UTC, 18:00:03 in Tokyo (the table's row for seq 3)
    assert re.search(r"^3\s+2025-06-01\s+2025-06-01\s+佐藤 花子.*\n\s+18:00:03\s+09:00:03\s", text, re.MULTILINE), text
    assert "complete" in text
    # every listed evidence file's SHA-256 (not SHA256SUMS: it is made after the report)
    for path in ("recording/header.bin", "segments/000001.flac", "consent/notice.txt"):
        assert hashlib.sha256(bundle[path]).hexdigest() in flat, path
    assert hashlib.sha256(bundle["SHA256SUMS"]).hexdigest() not in flat


def test_a_partial_recording_says_so_and_why(tmp_path: Path) -> None:
    flat = squeezed(text_of(render(tmp_path, members(final=False))))
    assert "partial(nofinalsegment)" in flat
    assert "端末が録音中に失われました" in flat


def test_a_long_custody_table_runs_onto_more_pages(tmp_path: Path) -> None:
    pdf = render(tmp_path, members(events=300))
    assert pages(pdf) > 3
    text = text_of(pdf)
    assert "確認 300" in text and "確認 150" in text
    assert text.count("Time (JST)") >= 3  # the heading row is repeated on every page of the table


def test_the_same_members_give_the_same_bytes(tmp_path: Path) -> None:
    bundle = members(events=20)
    first = render_report(bundle)
    assert render_report(dict(bundle)) == first
    assert b"D:20250602013000" in first  # the creation date is the export time, not now
    assert render_report(members(events=21)) != first


def test_untrusted_text_is_shown_escaped(tmp_path: Path) -> None:
    tricky = "捜査\x1b[2J\u202eのため{nb}\U0001f600"
    flat = squeezed(text_of(render(tmp_path, members(purpose=tricky))))
    assert "\x1b" not in flat and "\u202e" not in flat
    assert "捜査\\x1b[2J\\u202eのため{nb}\\U0001f600" in flat  # visible escapes; {nb} not a page count


def test_long_japanese_text_wraps_and_keeps_closing_marks_off_the_line_start(tmp_path: Path) -> None:
    long_purpose = "警察署からの照会に基づき、当該応対の録音を提供する。" * 12
    pdf = render(tmp_path, members(purpose=long_purpose))
    assert squeezed(long_purpose) in squeezed(text_of(pdf, "-raw"))  # all of it, in order, however wrapped
    assert max(len(line) for line in text_of(pdf).splitlines()) < 160  # and wrapped: no line runs off the page
    from fpdf import FPDF

    doc = FPDF()
    doc.add_font("jp", "", str(find_font()))
    doc.set_font("jp", size=10)
    lines = wrap(doc, long_purpose, 60)
    assert len(lines) > 5 and "".join(lines) == long_purpose
    assert all(doc.get_string_width(line) <= 60 for line in lines)
    assert not any(line[0] in "、。" for line in lines)
    two = doc.get_string_width("録音") + 0.01  # room for two wide characters: brackets and 。 stay attached
    assert wrap(doc, "「録音」を開始。", two) == ["「録", "音」", "を開", "始。"]
    latin = wrap(doc, "the retention job shreds the key " + "f" * 120, 60)
    assert latin[0].startswith("the retention job") and all(doc.get_string_width(line) <= 60 for line in latin)
    assert "".join(latin[1:]) == "f" * 120  # a word longer than a line is cut, not lost
    doc.output()  # closes the font file


def test_a_missing_font_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FONT_ENV, str(tmp_path / "nowhere.ttf"))
    with pytest.raises(ReportError, match=f"{FONT_ENV}.*nowhere.ttf.*{FONT_PACKAGE}"):
        render_report(members())
    monkeypatch.delenv(FONT_ENV)
    monkeypatch.setattr("api.bundle.report.DEFAULT_FONTS", (tmp_path / "ipag.ttf",))
    with pytest.raises(ReportError, match=f"install the Debian package {FONT_PACKAGE}"):
        render_report(members())


def test_the_font_can_be_chosen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    copy = tmp_path / "my-font.ttf"
    copy.write_bytes(find_font().read_bytes())
    monkeypatch.setenv(FONT_ENV, str(copy))
    assert find_font() == copy
    assert squeezed(CASE_REF) in squeezed(text_of(render(tmp_path, members())))
    not_a_font = tmp_path / "notes.ttf"
    not_a_font.write_text("not a font")
    with pytest.raises(ReportError, match="cannot load the report font"):
        render_report(members(), font=not_a_font)


def test_a_missing_member_is_named() -> None:
    bundle = members()
    del bundle["custody/actors.json"]
    with pytest.raises(ReportError, match=re.escape("custody/actors.json")):
        render_report(bundle)


# --- a long recording: one segment every 5 seconds, as the recorder makes them ----------------------------


def at(start: str, seconds: float) -> str:
    return (datetime.fromisoformat(start) + timedelta(seconds=seconds)).isoformat(timespec="microseconds")


def long_recording(segments: int, *, flac_bytes: int = 64) -> dict[str, bytes]:
    """A recording of `segments` 5-second segments: their three files each, the joined audio, the proofs,
    and the custody excerpt an export really has (enrolment, start, one upload per segment, reads, a hold...)."""
    out = members()
    for path in [path for path in out if path.startswith(("segments/", "custody/entries/"))]:
        del out[path]
    for index in range(segments):
        out[f"segments/{index:06d}.statement"] = statement(index % 256, index == segments - 1)
        out[f"segments/{index:06d}.sig"] = hashlib.sha512(b"sig %d" % index).digest()
        out[f"segments/{index:06d}.flac"] = b"fLaC" + hashlib.sha256(b"%d" % index).digest() * (flac_bytes // 32)
    out["audio/recording.flac"] = b"fLaC" + b"\x5a" * (flac_bytes * segments)
    out["device/device_key.pem"] = b"-----BEGIN PUBLIC KEY-----\n" + b"A" * 60 + b"\n-----END PUBLIC KEY-----\n"
    out["device/enrolment.sig"] = bytes(64)
    out["custody/tree_head.bin"] = b"countersign/audit-tree-head/v1\n" + bytes(72)
    out["custody/tree_head.sig"] = bytes(64)
    out["service_key.pem"] = out["device/device_key.pem"]
    out["README.txt"] = b"How to verify this bundle.\n" * 200
    out["README.ja.txt"] = "この証拠バンドルの検証方法。\n".encode() * 200
    out["verify.py"] = b"# the verifier\n" * 2000
    start = "2025-06-01T09:00:10.000000+00:00"
    device = f"device:{DEVICE}"
    plan: list[tuple[float, str, str, str | None, dict[str, Any]]] = [
        (-86400 * 31, "api:device:enrol", "user:admin-1", None, {}),
        (0, "api:recording:create", device, None, {}),
    ]
    plan += [
        (5.0 * i + 4.2, "api:segment:upload", device, None, {"index": i, "final": i == segments - 1})
        for i in range(segments)
    ]
    later = 5.0 * segments + 3600
    plan += [
        (later, "api:evidence:show", OFFICER, "照会への対応", {}),
        (later + 60, "api:evidence:read", OFFICER, "刑事事件の捜査のため警察へ提供", {}),
        (later + 120, "api:recording:flag", OFFICER, "暴言の事案", {}),
        (later + 180, "api:hold:create", OFFICER, "警察からの照会", {"case_ref": CASE_REF}),
        (later + 240, "api:evidence:custody", OFFICER, "提供前の確認", {}),
        (later + 300, "api:access:denied", "user:5a5a5a5a-0000-4000-8000-00000000a002", "閲覧", {}),
        (later + 360, "api:evidence:read", OFFICER, "提供前の確認", {}),
        (later + 420, "api:evidence:integrity", OFFICER, "提供前の確認", {}),
        (later + 480, "api:evidence:export", OFFICER, "刑事事件の捜査のため警察へ提供", {}),
    ]
    first_seq = 1000
    proofs = {}
    for offset, (seconds, action, actor, purpose, detail) in enumerate(plan):
        seq = first_seq + offset * 3  # other recordings' entries come between
        fields = {
            "seq": seq,
            "at": at(start, seconds),
            "actor": actor,
            "action": action,
            "target": f"recording:{RECORDING}",
            "outcome": "denied" if action == "api:access:denied" else "allowed",
            "purpose": purpose,
            "detail": detail,
        }
        out[f"custody/entries/{seq:012d}.json"] = canonical(fields)
        proofs[f"{seq:012d}"] = {"leaf_index": seq - 1, "tree_size": 90000, "path": ["ab" * 32] * 17}
    out["custody/proofs.json"] = json.dumps(proofs, indent=2, sort_keys=True).encode()
    manifest = json.loads(out["manifest.json"])
    manifest["segments"] = segments
    manifest["export_audit_seq"] = first_seq + (len(plan) - 1) * 3
    out["manifest.json"] = canonical(manifest)
    return out


def test_an_hour_long_recording_lists_each_segment_once_and_its_uploads_as_one_row(tmp_path: Path) -> None:
    bundle = long_recording(720)
    pdf = render(tmp_path, bundle)
    raw = text_of(pdf, "-raw")
    flat = squeezed(raw)
    # the 720 uploads (seq 1006, 1009, ... 3163) are one row; the reads, the hold and the export are their own
    assert "区間0–719を受信（720件）" in flat and "segments0–719received(720entries)" in flat
    assert "1006–3163" in flat and raw.count("api:segment:upload") == 1
    assert "731entries,in12rows" in flat and "custody/entries/" in raw
    for action in ("api:hold:create", "api:access:denied", "api:evidence:export", "api:recording:flag"):
        assert action in raw, action
    # every segment's FLAC hash, in a row with its index; the statements' and signatures' hashes are in SHA256SUMS
    for index in range(720):
        digest = hashlib.sha256(bundle[f"segments/{index:06d}.flac"]).hexdigest()
        assert re.search(rf"^{index} [\d,]+ {digest}$", raw, re.MULTILINE), index
    assert hashlib.sha256(bundle["segments/000005.statement"]).hexdigest() not in flat
    assert "720件files:000000.statement…000719.statement" in flat
    for path in ("recording/header.bin", "audio/recording.flac", "custody/proofs.json", "device/enrolment.json"):
        assert hashlib.sha256(bundle[path]).hexdigest() in flat, path
    assert text_of(pdf).count("SHA-256 of the FLAC") >= 10  # the segment table's heading on each of its pages


def test_anything_between_uploads_splits_their_row(tmp_path: Path) -> None:
    bundle = long_recording(10)
    uploads = sorted(path for path, data in bundle.items() if b'"api:segment:upload"' in data)
    fifth = json.loads(bundle[uploads[5]])
    read = {**fifth, "seq": fifth["seq"] - 1, "action": "api:evidence:read", "actor": OFFICER, "purpose": "途中の確認"}
    bundle[f"custody/entries/{read['seq']:012d}.json"] = canonical({**read, "detail": {}})
    again = json.loads(bundle[uploads[8]])  # segment 8 again, after a retry: out of order, so its own row
    bundle[f"custody/entries/{again['seq'] + 1:012d}.json"] = canonical({**again, "seq": again["seq"] + 1})
    failed = {**json.loads(bundle[uploads[9]]), "outcome": "failed"}  # not routine: its own row
    bundle[uploads[9]] = canonical(failed)
    flat = squeezed(text_of(render(tmp_path, bundle), "-raw"))
    for expected in ("区間0–4を受信（5件）", "途中の確認", "区間5–8を受信（4件）", "区間8を受信（1件）", "失敗failed"):
        assert expected in flat, expected
    assert "区間9" not in flat  # the failed upload is shown as an ordinary event


def test_a_row_taller_than_a_page_continues_on_the_next(tmp_path: Path) -> None:
    tall = "\U0001f600" * 590 + "終わり"  # no glyph: each becomes a 10-character escape, hundreds of lines
    pdf = render(tmp_path, members(purpose=tall))
    headings = {"番号", "Seq", "日時（日本時間）", "Time (JST)", "日時（UTC）", "Time (UTC)", "実行者", "Actor"}
    headings |= {"操作", "Action", "結果", "Outcome", "目的", "Purpose"}
    body = [
        line
        for page in text_of(pdf, "-raw").split("\f")
        for line in page.splitlines()[1:-1]  # not the page's header and footer
        if line not in headings  # nor the heading row repeated above the rest of the row
    ]
    escaped = squeezed("\\U0001f600" * 590 + "終わり")
    assert squeezed("".join(body)).count(escaped) == 2  # the export's purpose, and the read's in the custody table
    assert pages(pdf) >= 5


if __name__ == "__main__":  # time the report of a long recording: python -m tests.api.test_bundle_report [SEGMENTS]
    import sys
    import time

    for count in [int(arg) for arg in sys.argv[1:]] or [60, 720]:
        bundle = long_recording(count, flac_bytes=90_000)  # ~90 kB: 5 s of 16 kHz mono speech as FLAC
        render_report(bundle)  # warm: the font is parsed once per process
        times = []
        for _ in range(3):
            began = time.perf_counter()
            pdf = render_report(bundle)
            times.append(time.perf_counter() - began)
        print(f"{count} segments: best {min(times):.3f} s of {len(times)}, {len(pdf):,} bytes")
