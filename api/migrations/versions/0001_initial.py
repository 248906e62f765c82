"""Initial schema: every table as of the first release, and the audit log's append-only guards.

Revision ID: 0001
Revises: -
Create Date: 2026-11-22 17:08:40.719977
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from api.core.guards import install_guards

APPEND_ONLY_TABLES = ("access_log", "audit_checkpoints")  # as of this revision (0006 adds audit_nodes)

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "access_log",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=80), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("target", sa.String(length=200), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("purpose", sa.Text(), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("entry_hash", sa.LargeBinary(), nullable=False),
        sa.Column("chain_hash", sa.LargeBinary(), nullable=False),
        sa.Column("seal", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
    )
    op.create_index(op.f("ix_access_log_action"), "access_log", ["action"], unique=False)
    op.create_index(op.f("ix_access_log_at"), "access_log", ["at"], unique=False)
    op.create_index(op.f("ix_access_log_target"), "access_log", ["target"], unique=False)

    op.create_table(
        "audit_checkpoints",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("chain_hash", sa.LargeBinary(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("signature", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
    )
    op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("chain_hash", sa.LargeBinary(), nullable=False),
        sa.Column("checkpoint_seq", sa.BigInteger(), nullable=False),
        sa.Column("checkpoint_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "evidence_keys",
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("public_key", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("key_id"),
    )
    op.create_table(
        "notices",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("language", sa.String(length=8), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", "version", "language"),
    )
    op.create_table(
        "retention_policies",
        sa.Column("scope", sa.String(length=64), nullable=False),
        sa.Column("category", sa.String(length=16), nullable=False),
        sa.Column("retain_days", sa.Integer(), nullable=True),
        sa.Column("delete_days", sa.Integer(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=80), nullable=False),
        sa.PrimaryKeyConstraint("scope", "category"),
    )
    op.create_table(
        "sites",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "users",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_index(op.f("ix_users_token_hash"), "users", ["token_hash"], unique=True)

    op.create_table(
        "devices",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("site_id", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("enrol_code_hash", sa.String(length=64), nullable=True),
        sa.Column("enrol_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("enrolled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("public_key", sa.LargeBinary(), nullable=True),
        sa.Column("token_hash", sa.String(length=64), nullable=True),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["site_id"],
            ["sites.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("enrol_code_hash"),
    )
    op.create_index(op.f("ix_devices_site_id"), "devices", ["site_id"], unique=False)
    op.create_index(op.f("ix_devices_token_hash"), "devices", ["token_hash"], unique=True)

    op.create_table(
        "user_sites",
        sa.Column("user_id", sa.String(length=36), nullable=False),
        sa.Column("site_id", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["site_id"],
            ["sites.id"],
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
        ),
        sa.PrimaryKeyConstraint("user_id", "site_id"),
    )
    op.create_table(
        "holds",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("case_ref", sa.String(length=100), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("site_id", sa.String(length=64), nullable=False),
        sa.Column("scoped", sa.Boolean(), nullable=False),
        sa.Column("device_id", sa.String(length=36), nullable=True),
        sa.Column("started_from", sa.DateTime(timezone=True), nullable=True),
        sa.Column("started_to", sa.DateTime(timezone=True), nullable=True),
        sa.Column("incident_category", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=80), nullable=False),
        sa.Column("released_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("released_by", sa.String(length=80), nullable=True),
        sa.Column("release_reason", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.id"],
        ),
        sa.ForeignKeyConstraint(
            ["site_id"],
            ["sites.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_holds_case_ref"), "holds", ["case_ref"], unique=False)
    op.create_index(op.f("ix_holds_released_at"), "holds", ["released_at"], unique=False)
    op.create_index(op.f("ix_holds_site_id"), "holds", ["site_id"], unique=False)

    op.create_table(
        "recordings",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("device_id", sa.String(length=36), nullable=False),
        sa.Column("site_id", sa.String(length=64), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("header", sa.JSON(), nullable=False),
        sa.Column("header_signature", sa.LargeBinary(), nullable=False),
        sa.Column("consent_outcome", sa.String(length=16), nullable=False),
        sa.Column("incident_category", sa.String(length=64), nullable=True),
        sa.Column("segment_count", sa.Integer(), nullable=False),
        sa.Column("head_hash", sa.LargeBinary(), nullable=False),
        sa.Column("last_activity_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("retain_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("retain_reason", sa.String(length=300), nullable=True),
        sa.Column("retain_extended_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("purge_state", sa.String(length=16), nullable=True),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.id"],
        ),
        sa.ForeignKeyConstraint(
            ["site_id"],
            ["sites.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_recordings_device_id"), "recordings", ["device_id"], unique=False)
    op.create_index("ix_recordings_purge_due", "recordings", ["purge_state", "retain_until"], unique=False)
    op.create_index(op.f("ix_recordings_site_id"), "recordings", ["site_id"], unique=False)
    op.create_index(op.f("ix_recordings_started_at"), "recordings", ["started_at"], unique=False)
    op.create_index(op.f("ix_recordings_status"), "recordings", ["status"], unique=False)

    op.create_table(
        "hold_recordings",
        sa.Column("hold_id", sa.String(length=36), nullable=False),
        sa.Column("recording_id", sa.String(length=36), nullable=False),
        sa.ForeignKeyConstraint(
            ["hold_id"],
            ["holds.id"],
        ),
        sa.ForeignKeyConstraint(
            ["recording_id"],
            ["recordings.id"],
        ),
        sa.PrimaryKeyConstraint("hold_id", "recording_id"),
    )
    op.create_index(op.f("ix_hold_recordings_recording_id"), "hold_recordings", ["recording_id"], unique=False)

    op.create_table(
        "sealed_keys",
        sa.Column("recording_id", sa.String(length=36), nullable=False),
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["recording_id"],
            ["recordings.id"],
        ),
        sa.PrimaryKeyConstraint("recording_id", "key_id"),
    )
    op.create_table(
        "segments",
        sa.Column("recording_id", sa.String(length=36), nullable=False),
        sa.Column("index", sa.Integer(), nullable=False),
        sa.Column("final", sa.Boolean(), nullable=False),
        sa.Column("ciphertext_sha256", sa.LargeBinary(), nullable=False),
        sa.Column("plaintext_sha256", sa.LargeBinary(), nullable=False),
        sa.Column("prev_hash", sa.LargeBinary(), nullable=False),
        sa.Column("signature", sa.LargeBinary(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("object_key", sa.String(length=200), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["recording_id"],
            ["recordings.id"],
        ),
        sa.PrimaryKeyConstraint("recording_id", "index"),
    )
    op.create_table(
        "tombstones",
        sa.Column("recording_id", sa.String(length=36), nullable=False),
        sa.Column("site_id", sa.String(length=64), nullable=False),
        sa.Column("device_id", sa.String(length=36), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("categories", sa.JSON(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("rule", sa.String(length=120), nullable=True),
        sa.Column("actor", sa.String(length=80), nullable=False),
        sa.Column("sealed_key_ids", sa.JSON(), nullable=False),
        sa.Column("shredded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("purged_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("segment_count", sa.Integer(), nullable=True),
        sa.Column("bytes_total", sa.BigInteger(), nullable=True),
        sa.Column("head_hash", sa.LargeBinary(), nullable=True),
        sa.Column("ciphertext_digest", sa.LargeBinary(), nullable=True),
        sa.Column("record", sa.JSON(), nullable=True),
        sa.Column("signature", sa.LargeBinary(), nullable=True),
        sa.ForeignKeyConstraint(
            ["recording_id"],
            ["recordings.id"],
        ),
        sa.PrimaryKeyConstraint("recording_id"),
    )
    op.create_index(op.f("ix_tombstones_site_id"), "tombstones", ["site_id"], unique=False)

    # The append-only triggers are part of the schema: a database migrated to head
    # rejects UPDATE/DELETE on the audit tables exactly as create_all + guards did.
    install_guards(op.get_bind(), APPEND_ONLY_TABLES)


def downgrade() -> None:
    _drop_guards()
    op.drop_index(op.f("ix_tombstones_site_id"), table_name="tombstones")

    op.drop_table("tombstones")
    op.drop_table("segments")
    op.drop_table("sealed_keys")
    op.drop_index(op.f("ix_hold_recordings_recording_id"), table_name="hold_recordings")

    op.drop_table("hold_recordings")
    op.drop_index(op.f("ix_recordings_status"), table_name="recordings")
    op.drop_index(op.f("ix_recordings_started_at"), table_name="recordings")
    op.drop_index(op.f("ix_recordings_site_id"), table_name="recordings")
    op.drop_index("ix_recordings_purge_due", table_name="recordings")
    op.drop_index(op.f("ix_recordings_device_id"), table_name="recordings")

    op.drop_table("recordings")
    op.drop_index(op.f("ix_holds_site_id"), table_name="holds")
    op.drop_index(op.f("ix_holds_released_at"), table_name="holds")
    op.drop_index(op.f("ix_holds_case_ref"), table_name="holds")

    op.drop_table("holds")
    op.drop_table("user_sites")
    op.drop_index(op.f("ix_devices_token_hash"), table_name="devices")
    op.drop_index(op.f("ix_devices_site_id"), table_name="devices")

    op.drop_table("devices")
    op.drop_index(op.f("ix_users_token_hash"), table_name="users")

    op.drop_table("users")
    op.drop_table("sites")
    op.drop_table("retention_policies")
    op.drop_table("notices")
    op.drop_table("evidence_keys")
    op.drop_table("audit_head")
    op.drop_table("audit_checkpoints")
    op.drop_index(op.f("ix_access_log_target"), table_name="access_log")
    op.drop_index(op.f("ix_access_log_at"), table_name="access_log")
    op.drop_index(op.f("ix_access_log_action"), table_name="access_log")

    op.drop_table("access_log")


def _drop_guards() -> None:
    bind = op.get_bind()
    for table in APPEND_ONLY_TABLES:
        if bind.dialect.name == "postgresql":
            op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
        else:
            for kind in ("update", "delete"):
                op.execute(f"DROP TRIGGER IF EXISTS {table}_no_{kind}")
    if bind.dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS countersign_append_only()")
