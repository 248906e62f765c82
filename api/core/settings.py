"""Service settings: one field per environment variable, prefix COUNTERSIGN_."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

# Passphrases nobody should run production with: refuse them outright.
PLACEHOLDER_SECRETS = frozenset({"", "changeme", "change-me", "changethis", "secret", "password", "placeholder"})
MIN_PASSPHRASE_LENGTH = 12


class SettingsError(ValueError):
    """The service is not configured safely enough to start."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="COUNTERSIGN_", extra="ignore")

    data_dir: Path = Path("./countersign-data")  # COUNTERSIGN_DATA_DIR
    env: Literal["development", "production"] = "production"  # COUNTERSIGN_ENV
    database_url: str | None = None  # COUNTERSIGN_DATABASE_URL; default: SQLite in data_dir
    store: Literal["filesystem", "s3"] = "filesystem"  # COUNTERSIGN_STORE: filesystem (under data_dir) or s3
    s3_endpoint_url: str | None = None  # COUNTERSIGN_S3_ENDPOINT_URL: MinIO / other S3; unset = AWS
    s3_bucket: str = "countersign-evidence"  # COUNTERSIGN_S3_BUCKET: must have object lock enabled
    s3_region: str = "us-east-1"  # COUNTERSIGN_S3_REGION
    s3_prefix: str = ""  # COUNTERSIGN_S3_PREFIX: keys live under this folder (credentials: the usual AWS chain)
    key_passphrase: SecretStr | None = None  # COUNTERSIGN_KEY_PASSPHRASE (Argon2id-protects private keys)
    max_segment_bytes: int = 4 * 1024 * 1024  # COUNTERSIGN_MAX_SEGMENT_BYTES
    interrupted_after_seconds: int = 600  # COUNTERSIGN_INTERRUPTED_AFTER_SECONDS
    enrolment_ttl_seconds: int = 24 * 3600  # COUNTERSIGN_ENROLMENT_TTL_SECONDS
    audit_checkpoint_entries: int = 1000  # COUNTERSIGN_AUDIT_CHECKPOINT_ENTRIES: sign the log every N entries...
    audit_checkpoint_seconds: int = 600  # COUNTERSIGN_AUDIT_CHECKPOINT_SECONDS: ...or every T seconds

    @property
    def development(self) -> bool:
        return self.env == "development"

    @property
    def sqlalchemy_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'countersign.db').resolve()}"

    def passphrase(self) -> bytes | None:
        """The key passphrase; None is allowed only in development."""
        value = self.key_passphrase.get_secret_value() if self.key_passphrase else ""
        if self.development and not value:
            return None
        if value.strip().lower() in PLACEHOLDER_SECRETS or len(value) < MIN_PASSPHRASE_LENGTH:
            raise SettingsError(
                "COUNTERSIGN_KEY_PASSPHRASE must be set to a real secret of at least "
                f"{MIN_PASSPHRASE_LENGTH} characters outside development "
                "(or set COUNTERSIGN_ENV=development on a test machine)"
            )
        return value.encode()
