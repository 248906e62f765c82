"""Service settings: one field per environment variable, prefix COUNTERSIGN_."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from evidence.errors import ExitCode

# Passphrases nobody should run production with: refuse them outright.
PLACEHOLDER_SECRETS = frozenset({"", "changeme", "change-me", "changethis", "secret", "password", "placeholder"})
# ...and anything shaped like an example file's value ("replace-with-a-long-random-passphrase").
PLACEHOLDER_WORDS = ("replace", "change", "example", "placeholder", "your-", "your_", "<", "xxx", "todo")
MIN_PASSPHRASE_LENGTH = 12


def looks_like_placeholder(value: str) -> bool:
    folded = value.strip().lower()
    return (
        folded in PLACEHOLDER_SECRETS
        or any(word in folded for word in PLACEHOLDER_WORDS)
        or len(set(folded)) < 5  # "aaaaaaaaaaaa", "abababababab": length without any secret in it
    )


ENV_PREFIX = "COUNTERSIGN_"
# Never echoed back (a URL may hold a password).
_SECRET_FIELDS = frozenset({"key_passphrase", "database_url", "metrics_token"})


class SettingsError(ValueError):
    """The service is not configured safely enough to start."""

    exit_code = ExitCode.USAGE


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

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
    max_json_bytes: int = 1024 * 1024  # COUNTERSIGN_MAX_JSON_BYTES: any other request body, read before auth
    interrupted_after_seconds: int = 600  # COUNTERSIGN_INTERRUPTED_AFTER_SECONDS
    deletion_grace_seconds: int = 72 * 3600  # COUNTERSIGN_DELETION_GRACE_SECONDS: an early deletion waits this long
    enrolment_ttl_seconds: int = 24 * 3600  # COUNTERSIGN_ENROLMENT_TTL_SECONDS
    auth_failures_per_minute: int = 20  # COUNTERSIGN_AUTH_FAILURES_PER_MINUTE: per client address, then 429
    audit_checkpoint_entries: int = 1000  # COUNTERSIGN_AUDIT_CHECKPOINT_ENTRIES: sign the log every N entries...
    audit_checkpoint_seconds: int = 600  # COUNTERSIGN_AUDIT_CHECKPOINT_SECONDS: ...or every T seconds
    max_open_recordings: int = 4  # COUNTERSIGN_MAX_OPEN_RECORDINGS: per device (status open), then 429
    device_bytes_per_day: int = 4 * 1024**3  # COUNTERSIGN_DEVICE_BYTES_PER_DAY: per device and UTC day, then 429
    max_header_bytes: int = 16 * 1024  # COUNTERSIGN_MAX_HEADER_BYTES: a recording's signed header JSON, then 413
    # COUNTERSIGN_METRICS_TOKEN: GET /metrics needs "Authorization: Bearer <this>" (at least 24 characters);
    # unset: /metrics answers loopback clients only (README "Metrics").
    metrics_token: SecretStr | None = None
    # COUNTERSIGN_TSA_URL: an RFC 3161 time-stamp authority; each evidence bundle then carries its time-stamp of
    # SHA-256(SHA256SUMS) as SHA256SUMS.tsr. Unset: bundles have no time-stamp (they are still signed).
    tsa_url: str | None = None
    # COUNTERSIGN_REPORT_FONT: the TrueType font the custody report embeds for Japanese; unset: IPA Gothic from
    # the Debian package fonts-ipafont-gothic (api.bundle.report reads the variable itself too).
    report_font: Path | None = None
    # COUNTERSIGN_SERVICE_KEY_PUBLISHED_AT: where the organisation publishes the service key's fingerprint
    # (a web page, a gazette notice); every evidence bundle names it so a recipient knows where to compare.
    service_key_published_at: str | None = None

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
        if looks_like_placeholder(value) or len(value) < MIN_PASSPHRASE_LENGTH:
            raise SettingsError(
                "COUNTERSIGN_KEY_PASSPHRASE must be set to a real secret of at least "
                f"{MIN_PASSPHRASE_LENGTH} characters outside development "
                "(or set COUNTERSIGN_ENV=development on a test machine)"
            )
        return value.encode()


def load_settings(**values: Any) -> Settings:
    """Settings from the environment (and `values`); a bad value is one SettingsError naming the variable.

    pydantic's ValidationError is a multi-line report aimed at programmers; whoever runs
    `countersign server ...` needs the variable, what it held and what it may hold.
    """
    try:
        return Settings(**values)
    except ValidationError as exc:
        raise SettingsError("; ".join(_describe(error) for error in exc.errors())) from None


def _describe(error: Any) -> str:
    field = str(error["loc"][0]) if error.get("loc") else "?"
    variable = f"{ENV_PREFIX}{field.upper()}"
    given = "" if field in _SECRET_FIELDS else f"={error.get('input')!r}"
    if error.get("type") == "literal_error":
        allowed = error.get("ctx", {}).get("expected", "")
        return f"{variable}{given} is not allowed: use {allowed}"
    return f"{variable}{given} is not valid: {error.get('msg')}"
