"""Alembic environment: always online, on the connection api.migrate hands over."""

from __future__ import annotations

from alembic import context

from api.core.models import Base
from retention import models as _retention_tables  # noqa: F401  (registers them on Base.metadata)

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through api.migrate (countersign db upgrade), not the alembic CLI")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    # SQLite cannot ALTER most things in place: batch mode copies the table, on SQLite only.
    render_as_batch=True,
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
