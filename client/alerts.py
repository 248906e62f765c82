"""`countersign alerts ...` (officers: list and answer help alerts) and `countersign admin alerts ...` (set-up)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from client.http import ApiClient
from client.output import echo, echo_json, when
from client.tls import add_tls_options
from evidence import wire
from evidence.text import neutral

app = typer.Typer(no_args_is_help=True, help="Help alerts from the counters of your sites: list and acknowledge.")
# Added to `countersign admin` as `alerts` (client/admin.py gives it --ca-file and --pin with the rest).
admin_app = typer.Typer(no_args_is_help=True, help="A site's help alerts: escalation, opening hours, contacts.")
contact_app = typer.Typer(no_args_is_help=True, help="Who is told: e-mail addresses and signed webhooks, by tier.")
admin_app.add_typer(contact_app, name="contact")

# As client/admin.py's (not imported from there: it imports this module).
Server = Annotated[str, typer.Option("--server", envvar="COUNTERSIGN_SERVER", help="Service URL.")]
Token = Annotated[str | None, typer.Option("--token", envvar="COUNTERSIGN_TOKEN", help="Your API token.")]
DEFAULT_SERVER = "http://127.0.0.1:8000"


def _line(a: dict[str, Any]) -> str:
    answered = (
        f"  {neutral(a['acknowledged_by'] or '', 100)}: {neutral(a['message'] or '', 200)}"
        if a["acknowledged_by"]
        else ""
    )
    return (
        f"{a['id']}  {when(a['created_at'])}  {a['state']:<12} tier {a['tier']}  {a['kind']:<8} "
        f"{neutral(a['site'], 64)}/{neutral(a['device_name'], 100)}{answered}"
    )


@app.command("list")
def list_(
    state: Annotated[str | None, typer.Option(help="open, escalated or acknowledged.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500, help="At most this many, newest first.")] = 50,
    json_: Annotated[bool, typer.Option("--json", help="The alerts as JSON.")] = False,
    server: Server = DEFAULT_SERVER,
    token: Token = None,
) -> None:
    """The alerts of your sites, newest first."""
    params: dict[str, Any] = {"limit": limit, **({"state": state} if state else {})}
    alerts = ApiClient(server, token).json("GET", wire.ALERTS, params=params)
    if json_:
        echo_json(alerts)
        return
    for alert in alerts:
        echo(_line(alert))


@app.command()
def show(alert_id: str, server: Server = DEFAULT_SERVER, token: Token = None) -> None:
    """One alert, as JSON."""
    echo_json(ApiClient(server, token).json("GET", wire.alert_path(alert_id)))


@app.command()
def ack(
    alert_id: str,
    message: Annotated[str, typer.Option(help='What the counter sees, e.g. "Sato is coming".')],
    server: Server = DEFAULT_SERVER,
    token: Token = None,
) -> None:
    """Acknowledge an alert: the kiosk shows your name and message at once; escalation stops."""
    alert = ApiClient(server, token).json("POST", wire.alert_ack_path(alert_id), json={"message": message})
    echo(f"alert {alert['id']} acknowledged: the counter {neutral(alert['device_name'], 100)} sees your message")


def _show_alerting(shown: dict[str, Any]) -> None:
    echo(
        f"site {shown['site']}: escalate after {shown['escalate_after_seconds']} s; "
        f"incident alerts {'on' if shown['incident_alerts'] else 'off'}; "
        f"opening hours {shown['opening_hours'] or '(none)'} ({shown['timezone']})"
    )
    for contact in shown["contacts"]:
        echo(f"  tier {contact['tier']}  {contact['channel']:<8} {contact['target']}  ({contact['id']})")


@admin_app.command("set")
def set_(
    site: str,
    escalate_after: Annotated[
        int | None, typer.Option(min=1, help="Seconds without an answer before the next tier.")
    ] = None,
    incident_alerts: Annotated[
        bool | None, typer.Option("--incident-alerts/--no-incident-alerts", help="An incident flag calls for help too.")
    ] = None,
    opening_hours: Annotated[
        str | None, typer.Option(help="e.g. 'mon-fri 08:30-17:15; sat 09:00-12:00'; '' clears.")
    ] = None,
    timezone: Annotated[str | None, typer.Option(help="The site's time zone (IANA), e.g. Asia/Tokyo.")] = None,
    server: Server = DEFAULT_SERVER,
    token: Token = None,
) -> None:
    """Change a site's alerting; options not given keep their value."""
    body: dict[str, Any] = {}
    if escalate_after is not None:
        body["escalate_after_seconds"] = escalate_after
    if incident_alerts is not None:
        body["incident_alerts"] = incident_alerts
    if opening_hours is not None:
        body["opening_hours"] = opening_hours or None
    if timezone is not None:
        body["timezone"] = timezone
    _show_alerting(ApiClient(server, token).json("PUT", wire.SITE_ALERTING.format(site_id=site), json=body))


@admin_app.command("show")
def show_site(site: str, server: Server = DEFAULT_SERVER, token: Token = None) -> None:
    """A site's alerting settings and contacts (webhook secrets are never shown again)."""
    _show_alerting(ApiClient(server, token).json("GET", wire.SITE_ALERTING.format(site_id=site)))


@contact_app.command("add")
def contact_add(
    site: str,
    tier: Annotated[int, typer.Option(min=1, max=9, help="1 is told first; later tiers on escalation.")] = 1,
    email: Annotated[str | None, typer.Option(help="An e-mail address.")] = None,
    webhook: Annotated[str | None, typer.Option(help="An http(s) URL that receives signed JSON.")] = None,
    server: Server = DEFAULT_SERVER,
    token: Token = None,
) -> None:
    """Add an e-mail address or a webhook; a webhook's signing secret is printed once: store it in the receiver."""
    if (email is None) == (webhook is None):
        raise typer.BadParameter("give exactly one of --email and --webhook")
    body = {"tier": tier, **({"email": email} if email else {"webhook": webhook})}
    created = ApiClient(server, token).json("POST", wire.ALERT_CONTACTS.format(site_id=site), json=body)
    echo(f"contact {created['id']} added to tier {created['tier']} of {site}: {created['channel']} {created['target']}")
    if created.get("secret"):
        echo(f"webhook secret (shown once, store it in the receiver): {created['secret']}")


@contact_app.command("remove")
def contact_remove(site: str, contact_id: str, server: Server = DEFAULT_SERVER, token: Token = None) -> None:
    """Remove a contact (notifications queued for it are not sent)."""
    path = wire.ALERT_CONTACT.format(site_id=site, contact_id=contact_id)
    _show_alerting(ApiClient(server, token).json("DELETE", path))


add_tls_options(app)  # --ca-file and --pin on the officers' commands (admin_app gets them through client/admin.py)
