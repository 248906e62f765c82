"""HTTP client for the admin, officer and auditor CLIs.

httpx is imported where a request is made, not here: importing it costs more than
the rest of a client command's start-up, and `--help` never sends anything.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from client.errors import BadReply, MissingToken, RequestRefused, ServerUnreachable, fail

if TYPE_CHECKING:
    import httpx


def error_detail(response: httpx.Response) -> str:
    """The server's explanation, readable: FastAPI validation lists become one line each."""
    try:
        detail = response.json().get("detail", response.text)
    except (ValueError, AttributeError):
        return response.text[:500]
    if isinstance(detail, list):
        return "; ".join(f"{'.'.join(str(p) for p in d.get('loc', [])[1:])}: {d.get('msg')}" for d in detail)
    return str(detail)


def _refused(response: httpx.Response) -> RequestRefused:
    return RequestRefused(f"{response.status_code}: {error_detail(response)}")


class ApiClient:
    def __init__(self, server: str, token: str | None) -> None:
        if not token:
            raise fail(MissingToken())
        import httpx

        from client import tls  # --ca-file / --pin (COUNTERSIGN_CA_FILE / COUNTERSIGN_SERVER_PIN)

        try:
            verify = tls.verify_for(server)
        except tls.TlsOptionError as exc:
            raise fail(exc) from exc
        self._transport_error = httpx.TransportError
        self.http = httpx.Client(
            base_url=server.rstrip("/"),
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(120, connect=5),
            verify=verify,
        )

    def _unreachable(self, exc: Exception) -> ServerUnreachable:
        from client import tls

        return tls.unreachable(self.http.base_url, exc)

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """Send a request and return the answer whatever its status; exit only if the server is unreachable."""
        try:
            return self.http.request(method, url, **kwargs)
        except self._transport_error as exc:
            raise fail(self._unreachable(exc)) from exc

    def call(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """Send a request; print a clear error and exit non-zero on failure."""
        response = self.request(method, url, **kwargs)
        if response.status_code >= 400:
            raise fail(_refused(response))
        return response

    @contextmanager
    def stream(self, method: str, url: str, **kwargs: Any) -> Iterator[httpx.Response]:
        """A streamed response; errors are reported like call()'s."""
        try:
            with self.http.stream(method, url, **kwargs) as response:
                if response.status_code >= 400:
                    response.read()
                    raise fail(_refused(response))
                yield response
        except self._transport_error as exc:
            raise fail(self._unreachable(exc)) from exc

    def json(self, method: str, url: str, **kwargs: Any) -> Any:
        response = self.call(method, url, **kwargs)
        try:
            return response.json()
        except ValueError as exc:
            raise fail(BadReply(f"{response.status_code}: the server did not answer with JSON")) from exc
