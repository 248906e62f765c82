"""Alembic environment and revisions; see api.migrate."""
