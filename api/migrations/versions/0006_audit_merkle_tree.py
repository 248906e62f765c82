"""The audit log's Merkle tree: audit_nodes, audit_head.nodes_filled, audit_checkpoints.tree_root.

Revision ID: 0006
Revises: 0005

Existing logs get their nodes at the service's next checkpoint, not here: the
fill re-checks every entry's content, link and seal before its hash goes into a
tree the service signs, and only the service holds the seal key (a migration
that hashed the rows as it found them could put an entry edited since it was
signed into a signed root). That first checkpoint makes one pass over the log,
under the append lock; later ones only cover the entries since the last.

Revision 0001 installs the append-only triggers; adding columns keeps them
(plain ALTER TABLE ... ADD COLUMN, no table rebuild on SQLite). audit_nodes gets
its own: nodes are only ever inserted.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from api.core.guards import install_guards

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_nodes",
        sa.Column("level", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("index", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("hash", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("level", "index"),
    )
    op.add_column("audit_head", sa.Column("nodes_filled", sa.BigInteger(), nullable=False, server_default="0"))
    op.add_column("audit_checkpoints", sa.Column("tree_root", sa.LargeBinary(), nullable=True))
    # Nodes are only ever inserted (a fill adds the subtrees a checkpoint completes): append-only like the log.
    install_guards(op.get_bind(), ("audit_nodes",))


def downgrade() -> None:
    with op.batch_alter_table("audit_checkpoints") as batch:
        batch.drop_column("tree_root")
    with op.batch_alter_table("audit_head") as batch:
        batch.drop_column("nodes_filled")
    op.drop_table("audit_nodes")  # its triggers go with it
    install_guards(op.get_bind(), ("access_log", "audit_checkpoints"))  # SQLite's batch mode rebuilt them without
