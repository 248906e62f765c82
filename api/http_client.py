"""HTTP client for the admin, officer and auditor CLIs."""

from __future__ import annotations

from typing import Any

import httpx
import typer


def error_detail(response: httpx.Response) -> str:
    """The server's explanation, readable: FastAPI validation lists become one line each."""
    try:
        detail = response.json().get("detail", response.text)
    except (ValueError, AttributeError):
        return response.text[:500]
    if isinstance(detail, list):
        return "; ".join(f"{'.'.join(str(p) for p in d.get('loc', [])[1:])}: {d.get('msg')}" for d in detail)
    return str(detail)


class ApiClient:
    def __init__(self, server: str, token: str | None) -> None:
        if not token:
            typer.secho("error: set COUNTERSIGN_TOKEN (or pass --token)", fg=typer.colors.RED, err=True)
            raise typer.Exit(2)
        self.http = httpx.Client(
            base_url=server.rstrip("/"),
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(120, connect=5),
        )

    def call(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """Send a request; print a clear error and exit non-zero on failure."""
        try:
            response = self.http.request(method, url, **kwargs)
        except httpx.TransportError as exc:
            typer.secho(f"error: cannot reach {self.http.base_url}: {exc}", fg=typer.colors.RED, err=True)
            raise typer.Exit(7) from exc
        if response.status_code >= 400:
            detail = error_detail(response)
            typer.secho(f"error: {response.status_code}: {detail}", fg=typer.colors.RED, err=True)
            raise typer.Exit(1)
        return response

    def json(self, method: str, url: str, **kwargs: Any) -> Any:
        response = self.call(method, url, **kwargs)
        try:
            return response.json()
        except ValueError as exc:
            typer.secho(
                f"error: {response.status_code}: the server did not answer with JSON", fg=typer.colors.RED, err=True
            )
            raise typer.Exit(1) from exc
