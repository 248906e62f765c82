"""The retention commands as a user types them, against a live server: policies, flags, extensions, holds, deletion."""

from __future__ import annotations

import json
import re

import httpx

from api.bootstrap import approve_user
from api.core.settings import Settings
from tests.conftest import Deployment, bearer, cli_env, countersign, enrol_sim_device
from tests.support.retention_support import upload


def test_policy_hold_flag_extend_delete_through_the_cli(deployment: Deployment) -> None:
    api = httpx.Client(base_url=deployment.server.url, headers=bearer(deployment.admin_token))
    device = enrol_sim_device(api, deployment.admin_token, "counter-cli", "tokyo")  # type: ignore[arg-type]
    kept, doomed = upload(api, device, 1), upload(api, device, 1)  # type: ignore[arg-type]
    admin = cli_env(COUNTERSIGN_TOKEN=deployment.admin_token, COUNTERSIGN_SERVER=deployment.server.url)
    officer = deployment.officer_env()

    shown = countersign("admin", "policy", "show", env=admin).stdout
    assert re.search(r"\(default\)\s+routine\s+-\s+delete after 30 d\s+shipped", shown), shown
    out = countersign("admin", "policy", "set", "routine", "--site", "tokyo", "--delete-days", "14", env=admin).stdout
    assert "tokyo" in out and "2 recording(s) got a new retain-until date" in out
    refused = countersign("admin", "policy", "set", "routine", env=admin, check=False)
    assert refused.returncode == 1 and "retain period, a delete period" in refused.stderr

    out = countersign("evidence", "flag", kept, "--category", "threat", env=officer).stdout
    assert "flagged threat" in out and "default/incident" in out
    until = "2031-04-01T00:00:00+09:00"
    out = countersign(
        "evidence", "extend", kept, "--until", until, "--reason", "claim filed in court", env=officer
    ).stdout
    assert "extended by an officer" in out

    out = countersign("hold", "create", "--case", "2026-LIT-014", "--reason", "litigation hold for the claim",
                      "--recording", kept, env=officer).stdout  # fmt: skip
    hold_id = re.search(r"hold ([0-9a-f-]{36}) placed for case 2026-LIT-014; it covers 1", out)
    assert hold_id, out
    assert "2026-LIT-014" in countersign("hold", "list", env=officer).stdout
    assert json.loads(countersign("hold", "show", hold_id[1], "--json", env=officer).stdout)["covers"] == 1

    refused = countersign("evidence", "delete", kept, "--reason", "data subject asked for it", env=officer, check=False)
    assert refused.returncode == 1 and "409" in refused.stderr and "2026-LIT-014" in refused.stderr
    out = countersign("evidence", "delete", doomed, "--reason", "recorded by mistake, nobody there", env=officer).stdout
    request_id = out.split()[2]  # "deletion requested: <id> for recording ..."
    second = api.post("/v1/users", json={"name": "otto", "role": "officer", "sites": ["tokyo"]}).json()["token"]
    approve_user(Settings(data_dir=deployment.server.data, env="development"), "otto")
    approver = cli_env(COUNTERSIGN_TOKEN=second, COUNTERSIGN_SERVER=deployment.server.url)
    out = countersign("evidence", "approve-deletion", request_id, env=approver).stdout
    assert "deleted: keys destroyed, objects removed, tombstone signed" in out
    tomb = json.loads(countersign("evidence", "tombstone", doomed, env=officer).stdout)
    assert tomb["reason"] == "recorded by mistake, nobody there" and tomb["signature"]

    out = countersign("hold", "release", hold_id[1], "--reason", "claim withdrawn by customer", env=officer).stdout
    assert "released" in out
    assert countersign("hold", "list", env=officer).stdout.strip() == "no holds"
    assert hold_id[1] in countersign("hold", "list", "--released", env=officer).stdout

    status = countersign("retention", "status", "--data", str(deployment.server.data), "--days", "3650").stdout
    assert "SITE" in status and "tokyo" in status
    as_json = json.loads(
        countersign("retention", "status", "--data", str(deployment.server.data), "--days", "3650", "--json").stdout
    )
    assert "tokyo" in {line["site"] for line in as_json["expiring"]} and as_json["due_now"] >= 0
    dry = countersign("retention", "run", "--data", str(deployment.server.data), "--dry-run").stdout
    assert "dry run: would purge 0" in dry
    api.close()
