"""`countersign admin ...` against a live service: sites, users, devices, retention policies."""

from __future__ import annotations

import json
import subprocess

import httpx
import nacl.signing

from tests.client.conftest import Live, lines


def columns(result: subprocess.CompletedProcess[str]) -> list[list[str]]:
    return [line.split() for line in lines(result)]


def test_site_add_then_list(live: Live) -> None:
    added = live.run(live.admin, "admin", "site", "add", "east", "--name", "East Office 東")
    assert added.stdout == "site east added\n"
    listed = lines(live.run(live.admin, "admin", "site", "list"))
    assert listed == ["SITE   NAME", "east   East Office 東", "north  North Office", "south  South Office"]  # by id
    assert {s["id"] for s in live.api.get("/v1/sites").json()} == {"north", "south", "east"}
    as_json = json.loads(live.run(live.admin, "admin", "site", "list", "--json").stdout)
    assert as_json == live.api.get("/v1/sites").json()


def test_site_add_is_for_admins_only(live: Live) -> None:
    refused = live.run(live.officer, "admin", "site", "add", "west", check=False)
    assert refused.returncode != 0
    assert refused.stderr.startswith("error:") and "403" in refused.stderr
    assert "west" not in live.run(live.admin, "admin", "site", "list").stdout


def test_user_add_prints_a_token_that_works_once_and_list_never_shows_it(live: Live) -> None:
    added = live.run(live.admin, "admin", "user", "add", "sato", "--role", "officer", "--site", "north")
    first, second, _ = lines(added)  # the third line says who approves
    assert first == "user sato (officer, sites: north) added"
    assert second.startswith("token (shown once): ")
    token = second.split()[-1]
    assert lines(added)[2] == "the token works once an auditor or an officer of its sites approves: " + (
        "countersign admin user approve sato"
    )
    rec = live.upload()
    waiting = live.run(token, "evidence", "list", check=False)
    assert waiting.returncode == 1 and "awaits approval by a second person" in waiting.stderr
    assert "sato\tofficer\tnorth\tawaiting approval" in lines(live.run(live.officer, "admin", "user", "pending"))
    admin_tries = live.run(live.admin, "admin", "user", "approve", "sato", check=False)
    assert admin_tries.returncode != 0  # administrators approve nothing
    approved = live.run(live.officer, "admin", "user", "approve", "sato")  # an officer of north
    assert approved.stdout == "approved officer sato (sites: north)\n"
    # The printed token is sato's: it lists north's evidence and nothing outside north.
    assert lines(live.run(token, "evidence", "list"))[1].startswith(str(rec.id)[:8])

    auditor = live.run(live.admin, "admin", "user", "add", "ito", "--role", "auditor")
    assert lines(auditor)[0] == "user ito (auditor, sites: -) added"
    assert "approves: countersign admin user approve ito" in auditor.stdout

    listed = live.run(live.admin, "admin", "user", "list")
    assert lines(listed)[0].split() == ["NAME", "ROLE", "SITES", "STATE"]
    assert ["sato", "officer", "north", "active"] in columns(listed)
    assert ["ito", "auditor", "-", "awaiting", "approval"] in columns(listed)
    assert token not in listed.stdout
    as_json = json.loads(live.run(live.admin, "admin", "user", "list", "--json").stdout)
    assert as_json == live.api.get("/v1/users").json() and token not in json.dumps(as_json)


def test_device_add_prints_an_enrolment_code_that_enrols_the_device(live: Live) -> None:
    added = live.run(live.admin, "admin", "device", "add", "counter-9", "--site", "north")
    head, code_line = lines(added)
    assert head.startswith("device counter-9 (") and head.endswith(") at north")
    device_id = head.split("(")[1].split(")")[0]
    assert code_line.startswith("enrolment code (one use, expires ")
    code = code_line.split()[-1]

    assert [device_id, "counter-9", "north", "pending"] in columns(live.run(live.admin, "admin", "device", "list"))
    key = nacl.signing.SigningKey.generate()
    body = {"code": code, "public_key": bytes(key.verify_key).hex()}
    enrolled = httpx.post(f"{live.server.url}/v1/enrol", json=body)
    assert enrolled.status_code == 200, enrolled.text
    assert enrolled.json()["device_id"] == device_id
    assert [device_id, "counter-9", "north", "enrolled"] in columns(live.run(live.admin, "admin", "device", "list"))
    as_json = json.loads(live.run(live.admin, "admin", "device", "list", "--json").stdout)
    assert as_json == live.api.get("/v1/devices").json()
    # One use only.
    assert httpx.post(f"{live.server.url}/v1/enrol", json=body).status_code >= 400


def test_device_add_for_an_unknown_site_is_refused(live: Live) -> None:
    refused = live.run(live.admin, "admin", "device", "add", "counter-x", "--site", "nowhere", check=False)
    assert refused.returncode != 0
    assert refused.stderr.startswith("error:") and "404" in refused.stderr
    assert refused.stdout == ""


def test_policy_set_show_clear(live: Live) -> None:
    rec = live.upload()
    flagged = httpx.post(
        f"{live.server.url}/v1/evidence/{rec.id}/flag",
        json={"category": "verbal-abuse"},
        headers={"Authorization": f"Bearer {live.officer}"},
    )
    assert flagged.status_code == 200, flagged.text

    shown = live.run(live.admin, "admin", "policy", "show")
    defaults = lines(shown)
    assert any(line.startswith("(default)") and " incident " in line for line in defaults), shown.stdout

    days = ("--retain-days", "400", "--delete-days", "800")
    rule, recomputed = lines(live.run(live.admin, "admin", "policy", "set", "incident", "--site", "north", *days))
    assert rule.split()[:2] == ["north", "incident"]
    assert "retain 400 d" in rule and "delete after 800 d" in rule
    assert recomputed == "1 recording(s) got a new retain-until date"  # the flagged recording in north

    north = lines(live.run(live.admin, "admin", "policy", "show", "--site", "north"))
    assert rule in north
    assert rule not in lines(live.run(live.admin, "admin", "policy", "show", "--site", "south"))
    api_rule = next(p for p in live.api.get("/v1/policies", params={"site": "north"}).json() if p["site"] == "north")
    assert (api_rule["retain_days"], api_rule["delete_days"]) == (400, 800)

    never = lines(live.run(live.admin, "admin", "policy", "set", "routine", "--site", "south", "--retain-days", "30"))
    assert "retain 30 d" in never[0] and "never deleted automatically" in never[0]
    assert never[1] == "0 recording(s) got a new retain-until date"

    cleared = lines(live.run(live.admin, "admin", "policy", "clear", "incident", "--site", "north"))
    assert "north" not in cleared[0].split()[0]
    assert cleared[1] == "1 recording(s) got a new retain-until date"
    assert rule not in lines(live.run(live.admin, "admin", "policy", "show", "--site", "north"))


def test_policy_show_is_for_admins_only(live: Live) -> None:
    refused = live.run(live.officer, "admin", "policy", "show", check=False)
    assert refused.returncode != 0
    assert refused.stderr.startswith("error:") and "403" in refused.stderr


def test_disable_and_enable_a_user_and_a_device(live: Live) -> None:
    reason = ("--reason", "left the organisation on 2026-11-30")
    assert live.run(live.admin, "admin", "user", "disable", "olivia", *reason).stdout == "user olivia disabled\n"
    assert ["olivia", "officer", "north", "disabled"] in columns(live.run(live.admin, "admin", "user", "list"))
    locked = live.run(live.officer, "evidence", "list", check=False)
    assert locked.returncode == 1 and "401" in locked.stderr
    assert live.run(live.admin, "admin", "user", "enable", "olivia", *reason).stdout == "user olivia enabled\n"
    assert live.run(live.officer, "evidence", "list").returncode == 0

    rec = live.upload(1)
    device = live.device.id
    assert live.run(live.admin, "admin", "device", "disable", device, *reason).stdout.endswith(" disabled\n")
    assert f"{device}  " in live.run(live.admin, "admin", "device", "list").stdout
    assert "disabled" in next(line for line in lines(live.run(live.admin, "admin", "device", "list")) if device in line)
    refused = httpx.post(f"{live.server.url}/v1/recordings", json={}, headers=live.device.auth, timeout=10)
    assert refused.status_code == 401  # a revoked device's uploads are refused...
    assert live.get(live.officer, f"/v1/evidence/{rec.id}")["id"] == str(rec.id)  # ...what it sent stays
    missing = live.run(live.admin, "admin", "user", "disable", "nobody", *reason, check=False)
    assert missing.returncode == 2 and "no user 'nobody'" in missing.stderr


def test_rotate_token(live: Live) -> None:
    rotated = live.run(live.auditor, "admin", "rotate-token")
    old_line, new_line = lines(rotated)
    assert old_line == "your old token no longer works"
    new = new_line.split()[-1]
    assert live.run(new, "audit", "log").returncode == 0
    assert live.run(live.auditor, "audit", "log", check=False).returncode == 1
