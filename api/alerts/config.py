"""The alerting settings of the service process (environment, prefix COUNTERSIGN_), beside api.core.settings."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class AlertSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="COUNTERSIGN_", extra="ignore")

    # E-mail (stdlib smtplib). Unset host: e-mail deliveries fail and are retried until one is set.
    smtp_host: str | None = None  # COUNTERSIGN_SMTP_HOST
    smtp_port: int = 25  # COUNTERSIGN_SMTP_PORT
    smtp_from: str = "countersign@localhost"  # COUNTERSIGN_SMTP_FROM
    smtp_username: str | None = None  # COUNTERSIGN_SMTP_USERNAME
    smtp_password: SecretStr | None = None  # COUNTERSIGN_SMTP_PASSWORD
    smtp_security: str = Field(default="none", pattern="^(none|starttls|tls)$")  # COUNTERSIGN_SMTP_SECURITY
    # The delivery worker, one per service process (several processes share the outbox safely).
    alerts_worker: bool = True  # COUNTERSIGN_ALERTS_WORKER: false leaves delivery to `countersign server deliver`
    alerts_poll_seconds: float = Field(default=2.0, gt=0)  # COUNTERSIGN_ALERTS_POLL_SECONDS: between scans when idle
    alerts_retry_base_seconds: float = Field(
        default=5.0, gt=0
    )  # COUNTERSIGN_ALERTS_RETRY_BASE_SECONDS: doubles per attempt
    alerts_retry_max_seconds: float = Field(default=900.0, gt=0)  # COUNTERSIGN_ALERTS_RETRY_MAX_SECONDS
    alerts_max_attempts: int = Field(default=12, ge=1)  # COUNTERSIGN_ALERTS_MAX_ATTEMPTS: then the delivery has failed
    alerts_lease_seconds: float = Field(default=60.0, gt=0)  # COUNTERSIGN_ALERTS_LEASE_SECONDS: a claim's lifetime
    alerts_send_timeout_seconds: float = Field(default=10.0, gt=0)  # COUNTERSIGN_ALERTS_SEND_TIMEOUT_SECONDS
    # Device health (heartbeats): when contacts hear of a device.
    alerts_clock_skew_seconds: float = 120.0  # COUNTERSIGN_ALERTS_CLOCK_SKEW_SECONDS
    alerts_spool_fill_ratio: float = Field(default=0.8, gt=0, le=1)  # COUNTERSIGN_ALERTS_SPOOL_FILL_RATIO
    alerts_silent_after_seconds: float = 900.0  # COUNTERSIGN_ALERTS_SILENT_AFTER_SECONDS (during opening hours)
