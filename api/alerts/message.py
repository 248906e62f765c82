"""What a notification says: one payload per delivery, rendered as an e-mail or a webhook body."""

from __future__ import annotations

from typing import Any

from evidence.text import neutral

_KIND = {"help": "Help needed", "incident": "Incident flagged"}
_EVENT = {"alert.raised": "", "alert.escalated": " (escalated: nobody has answered yet)"}
_HEALTH = {
    "device.clock_skew": "the device's clock is {skew:.0f} s away from the service's",
    "device.spool_filling": "the device's spool is {percent:.0f}% full ({unsent} segments not yet sent)",
    "device.silent": "the device has not checked in for {silent:.0f} s during opening hours",
    "device.integrity": "recording {recording} failed its integrity check when read: {detail}",
}


def alert_payload(event: str, view: dict[str, Any], site_name: str) -> dict[str, Any]:
    return {"event": event, "alert": view, "site_name": site_name}


def health_payload(event: str, device: dict[str, Any], site_name: str, facts: dict[str, Any]) -> dict[str, Any]:
    return {"event": event, "device": device, "site_name": site_name, "facts": facts}


def subject(payload: dict[str, Any]) -> str:
    """One line, whatever the names hold: control characters become visible escapes (evidence.text.neutral)."""
    if "alert" in payload:
        alert = payload["alert"]
        text = f"{_KIND.get(alert['kind'], 'Alert')} at {payload['site_name']}: {alert['device_name']}"
        text += _EVENT.get(payload["event"], "")
    else:
        text = f"Device {payload['device']['name']} at {payload['site_name']}: {payload['event'].split('.')[-1]}"
    return neutral(f"[Countersign] {text}", 200)


def body_text(payload: dict[str, Any]) -> str:
    if "alert" in payload:
        alert = payload["alert"]
        lines = [
            subject(payload).removeprefix("[Countersign] "),
            f"Counter: {neutral(alert['device_name'], 100)} (site {neutral(payload['site_name'], 100)})",
            f"Raised at: {alert['created_at']}",
        ]
        if alert.get("category"):
            lines.append(f"Category: {alert['category']}")
        if alert.get("recording_id"):
            lines.append(f"Recording: {alert['recording_id']} (marked as an incident)")
        lines.append(f"Alert: {alert['id']}. Acknowledge with: countersign alerts ack {alert['id']} --message ...")
        return "\n".join(lines) + "\n"
    facts = payload["facts"]
    detail = _HEALTH.get(payload["event"], payload["event"]).format(**facts) if payload["event"] in _HEALTH else ""
    return f"{subject(payload).removeprefix('[Countersign] ')}\n{detail}\n"
