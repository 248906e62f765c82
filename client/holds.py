"""`countersign hold ...`: officers place, inspect and release legal holds (within their sites)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import typer

from client.admin import DEFAULT_SERVER, Server, Token
from client.http import ApiClient
from client.ids import resolve_recording
from client.output import Json, Tz, echo, echo_fields, echo_json, echo_table, local, use_zone
from client.tls import add_tls_options

app = typer.Typer(
    no_args_is_help=True,
    help="Legal holds: a held recording cannot be deleted by anyone until every hold on it is released.",
)


def _scope(h: dict[str, Any]) -> str:
    scope = []
    if h["scoped"]:
        scope.append(f"site={h['site']}")
        for key, name in (("device", "device"), ("started_from", "from"), ("started_to", "to")):
            if h[key]:
                scope.append(f"{name}={h[key]}")
        if h["incident_category"]:
            scope.append(f"category={h['incident_category']}")
    if h["recordings"]:
        scope.append(f"{len(h['recordings'])} recording(s)")
    return " ".join(scope) or "-"


def _state(h: dict[str, Any]) -> str:
    return "active" if h["active"] else f"released {local(h['released_at'])}"


@app.command()
def create(
    case: Annotated[str, typer.Option("--case", help="Case reference, e.g. 2026-LIT-014.")],
    reason: Annotated[str, typer.Option(help="Why the evidence must be kept (at least 10 characters; logged).")],
    recording: Annotated[list[str] | None, typer.Option(help="A recording to hold (repeat for several).")] = None,
    site: Annotated[str | None, typer.Option(help="Hold every recording of this site (and later ones).")] = None,
    device: Annotated[str | None, typer.Option(help="Only recordings of this device (id).")] = None,
    from_: Annotated[str | None, typer.Option("--from", help="ISO time: recordings started at or after.")] = None,
    to: Annotated[str | None, typer.Option("--to", help="ISO time: recordings started before.")] = None,
    category: Annotated[str | None, typer.Option(help="Only recordings flagged with this incident category.")] = None,
    server: Server = DEFAULT_SERVER,
    token: Token = None,
) -> None:
    """Place a hold on explicit recordings and/or a scope; a scope also catches recordings made later."""
    client = ApiClient(server, token)
    body = {
        "case_ref": case,
        "reason": reason,
        "recordings": [resolve_recording(client, r) for r in recording or []],  # short ids: within your sites
        "site": site,
        "device": device,
        "started_from": from_,
        "started_to": to,
        "incident_category": category,
    }
    hold = client.json("POST", "/v1/holds", json={k: v for k, v in body.items() if v is not None})
    echo(f"hold {hold['id']} placed for case {hold['case_ref']}; it covers {hold['covers']} recording(s) now")


@app.command("list")
def list_(
    released: Annotated[bool, typer.Option("--released", help="Released holds instead of active ones.")] = False,
    all_: Annotated[bool, typer.Option("--all", help="Active and released.")] = False,
    as_json: Json = False,
    tz: Tz = None,
    server: Server = DEFAULT_SERVER,
    token: Token = None,
) -> None:
    """List holds in your sites (active ones by default)."""
    use_zone(tz)
    client = ApiClient(server, token)
    # The service lists active holds unless told `active=false`, and a query string cannot
    # say "either"; so --all asks for both and merges them, oldest first as the service orders.
    wanted = ("true", "false") if all_ else (str(not released).lower(),)
    holds = [hold for active in wanted for hold in client.json("GET", "/v1/holds", params={"active": active})]
    holds.sort(key=lambda h: (datetime.fromisoformat(h["created_at"]), h["id"]))
    if as_json:
        echo_json(holds)
        return
    rows = [(h["id"], h["case_ref"], h["site"], local(h["created_at"]), _state(h), _scope(h)) for h in holds]
    echo_table(("ID", "CASE", "SITE", "PLACED", "STATE", "SCOPE"), rows, empty="no holds")


@app.command()
def show(
    hold_id: str, as_json: Json = False, tz: Tz = None, server: Server = DEFAULT_SERVER, token: Token = None
) -> None:
    """Show one hold, with how many recordings it covers now."""
    use_zone(tz)
    h = ApiClient(server, token).json("GET", f"/v1/holds/{hold_id}")
    if as_json:
        echo_json(h)
        return
    echo_fields(
        [
            ("id", h["id"]),
            ("case", h["case_ref"]),
            ("reason", h["reason"]),
            ("site", h["site"]),
            ("scope", _scope(h)),
            ("recordings", ", ".join(h["recordings"]) or "-"),
            ("covers now", h.get("covers") if h.get("covers") is not None else "-"),
            ("placed", f"{local(h['created_at'])} by {h['created_by']}"),
            ("state", _state(h)),
            *([("release reason", h["release_reason"])] if h.get("release_reason") else []),
        ]
    )


@app.command()
def release(
    hold_id: str,
    reason: Annotated[str, typer.Option(help="Why the hold is no longer needed (at least 10 characters; logged).")],
    server: Server = DEFAULT_SERVER,
    token: Token = None,
) -> None:
    """Release a hold. Recordings past their date go on the next retention run, unless another hold covers them."""
    hold = ApiClient(server, token).json("POST", f"/v1/holds/{hold_id}/release", json={"reason": reason})
    echo(f"hold {hold['id']} ({hold['case_ref']}) released")


add_tls_options(app)  # --ca-file and --pin on every command above with --server: keep last
