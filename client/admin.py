"""`countersign admin ...`: sites, users and devices, through the API."""

from __future__ import annotations

from typing import Annotated

import typer

from client.alerts import admin_app as alerts_admin_app
from client.http import ApiClient
from client.notices import notice_app
from client.output import Json, echo, echo_json, echo_table
from client.tls import add_tls_options
from evidence.errors import ExitCode

app = typer.Typer(no_args_is_help=True, help="Administration: sites, users, devices (admins cannot read evidence).")
site_app = typer.Typer(no_args_is_help=True, help="Sites (offices, branches, call centres).")
user_app = typer.Typer(no_args_is_help=True, help="Officers, admins and auditors.")
device_app = typer.Typer(no_args_is_help=True, help="Counter devices and phone gateways.")
app.add_typer(site_app, name="site")
app.add_typer(user_app, name="user")
app.add_typer(device_app, name="device")
policy_app = typer.Typer(no_args_is_help=True, help="Retention policies (see `countersign retention`).")
app.add_typer(policy_app, name="policy")
app.add_typer(notice_app, name="notice")  # consent notice texts and their spoken readings (client/notices.py)
app.add_typer(alerts_admin_app, name="alerts")  # help alerts: escalation, opening hours, contacts (client/alerts.py)

Server = Annotated[str, typer.Option("--server", envvar="COUNTERSIGN_SERVER", help="Service URL.")]
Token = Annotated[str | None, typer.Option("--token", envvar="COUNTERSIGN_TOKEN", help="Your API token.")]
DEFAULT_SERVER = "http://127.0.0.1:8000"


@site_app.command("add")
def site_add(
    site_id: Annotated[str, typer.Argument(help="Short id, e.g. shibuya-ward-office")],
    name: Annotated[str, typer.Option(help="Display name.")] = "",
    server: Server = DEFAULT_SERVER,
    token: Token = None,
) -> None:
    """Add a site."""
    site = ApiClient(server, token).json("POST", "/v1/sites", json={"id": site_id, "name": name})
    echo(f"site {site['id']} added")


@site_app.command("list")
def site_list(as_json: Json = False, server: Server = DEFAULT_SERVER, token: Token = None) -> None:
    """List sites."""
    sites = ApiClient(server, token).json("GET", "/v1/sites")
    if as_json:
        echo_json(sites)
        return
    echo_table(("SITE", "NAME"), [(s["id"], s["name"] or "-") for s in sites], empty="no sites")


@user_app.command("add")
def user_add(
    name: str,
    role: Annotated[str, typer.Option(help="officer, admin or auditor")],
    site: Annotated[list[str] | None, typer.Option(help="Site the user may act on (repeat for several).")] = None,
    server: Server = DEFAULT_SERVER,
    token: Token = None,
) -> None:
    """Add a user and print their token once."""
    user = ApiClient(server, token).json("POST", "/v1/users", json={"name": name, "role": role, "sites": site or []})
    echo(f"user {user['name']} ({user['role']}, sites: {', '.join(user['sites']) or '-'}) added")
    echo(f"token (shown once): {user['token']}")
    if user.get("pending_approval"):
        who = "another auditor" if user["role"] == "auditor" else "an auditor or an officer of its sites"
        echo(f"the token works once {who} approves: countersign admin user approve {user['name']}")


@user_app.command("list")
def user_list(as_json: Json = False, server: Server = DEFAULT_SERVER, token: Token = None) -> None:
    """List users (never their tokens)."""
    users = ApiClient(server, token).json("GET", "/v1/users")
    if as_json:
        echo_json(users)
        return
    rows = [
        (
            u["name"],
            u["role"],
            ",".join(u["sites"]) or "-",
            "disabled" if u.get("disabled") else "awaiting approval" if u.get("pending_approval") else "active",
        )
        for u in users
    ]
    echo_table(("NAME", "ROLE", "SITES", "STATE"), rows, empty="no users")


Reason = Annotated[str, typer.Option(help="Why (at least 10 characters; logged).")]


def _find(client: ApiClient, kind: str, ref: str) -> dict[str, object]:
    """A user by name, or a device by id or (unique) name."""
    rows: list[dict[str, object]] = client.json("GET", f"/v1/{kind}s")
    found = [r for r in rows if ref in (r["id"], r["name"])]
    if len(found) != 1:
        why = f"no {kind} {ref!r}" if not found else f"{len(found)} {kind}s are named {ref!r}: use the id"
        typer.secho(f"error: {why}", fg=typer.colors.RED, err=True)
        raise typer.Exit(ExitCode.USAGE)
    return found[0]


def _access(kind: str, ref: str, action: str, reason: str, server: str, token: str | None) -> None:
    client = ApiClient(server, token)
    row = _find(client, kind, ref)
    done = client.json("POST", f"/v1/{kind}s/{row['id']}/{action}", json={"reason": reason})
    echo(f"{kind} {done['name']} {action}d")


@user_app.command("approve")
def user_approve(name: str, server: Server = DEFAULT_SERVER, token: Token = None) -> None:
    """Approve an officer's or auditor's access (run by an auditor, or an officer of its sites; never admins)."""
    client = ApiClient(server, token)
    pending = {u["name"]: u for u in client.json("GET", "/v1/grants")}
    if name not in pending:
        typer.secho(f"error: no access of {name!r} waits for your approval", fg=typer.colors.RED, err=True)
        raise typer.Exit(ExitCode.USAGE)
    done = client.json("POST", f"/v1/users/{pending[name]['id']}/approve")
    echo(f"approved {done['role']} {done['name']} (sites: {', '.join(done['sites']) or '-'})")


@user_app.command("pending")
def user_pending(server: Server = DEFAULT_SERVER, token: Token = None) -> None:
    """Officers and auditors whose access waits for your approval (officers and auditors run this)."""
    rows = ApiClient(server, token).json("GET", "/v1/grants")
    if not rows:
        echo("no access waits for your approval")
    for user in rows:
        echo(f"{user['name']}\t{user['role']}\t{','.join(user['sites']) or '-'}\tawaiting approval")


@user_app.command("disable")
def user_disable(name: str, reason: Reason, server: Server = DEFAULT_SERVER, token: Token = None) -> None:
    """Lock a user out at once (their token stops working; everything they did stays)."""
    _access("user", name, "disable", reason, server, token)


@user_app.command("enable")
def user_enable(name: str, reason: Reason, server: Server = DEFAULT_SERVER, token: Token = None) -> None:
    """Let a disabled user back in with the token they had."""
    _access("user", name, "enable", reason, server, token)


@device_app.command("add")
def device_add(
    name: str,
    site: Annotated[str, typer.Option(help="Site the device records for.")],
    server: Server = DEFAULT_SERVER,
    token: Token = None,
) -> None:
    """Register a device and print its one-time enrolment code."""
    device = ApiClient(server, token).json("POST", "/v1/devices", json={"name": name, "site": site})
    echo(f"device {device['name']} ({device['id']}) at {device['site']}")
    echo(f"enrolment code (one use, expires {device['enrolment_expires_at']}): {device['enrolment_code']}")


@device_app.command("list")
def device_list(as_json: Json = False, server: Server = DEFAULT_SERVER, token: Token = None) -> None:
    """List devices."""
    devices = ApiClient(server, token).json("GET", "/v1/devices")
    if as_json:
        echo_json(devices)
        return
    rows = [
        (d["id"], d["name"], d["site"], "disabled" if d.get("disabled") else "enrolled" if d["enrolled"] else "pending")
        for d in devices
    ]
    echo_table(("ID", "NAME", "SITE", "STATE"), rows, empty="no devices")


@device_app.command("disable")
def device_disable(device: str, reason: Reason, server: Server = DEFAULT_SERVER, token: Token = None) -> None:
    """Shut a lost or stolen device off: its uploads are refused, what it uploaded stays evidence."""
    _access("device", device, "disable", reason, server, token)


@device_app.command("enable")
def device_enable(device: str, reason: Reason, server: Server = DEFAULT_SERVER, token: Token = None) -> None:
    """Let a disabled device upload again."""
    _access("device", device, "enable", reason, server, token)


@app.command("rotate-token")
def rotate_token(server: Server = DEFAULT_SERVER, token: Token = None) -> None:
    """Replace your own token (any user: officers and auditors too); print the new one once."""
    new = ApiClient(server, token).json("POST", "/v1/token")["token"]
    echo("your old token no longer works")
    echo(f"new token (shown once): {new}")


@policy_app.command("set")
def policy_set(
    category: Annotated[str, typer.Argument(help="routine, incident, objection or interrupted")],
    site: Annotated[str | None, typer.Option(help="Only at this site (default: the rule for every site).")] = None,
    retain_days: Annotated[int | None, typer.Option(help="Keep at least this many days from the start.")] = None,
    delete_days: Annotated[int | None, typer.Option(help="Delete once this many days old.")] = None,
    server: Server = DEFAULT_SERVER,
    token: Token = None,
) -> None:
    """Set a retention rule; affected recordings get their retain-until date recomputed."""
    body = {"category": category, "site": site, "retain_days": retain_days, "delete_days": delete_days}
    change = ApiClient(server, token).json("PUT", "/v1/policies", json=body)
    echo(f"{_policy_line(change['rule'])}\n{change['recomputed']} recording(s) got a new retain-until date")


@policy_app.command("clear")
def policy_clear(
    category: Annotated[str, typer.Argument(help="routine, incident, objection or interrupted")],
    site: Annotated[str | None, typer.Option(help="The site's rule (default: the stored default rule).")] = None,
    server: Server = DEFAULT_SERVER,
    token: Token = None,
) -> None:
    """Remove a stored rule: the site falls back to the default, a stored default to the shipped one."""
    params = {"category": category, **({"site": site} if site else {})}
    change = ApiClient(server, token).json("DELETE", "/v1/policies", params=params)
    now = _policy_line(change["rule"]) if change["rule"] else "no explicit rule: the default applies"
    echo(f"{now}\n{change['recomputed']} recording(s) got a new retain-until date")


def _policy_line(p: dict[str, object]) -> str:
    retain = f"retain {p['retain_days']} d" if p["retain_days"] is not None else "-"
    delete = f"delete after {p['delete_days']} d" if p["delete_days"] is not None else "never deleted automatically"
    return f"{p['site'] or '(default)':<20} {p['category']:<12} {retain:<14} {delete:<30} {p['source']}"


@policy_app.command("show")
def policy_show(
    site: Annotated[str | None, typer.Option(help="Only the defaults and this site's rules.")] = None,
    server: Server = DEFAULT_SERVER,
    token: Token = None,
) -> None:
    """Show the rules in force (precedence: hold > retain > longest retention > explicit > shortest deletion)."""
    for p in ApiClient(server, token).json("GET", "/v1/policies", params={"site": site} if site else {}):
        echo(_policy_line(p))


add_tls_options(app)  # --ca-file and --pin on every command above with --server: keep last
