"""`countersign hold ...` against a live service: place, list, show and release legal holds."""

from __future__ import annotations

import json
from zoneinfo import ZoneInfo

from evidence.display import local
from tests.client.conftest import Live, assert_out_of_scope, fields, lines

REASON = "litigation expected, keep everything"
TOKYO = ZoneInfo("Asia/Tokyo")


def create(live: Live, case: str, *scope: str) -> str:
    placed = live.run(live.officer, "hold", "create", "--case", case, "--reason", REASON, *scope).stdout
    assert placed.startswith("hold ") and f" placed for case {case}; it covers " in placed
    return placed.split()[1]


def test_create_show_release_one_recording(live: Live) -> None:
    rec, other = live.upload(1), live.upload(1)
    args = ("hold", "create", "--case", "2026-LIT-014", "--reason", REASON, "--recording", str(rec.id))
    placed = live.run(live.officer, *args).stdout
    hold_id = placed.split()[1]
    assert placed == f"hold {hold_id} placed for case 2026-LIT-014; it covers 1 recording(s) now\n"

    shown = json.loads(live.run(live.officer, "hold", "show", hold_id, "--json").stdout)
    assert shown["id"] == hold_id and shown["case_ref"] == "2026-LIT-014"
    assert shown["recordings"] == [str(rec.id)] and str(other.id) not in shown["recordings"]
    assert shown["active"] is True and shown["covers"] == 1 and shown["reason"] == REASON

    listed = lines(live.run(live.officer, "hold", "list"))
    assert len(listed) == 2 and listed[0].split() == ["ID", "CASE", "SITE", "PLACED", "STATE", "SCOPE"]
    row = listed[1].split()
    assert row[:3] == [hold_id, "2026-LIT-014", "north"] and row[6:] == ["active", "1", "recording(s)"]
    assert row[3:6] == local(shown["created_at"], TOKYO).split() and row[5] == "JST"  # placed, in local time
    as_json = json.loads(live.run(live.officer, "hold", "list", "--json").stdout)
    assert as_json == live.get(live.officer, "/v1/holds", active="true")

    block = fields(live.run(live.officer, "hold", "show", hold_id))
    assert block["id"] == hold_id and block["case"] == "2026-LIT-014" and block["reason"] == REASON
    assert block["recordings"] == str(rec.id) and block["covers now"] == "1" and block["state"] == "active"
    assert block["placed"].startswith(local(shown["created_at"], TOKYO) + " by user:")

    released = live.run(live.officer, "hold", "release", hold_id, "--reason", "case settled, no longer needed")
    assert released.stdout == f"hold {hold_id} (2026-LIT-014) released\n"
    after = json.loads(live.run(live.officer, "hold", "show", hold_id, "--json").stdout)
    assert after["active"] is False and after["release_reason"] == "case settled, no longer needed"
    assert lines(live.run(live.officer, "hold", "list")) == ["no holds"]


def test_a_scoped_hold_catches_later_recordings(live: Live) -> None:
    live.upload(1)
    hold_id = create(live, "2026-SITE-001", "--site", "north", "--category", "verbal-abuse")
    rec = live.upload(1)
    live.run(live.officer, "evidence", "flag", str(rec.id), "--category", "verbal-abuse")
    row = lines(live.run(live.officer, "hold", "list"))[1].split()
    assert row[:3] == [hold_id, "2026-SITE-001", "north"]
    assert row[6:] == ["active", "site=north", "category=verbal-abuse"]
    assert json.loads(live.run(live.officer, "hold", "show", hold_id, "--json").stdout)["covers"] == 1


def test_list_active_released_and_all(live: Live) -> None:
    rec = live.upload(1)
    first = create(live, "CASE-1", "--recording", str(rec.id))
    second = create(live, "CASE-2", "--recording", str(rec.id))
    third = create(live, "CASE-3", "--site", "north")
    live.run(live.officer, "hold", "release", second, "--reason", "case closed, release it")

    def ids(*args: str) -> list[str]:
        return [line.split()[0] for line in lines(live.run(live.officer, "hold", "list", *args))[1:]]

    assert ids() == [first, third]
    assert ids("--released") == [second]
    assert ids("--all") == [first, second, third]  # active and released, in the order they were placed
    released_line = next(line for line in lines(live.run(live.officer, "hold", "list", "--all")) if second in line)
    assert released_line.split()[6] == "released"
    released_at = json.loads(live.run(live.officer, "hold", "show", second, "--json").stdout)["released_at"]
    assert released_line.split()[7:10] == local(released_at, TOKYO).split()


def test_holds_are_seen_only_within_your_sites(live: Live) -> None:
    rec = live.upload(1)
    hold_id = create(live, "CASE-N", "--recording", str(rec.id))
    assert lines(live.run(live.other_officer, "hold", "list", "--all")) == ["no holds"]
    refused = live.run(live.other_officer, "hold", "show", hold_id, check=False)
    assert_out_of_scope(refused)
    release = live.run(live.other_officer, "hold", "release", hold_id, "--reason", "not my site at all", check=False)
    assert_out_of_scope(release)
    assert json.loads(live.run(live.officer, "hold", "show", hold_id, "--json").stdout)["active"] is True


def test_a_hold_takes_short_recording_ids_within_your_sites(live: Live) -> None:
    rec = live.upload(1)
    south = live.upload(1, device=live.enrol("counter-s1", "south"))
    hold_id = create(live, "CASE-SHORT", "--recording", str(rec.id)[:8])
    assert json.loads(live.run(live.officer, "hold", "show", hold_id, "--json").stdout)["recordings"] == [str(rec.id)]
    args = ("hold", "create", "--case", "CASE-X", "--reason", REASON, "--recording", str(south.id)[:8])
    refused = live.run(live.officer, *args, check=False)  # south's recording: north's officer cannot find it
    assert refused.returncode == 1 and "no recording in your sites" in refused.stderr and refused.stdout == ""
