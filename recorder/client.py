"""The device's HTTP client. Transient failures (network, 5xx, 429) are retried by
the caller; anything else is a refusal that must be reported, never swallowed."""

from __future__ import annotations

from typing import Any

import httpx

from recorder.errors import ServerRefused, ServerUnreachable

TIMEOUT = httpx.Timeout(30.0, connect=5.0)


class DeviceClient:
    def __init__(self, server: str, token: str | None = None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=server.rstrip("/"), headers=headers, timeout=TIMEOUT)

    def close(self) -> None:
        self.http.close()

    def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, url, **kwargs)
        except httpx.TransportError as exc:
            raise ServerUnreachable(f"{self.http.base_url}: {exc}") from exc
        if response.status_code >= 500 or response.status_code == 429:
            raise ServerUnreachable(f"{response.status_code} {response.text[:200]}")
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise ServerRefused(f"{response.status_code}: {detail}")
        return response

    def enrol(self, code: str, public_key_hex: str) -> dict[str, Any]:
        data: dict[str, Any] = self._send("POST", "/v1/enrol", json={"code": code, "public_key": public_key_hex}).json()
        return data

    def evidence_keys(self) -> dict[str, str]:
        return {k["key_id"]: k["public_key"] for k in self._send("GET", "/v1/keys").json()}

    def open_recording(self, body: dict[str, Any]) -> None:
        self._send("POST", "/v1/recordings", json=body)

    def put_segment(self, recording_id: str, index: int, meta: dict[str, Any], envelope: bytes) -> None:
        headers = {
            "Content-Type": "application/octet-stream",
            "X-Segment-Final": "1" if meta["final"] else "0",
            "X-Plaintext-Sha256": meta["plaintext_sha256"],
            "X-Prev-Hash": meta["prev_hash"],
            "X-Signature": meta["signature"],
        }
        self._send("PUT", f"/v1/recordings/{recording_id}/segments/{index}", content=envelope, headers=headers)

    def interrupt(self, recording_id: str) -> None:
        self._send("POST", f"/v1/recordings/{recording_id}/interrupt")

    def flag_incident(self, recording_id: str, category: str) -> None:
        self._send("POST", f"/v1/recordings/{recording_id}/incident", json={"category": category})
