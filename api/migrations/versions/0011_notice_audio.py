"""Notice audio: the spoken reading of a notice version in a language, provisioned by an admin.

One row per (notice id, version, language), referencing the notice text it reads; the bytes are
in the row (a reading is at most a few hundred KB, api.notice_audio.MAX_BYTES caps it). A new
table only: nothing existing is rewritten.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "notice_audio",
        sa.Column("notice_id", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("language", sa.String(8), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("content_type", sa.String(64), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(80), nullable=False),
        sa.PrimaryKeyConstraint("notice_id", "version", "language"),
        sa.ForeignKeyConstraint(
            ["notice_id", "version", "language"], ["notices.id", "notices.version", "notices.language"]
        ),
    )


def downgrade() -> None:
    op.drop_table("notice_audio")
