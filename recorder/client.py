"""The device's HTTP client. Transient failures (network, 5xx, 429) are retried by
the caller; anything else is a refusal that must be reported, never swallowed."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from evidence import tls, wire
from recorder.errors import ServerRefused, ServerUnreachable, UsageError

if TYPE_CHECKING:
    from recorder.home import DeviceHome

TIMEOUT = httpx.Timeout(30.0, connect=5.0)


class ServerNotTrusted(ServerUnreachable):
    """The server is not the one this device trusts; nothing was sent to it"""

    # Exit 7 (SERVER_UNREACHABLE), as for a server that is down: the real server was not reached
    # (an impostor, a TLS-intercepting proxy or a captive portal was), nothing was sent, the
    # evidence stays in the spool and the uploader keeps retrying; 'recorder sync' sends it once
    # the pinned server answers again.


class NotFound(ServerRefused):
    """The server does not know that path or object (404)"""

    # Still a refusal for uploads; the kiosk tells from it that a service predates an endpoint.


class DeviceClient:
    """The device's connection to the service.

    Over https every connection is verified against the CA (the device's own ca.pem, else the
    default CAs) and, once enrolled, against the pinned fingerprint of the server's certificate;
    evidence/tls.py checks the pin inside the TLS handshake, before any request is written.
    """

    def __init__(
        self, server: str, token: str | None = None, *, ca_file: Path | None = None, pin: str | None = None
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.peer: tls.PeerPin | None = None
        verify: Any = True
        if server.lower().startswith("https://"):
            self.peer = tls.PeerPin(pin)
            verify = tls.client_context(ca_file, self.peer)
        self.http = httpx.Client(base_url=server.rstrip("/"), headers=headers, timeout=TIMEOUT, verify=verify)

    @classmethod
    def for_home(cls, home: DeviceHome, config: dict[str, Any]) -> DeviceClient:
        """The enrolled device's client: its server, token, CA file and pinned certificate."""
        try:
            return cls(config["server"], home.token(), ca_file=home.ca_file(), pin=config.get("server_pin"))
        except tls.TlsConfigError as exc:  # the home's ca.pem was damaged
            raise UsageError(f"{exc}; re-enrol this device or restore the file") from exc

    @property
    def server_fingerprint(self) -> str | None:
        """The fingerprint of the certificate the server last presented (None over plain http)."""
        return self.peer.seen if self.peer else None

    def close(self) -> None:
        self.http.close()

    def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, url, **kwargs)
        except httpx.TransportError as exc:
            if tls.pin_mismatch(exc) is not None:
                raise ServerNotTrusted(f"{self.http.base_url}: {tls.describe(exc)}") from exc
            raise ServerUnreachable(f"{self.http.base_url}: {tls.describe(exc)}") from exc
        if response.status_code >= 500 or response.status_code == 429:
            raise ServerUnreachable(f"{response.status_code} {response.text[:200]}")
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            refusal = NotFound if response.status_code == 404 else ServerRefused
            raise refusal(f"{response.status_code}: {detail}")
        return response

    def enrol(self, code: str, public_key_hex: str) -> dict[str, Any]:
        data: dict[str, Any] = self._send("POST", wire.ENROL, json={"code": code, "public_key": public_key_hex}).json()
        return data

    def evidence_keys(self) -> dict[str, str]:
        return {k["key_id"]: k["public_key"] for k in self.evidence_key_entries()}

    def evidence_key_entries(self, timeout: float | None = None) -> list[dict[str, Any]]:
        """GET /v1/keys as listed: key_id, public_key, state, custody, seal_to, valid_until."""
        kwargs: dict[str, Any] = {"timeout": httpx.Timeout(timeout)} if timeout else {}
        reply = self._send("GET", wire.KEYS, **kwargs).json()
        if not isinstance(reply, list):
            raise ServerRefused(f"GET {wire.KEYS} answered {type(reply).__name__}, not a list of keys")
        return [entry for entry in reply if isinstance(entry, dict)]

    def open_recording(self, body: dict[str, Any]) -> None:
        self._send("POST", wire.RECORDINGS, json=body)

    def put_segment(self, recording_id: str, index: int, meta: dict[str, Any], envelope: bytes) -> None:
        headers = {
            "Content-Type": wire.SEGMENT_CONTENT_TYPE,
            **wire.upload_headers(meta["final"], meta["plaintext_sha256"], meta["prev_hash"], meta["signature"]),
        }
        self._send("PUT", wire.segment_path(recording_id, index), content=envelope, headers=headers)

    def interrupt(self, recording_id: str) -> None:
        self._send("POST", wire.interrupt_path(recording_id))

    def flag_incident(self, recording_id: str, category: str) -> None:
        self._send("POST", wire.incident_path(recording_id), json={"category": category})

    # The counter kiosk (recorder/kiosk): check-in, site settings and help alerts (evidence/wire.py).

    def heartbeat(self, body: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        """POST HEARTBEAT: clock and spool state -> {"server_time", "skew_seconds"}."""
        return self._json("POST", wire.HEARTBEAT, timeout, json=body)

    def notices(self) -> Any:
        """GET NOTICES as listed (recorder.notice_audio checks its shape before trusting it)."""
        return self._send("GET", wire.NOTICES).json()

    def notice_audio(self, notice_id: str, version: int, language: str) -> bytes:
        """One notice version's spoken reading (checked against the listed sha256 by the caller)."""
        return self._send("GET", wire.notice_audio_path(notice_id, version, language)).content

    def device_settings(self, timeout: float | None = None) -> dict[str, Any]:
        """GET DEVICE_SETTINGS: the site's incident categories and alert settings."""
        return self._json("GET", wire.DEVICE_SETTINGS, timeout)

    def raise_alert(self, kind: str, recording_id: str | None, category: str | None) -> dict[str, Any]:
        """POST ALERTS -> the alert as the service shows it (ALERT_VIEW)."""
        body = {"kind": kind, "recording_id": recording_id, "category": category}
        return self._json("POST", wire.ALERTS, None, json=body)

    def alert(self, alert_id: str, timeout: float | None = None) -> dict[str, Any]:
        """GET ALERT: its state now (open, escalated, acknowledged)."""
        return self._json("GET", wire.alert_path(alert_id), timeout)

    def _json(self, method: str, url: str, timeout: float | None, **kwargs: Any) -> dict[str, Any]:
        if timeout:
            kwargs["timeout"] = httpx.Timeout(timeout)
        try:
            reply = self._send(method, url, **kwargs).json()
        except ValueError as exc:
            raise ServerRefused(f"{method} {url} answered something that is not JSON") from exc
        if not isinstance(reply, dict):
            raise ServerRefused(f"{method} {url} answered {type(reply).__name__}, not an object")
        return reply
