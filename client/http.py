"""HTTP client for the admin, officer and auditor CLIs."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
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


def _fail(message: str, code: int) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code)


class ApiClient:
    def __init__(self, server: str, token: str | None) -> None:
        if not token:
            raise _fail("set COUNTERSIGN_TOKEN (or pass --token)", 2)
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
            raise _fail(f"cannot reach {self.http.base_url}: {exc}", 7) from exc
        if response.status_code >= 400:
            raise _fail(f"{response.status_code}: {error_detail(response)}", 1)
        return response

    @contextmanager
    def stream(self, method: str, url: str, **kwargs: Any) -> Iterator[httpx.Response]:
        """A streamed response; errors are reported like call()'s."""
        try:
            with self.http.stream(method, url, **kwargs) as response:
                if response.status_code >= 400:
                    response.read()
                    raise _fail(f"{response.status_code}: {error_detail(response)}", 1)
                yield response
        except httpx.TransportError as exc:
            raise _fail(f"cannot reach {self.http.base_url}: {exc}", 7) from exc

    def json(self, method: str, url: str, **kwargs: Any) -> Any:
        response = self.call(method, url, **kwargs)
        try:
            return response.json()
        except ValueError as exc:
            raise _fail(f"{response.status_code}: the server did not answer with JSON", 1) from exc
