"""Database guards: the audit log, its checkpoints and its Merkle tree's nodes reject UPDATE and DELETE.

They bind the application's own connection too, so a bug or a careless admin
with a SQL shell cannot rewrite history; only someone who drops the trigger
(DDL rights, itself visible) can, and the hash chain then shows where.
"""

from __future__ import annotations

from sqlalchemy import Connection, text

# A migration names the tables that exist at its revision (0001: the first two; 0006 adds audit_nodes).
APPEND_ONLY_TABLES = ("access_log", "audit_checkpoints", "audit_nodes")


def _sqlite(table: str) -> list[str]:
    return [
        f"CREATE TRIGGER IF NOT EXISTS {table}_no_{op.lower()} BEFORE {op} ON {table} "
        f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"
        for op in ("UPDATE", "DELETE")
    ]


_PG_FUNCTION = """
CREATE OR REPLACE FUNCTION countersign_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME;
END;
$$ LANGUAGE plpgsql
"""


def _postgresql(table: str) -> list[str]:
    return [
        f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}",
        f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
        "FOR EACH ROW EXECUTE FUNCTION countersign_append_only()",
        f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}",
        f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
        "FOR EACH STATEMENT EXECUTE FUNCTION countersign_append_only()",
    ]


def install_guards(connection: Connection, tables: tuple[str, ...] = APPEND_ONLY_TABLES) -> None:
    dialect = connection.dialect.name
    statements: list[str] = []
    if dialect == "postgresql":
        statements.append(_PG_FUNCTION)
        for table in tables:
            statements += _postgresql(table)
    elif dialect == "sqlite":
        for table in tables:
            statements += _sqlite(table)
    else:
        raise RuntimeError(f"no append-only guard for database {dialect!r}")
    for statement in statements:
        connection.execute(text(statement))
