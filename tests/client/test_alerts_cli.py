"""`countersign admin alerts ...` and `countersign alerts ...` against a live service."""

from __future__ import annotations

import httpx

from evidence import wire
from tests.client.conftest import Live, assert_out_of_scope, lines


def _raise(live: Live) -> str:
    reply = httpx.post(f"{live.server.url}{wire.ALERTS}", json={"kind": "help"}, headers=live.device.auth)
    assert reply.status_code == 201, reply.text
    alert_id: str = reply.json()["id"]
    return alert_id


def test_admin_sets_up_a_site_and_the_secret_is_shown_once(live: Live) -> None:
    args = ("admin", "alerts", "set", "north", "--escalate-after", "90", "--no-incident-alerts")
    shown = live.run(live.admin, *args, "--opening-hours", "mon-fri 08:30-17:15").stdout
    assert shown.startswith("site north: escalate after 90 s; incident alerts off; opening hours mon-fri 08:30-17:15")
    added = lines(
        live.run(live.admin, "admin", "alerts", "contact", "add", "north", "--tier", "1", "--email", "a@b.example")
    )
    assert len(added) == 1 and added[0].endswith("tier 1 of north: email a@b.example")
    hook = lines(
        live.run(
            live.admin, "admin", "alerts", "contact", "add", "north", "--tier", "2", "--webhook", "https://x.example/h"
        )
    )
    secret = hook[1].split()[-1]
    assert hook[1].startswith("webhook secret (shown once") and secret.startswith("whsec_")
    listing = live.run(live.admin, "admin", "alerts", "show", "north").stdout
    assert "https://x.example/h" in listing and "a@b.example" in listing and secret not in listing
    # A hostile URL is refused by the service, with its reason.
    refused = live.run(
        live.admin, "admin", "alerts", "contact", "add", "north", "--webhook", "file:///etc/passwd", check=False
    )
    assert refused.returncode != 0 and "422" in refused.stderr and "http" in refused.stderr
    bad_hours = live.run(live.admin, "admin", "alerts", "set", "north", "--opening-hours", "9 to 5", check=False)
    assert bad_hours.returncode != 0 and "opening hours" in bad_hours.stderr
    contact_id = hook[0].split()[1]
    after = live.run(live.admin, "admin", "alerts", "contact", "remove", "north", contact_id).stdout
    assert "https://x.example/h" not in after


def test_officer_lists_and_acknowledges(live: Live) -> None:
    alert_id = _raise(live)
    [line] = lines(live.run(live.officer, "alerts", "list"))
    assert line.startswith(alert_id) and "open" in line and "north/counter-n1" in line
    assert lines(live.run(live.other_officer, "alerts", "list")) == []
    assert_out_of_scope(live.run(live.other_officer, "alerts", "ack", alert_id, "--message", "not mine", check=False))
    refused = live.run(live.admin, "alerts", "ack", alert_id, "--message", "admins do not answer", check=False)
    assert refused.returncode != 0 and "403" in refused.stderr
    done = live.run(live.officer, "alerts", "ack", alert_id, "--message", "Sato is coming").stdout
    assert done == f"alert {alert_id} acknowledged: the counter counter-n1 sees your message\n"
    seen = httpx.get(f"{live.server.url}{wire.alert_path(alert_id)}", headers=live.device.auth).json()
    assert (seen["state"], seen["acknowledged_by"], seen["message"]) == ("acknowledged", "olivia", "Sato is coming")
    [line] = lines(live.run(live.officer, "alerts", "list", "--state", "acknowledged"))
    assert line.endswith("olivia: Sato is coming")
