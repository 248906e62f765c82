"""client.output: how the CLIs print tables, times and the access log."""

from __future__ import annotations

import json

import pytest
import typer

from client.errors import RequestRefused, fail
from client.output import (
    audit_line,
    duration,
    echo_audit,
    echo_fields,
    echo_json,
    local,
    local_date,
    table,
    use_zone,
    when,
    width,
)
from evidence.errors import ExitCode
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


@pytest.fixture(autouse=True)
def _tokyo() -> None:
    use_zone(None)  # the default zone, whatever an earlier test chose


def test_audit_line_has_every_column() -> None:
    line = audit_line(ENTRY)
    assert line.split(None, 7)[:7] == ["42", "2026-04-01", "18:30:15", "JST", "ok", "api:evidence:read", "user:5b1c"]
    assert line.endswith('recording:9d0e  purpose="Complaint 2026-118 review"')
    assert line.startswith("    42  2026-04-01 18:30:15 JST  ok       api:evidence:read           user:5b1c")


def test_audit_line_names_the_actor_when_the_service_did() -> None:
    assert "  olivia (user)  " in audit_line({**ENTRY, "actor_name": "olivia"})
    assert "  窓口端末1 (device)  " in audit_line({**ENTRY, "actor": "device:77aa", "actor_name": "窓口端末1"})
    wide, narrow = audit_line({**ENTRY, "actor_name": "山田"}), audit_line({**ENTRY, "actor_name": "yama"})
    # Padded by display width: the target starts in the same terminal column either way.
    assert width(wide[: wide.index("recording:")]) == width(narrow[: narrow.index("recording:")])


def test_audit_line_without_target_or_purpose() -> None:
    line = audit_line({**ENTRY, "target": None, "purpose": None})
    assert line.endswith(" -") and "purpose=" not in line


def test_columns_line_up_whatever_the_action() -> None:
    long = audit_line({**ENTRY, "action": "api:recording:interrupted"})
    assert long.index("user:") == audit_line(ENTRY).index("user:")


def test_audit_listing_has_a_header(capsys) -> None:  # type: ignore[no-untyped-def]
    echo_audit([ENTRY])
    header, line = capsys.readouterr().out.splitlines()
    assert header.split() == ["SEQ", "TIME", "OUTCOME", "ACTION", "ACTOR", "TARGET", "PURPOSE"]
    assert header.index("TARGET") == line.index("recording:")
    echo_audit([])
    assert capsys.readouterr().out == "no entries\n"


def test_when() -> None:
    assert when("2026-04-01T09:30:15+09:00") == "2026-04-01T09:30:15"
    assert when(None) == "-"


def test_local_time_names_its_zone() -> None:
    assert local("2026-04-01T09:30:15.123456Z") == "2026-04-01 18:30:15 JST"
    assert local("2026-04-01T09:30:15+09:00") == "2026-04-01 09:30:15 JST"
    assert local_date("2026-03-31T15:00:00+00:00") == "2026-04-01"  # the local date, not the UTC one
    assert local(None) == "-" and local_date(None) == "-"
    assert local("not a time") == "not a time"
    use_zone("Europe/London")
    assert local("2026-07-01T09:30:15Z") == "2026-07-01 10:30:15 BST"
    use_zone("UTC")
    assert local("2026-04-01T09:30:15+09:00") == "2026-04-01 00:30:15 UTC"


def test_an_unknown_zone_is_a_usage_error(capsys) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(typer.Exit) as exited:
        use_zone("Mars/Olympus_Mons")
    assert exited.value.exit_code == ExitCode.USAGE
    assert "unknown time zone 'Mars/Olympus_Mons'" in capsys.readouterr().err


def test_duration() -> None:
    assert [duration(s) for s in (None, 0, 42.4, 65, 3723)] == ["-", "0:00", "0:42", "1:05", "1:02:03"]


def test_width_counts_wide_characters_twice() -> None:
    assert width("abc") == 3
    assert width("山田太郎") == 8
    assert width("ｶﾅ") == 2  # half-width katakana: one column each
    assert width("\uff21") == 2  # FULLWIDTH LATIN CAPITAL LETTER A
    assert width("e\u0301") == 1  # a combining accent takes no column


def test_table_columns_line_up_in_terminal_columns_with_japanese_names() -> None:
    lines = table(
        ("ID", "DEVICE", "STAFF", "COUNT"),
        [("9d0e", "窓口端末1", "S-001", 3), ("77aa", "counter-n1", "山田", 12), ("c0de", None, "", 7)],
    )
    assert lines[0] == "ID    DEVICE      STAFF  COUNT"
    assert lines[1] == "9d0e  窓口端末1   S-001      3"
    assert lines[2] == "77aa  counter-n1  山田      12"
    assert lines[3] == "c0de  -                      7"  # None shows as -, the empty cell as nothing
    # Every line is as wide on the terminal as the header (display width, not len()).
    assert {width(line) for line in lines} == {width(lines[0])}
    assert len(lines[1]) < len(lines[0])  # ...which len() would get wrong


def test_numbers_are_right_aligned_and_text_left() -> None:
    lines = table(("N", "NAME"), [(5, "a"), (120, "bb")])
    assert lines == ["  N  NAME", "  5  a", "120  bb"]
    mixed = table(("N",), [(5,), ("-",)])  # not every cell a number: left-aligned
    assert mixed == ["N", "5", "-"]


def test_table_cells_cannot_inject_control_characters_or_break_lines() -> None:
    lines = table(("NAME", "NOTE"), [("a\x1b[2Jb", "one\ntwo"), ("c\u202ed", "tab\there")])
    assert len(lines) == 3
    assert not any(forbidden(ch) for line in lines for ch in line)
    assert "a\\x1b[2Jb" in lines[1] and "one\\ntwo" in lines[1] and "c\\u202ed" in lines[2]
    assert "tab\\there" in lines[2]


def test_fields_block(capsys) -> None:  # type: ignore[no-untyped-def]
    echo_fields([("id", "9d0e"), ("装置", "窓口端末1"), ("staff", None)])
    assert capsys.readouterr().out.splitlines() == ["id:    9d0e", "装置:  窓口端末1", "staff: -"]


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
