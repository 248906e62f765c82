"""client.output: the one way the CLIs print an access-log entry."""

from __future__ import annotations

from client.output import audit_line, when

ENTRY = {
    "seq": 42,
    "at": "2026-04-01T09:30:15.123456Z",
    "actor": "user:5b1c",
    "action": "api:evidence:read",
    "target": "recording:9d0e",
    "outcome": "ok",
    "purpose": "Complaint 2026-118 review",
    "detail": {"format": "flac"},
}


def test_audit_line_has_every_column() -> None:
    line = audit_line(ENTRY)
    assert line.split(None, 5)[:5] == ["42", "2026-04-01T09:30:15", "ok", "api:evidence:read", "user:5b1c"]
    assert line.endswith('recording:9d0e  purpose="Complaint 2026-118 review"')
    assert line.startswith("    42  2026-04-01T09:30:15  ok      api:evidence:read")


def test_audit_line_without_target_or_purpose() -> None:
    line = audit_line({**ENTRY, "target": None, "purpose": None})
    assert line.endswith(" -") and "purpose=" not in line


def test_columns_line_up_whatever_the_action() -> None:
    long = audit_line({**ENTRY, "action": "api:recording:interrupted"})
    assert long.index("user:") == audit_line(ENTRY).index("user:")


def test_when() -> None:
    assert when("2026-04-01T09:30:15+09:00") == "2026-04-01T09:30:15"
    assert when(None) == "-"
