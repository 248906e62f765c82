"""HTTP client for the admin, officer and auditor CLIs."""

from __future__ import annotations

from typing import Any

import httpx
import typer


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
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            typer.secho(f"error: {response.status_code}: {detail}", fg=typer.colors.RED, err=True)
            raise typer.Exit(1)
        return response

    def json(self, method: str, url: str, **kwargs: Any) -> Any:
        return self.call(method, url, **kwargs).json()
