"""`countersign hold ...`: officers place, inspect and release legal holds (within their sites)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import typer

from client.admin import DEFAULT_SERVER, Server, Token
from client.http import ApiClient
from client.output import echo, echo_json, when
from client.tls import add_tls_options

app = typer.Typer(
    no_args_is_help=True,
    help="Legal holds: a held recording cannot be deleted by anyone until every hold on it is released.",
)


def _line(h: dict[str, Any]) -> str:
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
    state = "active" if h["active"] else f"released {when(h['released_at'])}"
    return f"{h['id']}  {h['case_ref']:<20} {state:<28} {' '.join(scope)}"


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
    body = {
        "case_ref": case,
        "reason": reason,
        "recordings": recording or [],
        "site": site,
        "device": device,
        "started_from": from_,
        "started_to": to,
        "incident_category": category,
    }
    hold = ApiClient(server, token).json("POST", "/v1/holds", json={k: v for k, v in body.items() if v is not None})
    echo(f"hold {hold['id']} placed for case {hold['case_ref']}; it covers {hold['covers']} recording(s) now")


@app.command("list")
def list_(
    released: Annotated[bool, typer.Option("--released", help="Released holds instead of active ones.")] = False,
    all_: Annotated[bool, typer.Option("--all", help="Active and released.")] = False,
    server: Server = DEFAULT_SERVER,
    token: Token = None,
) -> None:
    """List holds in your sites (active ones by default)."""
    client = ApiClient(server, token)
    # The service lists active holds unless told `active=false`, and a query string cannot
    # say "either"; so --all asks for both and merges them, oldest first as the service orders.
    wanted = ("true", "false") if all_ else (str(not released).lower(),)
    holds = [hold for active in wanted for hold in client.json("GET", "/v1/holds", params={"active": active})]
    for hold in sorted(holds, key=lambda h: (datetime.fromisoformat(h["created_at"]), h["id"])):
        echo(_line(hold))


@app.command()
def show(hold_id: str, server: Server = DEFAULT_SERVER, token: Token = None) -> None:
    """Show one hold, with how many recordings it covers now."""
    echo_json(ApiClient(server, token).json("GET", f"/v1/holds/{hold_id}"))


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
