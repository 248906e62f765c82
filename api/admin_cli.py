"""`countersign admin ...`: sites, users and devices, through the API."""

from __future__ import annotations

from typing import Annotated

import typer

from api.http_client import ApiClient

app = typer.Typer(no_args_is_help=True, help="Administration: sites, users, devices (admins cannot read evidence).")
site_app = typer.Typer(no_args_is_help=True, help="Sites (offices, branches, call centres).")
user_app = typer.Typer(no_args_is_help=True, help="Officers, admins and auditors.")
device_app = typer.Typer(no_args_is_help=True, help="Counter devices and phone gateways.")
app.add_typer(site_app, name="site")
app.add_typer(user_app, name="user")
app.add_typer(device_app, name="device")

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
    typer.echo(f"site {site['id']} added")


@site_app.command("list")
def site_list(server: Server = DEFAULT_SERVER, token: Token = None) -> None:
    """List sites."""
    for site in ApiClient(server, token).json("GET", "/v1/sites"):
        typer.echo(f"{site['id']}\t{site['name']}")


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
    typer.echo(f"user {user['name']} ({user['role']}, sites: {', '.join(user['sites']) or '-'}) added")
    typer.echo(f"token (shown once): {user['token']}")


@user_app.command("list")
def user_list(server: Server = DEFAULT_SERVER, token: Token = None) -> None:
    """List users (never their tokens)."""
    for user in ApiClient(server, token).json("GET", "/v1/users"):
        typer.echo(f"{user['name']}\t{user['role']}\t{','.join(user['sites'])}")


@device_app.command("add")
def device_add(
    name: str,
    site: Annotated[str, typer.Option(help="Site the device records for.")],
    server: Server = DEFAULT_SERVER,
    token: Token = None,
) -> None:
    """Register a device and print its one-time enrolment code."""
    device = ApiClient(server, token).json("POST", "/v1/devices", json={"name": name, "site": site})
    typer.echo(f"device {device['name']} ({device['id']}) at {device['site']}")
    typer.echo(f"enrolment code (one use, expires {device['enrolment_expires_at']}): {device['enrolment_code']}")


@device_app.command("list")
def device_list(server: Server = DEFAULT_SERVER, token: Token = None) -> None:
    """List devices."""
    for device in ApiClient(server, token).json("GET", "/v1/devices"):
        typer.echo(
            f"{device['id']}\t{device['name']}\t{device['site']}\t{'enrolled' if device['enrolled'] else 'pending'}"
        )
