"""Pages: Jinja2 templates with autoescaping on for every template, and the console's headers.

Whatever a page shows that someone else wrote (a device name, a case reference, a notice) is
escaped by Jinja2; no template marks anything safe. The policy allows this origin only and no
inline script or style; api.middleware.SecurityHeaders adds nosniff, DENY framing and no referrer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from evidence import display

HERE = Path(__file__).parent
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; media-src 'self';"
    " connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)
PAGE_HEADERS = {"Content-Security-Policy": CSP, "Cache-Control": "no-store"}
ZONE = display.zone(None)  # Asia/Tokyo; a per-site or per-user zone is for a later slice

_env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=True, undefined=StrictUndefined)
_env.filters["local"] = lambda value: display.local(value, ZONE)
_env.filters["local_date"] = lambda value: display.local_date(value.isoformat() if value else None, ZONE)
_env.filters["duration"] = display.duration


def page(name: str, status: int = 200, **context: Any) -> HTMLResponse:
    context.setdefault("user", None)
    return HTMLResponse(_env.get_template(name).render(**context), status_code=status, headers=PAGE_HEADERS)
