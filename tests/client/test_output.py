"""client.output: the one way the CLIs print an access-log entry."""

from __future__ import annotations

import json

import pytest
import typer

from client.errors import RequestRefused, fail
from client.output import audit_line, echo_audit, echo_json, when
from evidence.text import forbidden

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


HOSTILE = "Kasuhara\x1b]0;owned\x07\x1b[2J\u2028\u202e\x9b31m\x00"


def test_nothing_the_service_says_reaches_the_terminal_as_a_control(capsys) -> None:  # type: ignore[no-untyped-def]
    """An insider's row or a forged export may hold escape sequences: the CLI prints them escaped."""
    echo_audit([{**ENTRY, "purpose": HOSTILE, "target": HOSTILE}])
    echo_json({"name": HOSTILE, "nested": [HOSTILE]})
    with pytest.raises(typer.Exit):
        raise fail(RequestRefused(f"409: {HOSTILE}"))
    out, err = capsys.readouterr()
    for text in (out, err):
        assert not any(forbidden(ch) and ch not in "\t\n" for ch in text), repr(text)
    assert "\\x1b]0;owned" in out and "\\u2028" in out
    document = json.loads(out[out.index("{") :])  # still valid JSON, the characters kept as escapes
    assert document["name"] == HOSTILE and document["nested"] == [HOSTILE]
