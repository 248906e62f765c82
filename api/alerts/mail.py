"""E-mail over SMTP (stdlib smtplib); the message is built with EmailMessage, which refuses header injection."""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any

from api.alerts.config import AlertSettings
from api.alerts.message import body_text, subject
from api.core.models import utcnow


class NotConfiguredError(RuntimeError):
    """No SMTP server is configured (COUNTERSIGN_SMTP_HOST)."""


def build(delivery_id: str, to: str, payload: dict[str, Any], sender: str) -> EmailMessage:
    message = EmailMessage()  # policy=default: a header value holding CR or LF raises, never splits
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject(payload)
    message["Date"] = format_datetime(utcnow())
    # Stable across retries: a receiver (or a mail system) that sees it twice knows it is one notification.
    message["Message-ID"] = f"<{delivery_id}@countersign>"
    message["X-Countersign-Delivery"] = delivery_id
    message.set_content(body_text(payload))
    return message


def send(delivery_id: str, to: str, payload: dict[str, Any], config: AlertSettings) -> dict[str, Any]:
    if not config.smtp_host:
        raise NotConfiguredError("no SMTP server is configured (COUNTERSIGN_SMTP_HOST)")
    message = build(delivery_id, to, payload, config.smtp_from)
    timeout = config.alerts_send_timeout_seconds
    if config.smtp_security == "tls":
        smtp: smtplib.SMTP = smtplib.SMTP_SSL(
            config.smtp_host, config.smtp_port, timeout=timeout, context=ssl.create_default_context()
        )
    else:
        smtp = smtplib.SMTP(config.smtp_host, config.smtp_port, timeout=timeout)
    with smtp:
        if config.smtp_security == "starttls":
            smtp.starttls(context=ssl.create_default_context())
        if config.smtp_username and config.smtp_password is not None:
            smtp.login(config.smtp_username, config.smtp_password.get_secret_value())
        refused = smtp.send_message(message, to_addrs=[to])  # the contact alone, whatever the headers say
    if refused:
        raise smtplib.SMTPRecipientsRefused(refused)
    return {"message_id": message["Message-ID"]}
