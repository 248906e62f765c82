"""Signed webhooks: HMAC-SHA256 over the timestamp and the exact body, so a receiver can refuse replays.

    X-Countersign-Timestamp: 1767225600
    X-Countersign-Signature: sha256=<hex of HMAC-SHA256(secret, "<timestamp>." + body)>
    X-Countersign-Delivery: <delivery id>   (the same on every retry: the receiver's idempotency key)

A receiver recomputes the HMAC over the bytes it received, compares in constant time, and refuses
a timestamp more than a few minutes old (docs/alerts.md has a verifier).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from typing import Any

import httpx

from api.alerts.message import body_text, subject

SIGNATURE = "X-Countersign-Signature"
TIMESTAMP = "X-Countersign-Timestamp"
DELIVERY = "X-Countersign-Delivery"


def new_client(timeout: float) -> httpx.Client:
    # No redirects: a signed body is for the URL the administrator configured, not wherever it points.
    return httpx.Client(timeout=timeout, follow_redirects=False)


def new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


def signature(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(secret: str, headers: Any, body: bytes, max_age: float = 300.0, now: float | None = None) -> bool:
    """What a receiver does (tests and docs use it): a valid, fresh signature over these exact bytes."""
    named = {str(k).lower(): str(v) for k, v in headers.items()}  # header names are case-insensitive
    timestamp = named.get(TIMESTAMP.lower(), "")
    if not secret or not timestamp.isdigit() or abs((now or time.time()) - int(timestamp)) > max_age:
        return False
    return hmac.compare_digest(signature(secret, timestamp, body), named.get(SIGNATURE.lower(), ""))


def body(delivery_id: str, payload: dict[str, Any]) -> bytes:
    # "text" lets chat bridges (Slack, Teams, ntfy) show something without knowing our shape.
    document = {"delivery_id": delivery_id, **payload, "text": subject(payload), "detail": body_text(payload)}
    return json.dumps(document, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode()


class WebhookError(RuntimeError):
    pass


def send(
    client: httpx.Client, delivery_id: str, url: str, secret: str | None, payload: dict[str, Any]
) -> dict[str, Any]:
    """POST the signed body with the worker's client (kept open: a fresh one costs ~20 ms in TLS set-up alone)."""
    if not secret:
        raise WebhookError("the contact was removed (no signing secret)")
    content = body(delivery_id, payload)
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        TIMESTAMP: timestamp,
        SIGNATURE: signature(secret, timestamp, content),
        DELIVERY: delivery_id,
        "User-Agent": "countersign-alerts/1",
    }
    try:
        reply = client.post(url, content=content, headers=headers)
    except httpx.HTTPError as exc:
        raise WebhookError(f"{type(exc).__name__}: {exc}") from exc
    if not reply.is_success:
        raise WebhookError(f"the receiver answered {reply.status_code}")
    return {"status": reply.status_code}
