"""`countersign audit ...` against a live service: read, export and verify the access log."""

from __future__ import annotations

import json
from pathlib import Path
from zoneinfo import ZoneInfo

from client.output import audit_line
from evidence.display import local
from tests.client.conftest import PURPOSE, Live, lines
from tests.conftest import countersign

TOKYO = ZoneInfo("Asia/Tokyo")


def test_log_prints_each_entry_with_the_shared_formatter(live: Live, tmp_path: Path) -> None:
    rec = live.upload(1)
    live.run(live.officer, "evidence", "get", str(rec.id), "--purpose", PURPOSE, "-o", str(tmp_path / "a.flac"))
    entries = live.get(live.auditor, "/v1/audit", limit=10000)

    header, *log = lines(live.run(live.auditor, "audit", "log"))
    assert header.split() == ["SEQ", "TIME", "OUTCOME", "ACTION", "ACTOR", "TARGET", "PURPOSE"]
    assert log[: len(entries)] == [audit_line(e) for e in entries]
    assert [int(line.split()[0]) for line in log] == list(range(1, len(log) + 1))  # oldest first, no gaps
    assert log[0].split()[5] == "cli:server:init"
    read = next(line for line in log if line.split()[5] == "api:evidence:read")
    assert f" recording:{rec.id} " in read and read.endswith(f'purpose="{PURPOSE}"')
    # Who, by name (the auditor may not list users): the officer, and the device that uploaded.
    assert " olivia (user) " in read
    upload = next(line for line in log if line.split()[5] == "api:segment:upload")
    assert " counter-n1 (device) " in upload
    # Local time, the zone named: the entry's UTC time as Tokyo's.
    entry = next(e for e in entries if e["action"] == "api:evidence:read")
    assert read.split()[1:4] == local(entry["at"], TOKYO).split() and read.split()[3] == "JST"
    assert entry["actor_name"] == "olivia" and entry["actor"].startswith("user:")

    header, *page = lines(live.run(live.auditor, "audit", "log", "--after", "3", "--limit", "2"))
    assert [int(line.split()[0]) for line in page] == [4, 5]
    assert page == log[3:5]

    utc = lines(live.run(live.auditor, "audit", "log", "--tz", "UTC", "--after", "3", "--limit", "1"))[1]
    assert utc.split()[1:4] == local(entries[3]["at"], ZoneInfo("UTC")).split() and utc.split()[3] == "UTC"
    as_json = json.loads(live.run(live.auditor, "audit", "log", "--json", "--limit", "5").stdout)
    assert as_json == entries[:5]  # the service's answer, as it gave it


def test_log_is_for_auditors(live: Live) -> None:
    refused = live.run(live.officer, "audit", "log", check=False)
    assert refused.returncode != 0 and "403" in refused.stderr and refused.stdout == ""


def test_export_then_verify(live: Live, tmp_path: Path) -> None:
    live.upload(2)
    out = tmp_path / "audit.jsonl"
    exported = live.run(live.auditor, "audit", "export", "-o", str(out)).stdout
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    entries = [r for r in records if r["type"] == "entry"]
    assert exported.startswith(f"wrote {out}: {len(entries)} entries; verify with ")
    assert entries and records[-1]["type"] == "checkpoint"

    verified = countersign("audit", "verify", str(out), "--public-key", live.public_key)
    assert verified.stdout.startswith(f"OK: {len(entries)} entries (seq 1..{len(entries)}), ")
    assert verified.stdout.rstrip().endswith("signed checkpoints verified")
    by_data = countersign("audit", "verify", str(out), "--data", str(live.server.data))
    assert by_data.stdout == verified.stdout

    # A range, ending at the checkpoint the service signs for it.
    part = tmp_path / "part.jsonl"
    live.run(live.auditor, "audit", "export", "-o", str(part), "--after", "2")
    assert countersign("audit", "verify", str(part), "--public-key", live.public_key).stdout.startswith("OK: ")

    # One altered entry is found, and named.
    text = out.read_text(encoding="utf-8").splitlines()
    victim = next(i for i, line in enumerate(text) if '"api:segment:upload"' in line)
    text[victim] = text[victim].replace('"api:segment:upload"', '"api:segment:uploaded"')
    tampered = tmp_path / "tampered.jsonl"
    tampered.write_text("\n".join(text) + "\n", encoding="utf-8")
    failed = countersign("audit", "verify", str(tampered), "--public-key", live.public_key, check=False)
    assert failed.returncode == 1
    assert failed.stdout.startswith("FAILED after ")

    wrong_key = countersign("audit", "verify", str(out), "--public-key", "00" * 32, check=False)
    assert wrong_key.returncode == 1 and wrong_key.stdout.startswith("FAILED")


def test_verify_needs_a_key_from_outside_the_file(tmp_path: Path) -> None:
    out = tmp_path / "audit.jsonl"
    out.write_text("", encoding="utf-8")
    refused = countersign("audit", "verify", str(out), check=False)
    assert refused.returncode == 2
    assert "pass --public-key" in refused.stderr and "would prove nothing" in refused.stderr
    missing = countersign("audit", "verify", str(tmp_path / "none.jsonl"), "--public-key", "00" * 32, check=False)
    assert missing.returncode == 2 and missing.stderr.startswith("error:")
