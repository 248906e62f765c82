"""Offline recovery keys: the Ed25519 key that signs an offline key's recovery records.

An evidence key of custody "offline" (`countersign keys add-offline`) carries the verify key of
the recovery key pair generated with it; `countersign keys import-recovery` checks a recovery
record's signature against it. Service-held keys have none.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("evidence_keys") as batch:
        batch.add_column(sa.Column("recovery_verify_key", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("evidence_keys") as batch:
        batch.drop_column("recovery_verify_key")
