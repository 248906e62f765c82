"""A freshly migrated database per test, without running every migration for every test.

Each test's service starts from ``init_data_dir``, whose ``create_schema`` runs the alembic
migrations: measured at 0.5-1 s of every such test's set-up on this 2-core machine, on both
backends (alembic imports and runs 14 revision files and ~120 DDL statements each time). Here the
first call in a test process runs the real migrations once, into a template, and every later
call copies that template:

* SQLite: the template file is copied page by page with SQLite's backup API, into the new
  database file created 0600 as ``api.core.db.make_engine`` creates it;
* PostgreSQL: ``pg_dump`` of the template schema (its tables, guards, functions and the
  alembic_version row) is replayed, under the test's schema name, in one transaction.

So the database a test starts from is the one the migrations make. The migrations themselves
still run for real in tests/api/test_migrations.py, in every ``countersign server init``
subprocess, and here for the template. Anything unusual falls back to the real upgrade: a
database that already exists, or a PostgreSQL URL without a test schema in its search_path.
conftest installs this in place of ``api.bootstrap.create_schema`` for in-process services.
"""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import tempfile
import uuid
from pathlib import Path

from sqlalchemy import URL, create_engine, make_url, text
from sqlalchemy.pool import NullPool

from api.core.db import make_engine
from api.core.settings import Settings
from api.migrate import upgrade

_PLACEHOLDER = "cs_schema_template_placeholder"
_SEARCH_PATH = re.compile(r"-csearch_path=([A-Za-z0-9_]+)")
_template_file: Path | None = None
_template_sql: str | None = None


def create_schema(settings: Settings) -> None:
    """What ``api.bootstrap.create_schema`` does (the newest schema), from a template when it can."""
    url = settings.sqlalchemy_url
    if url.startswith("sqlite"):
        _sqlite(url)
    else:
        _postgres(url)


def _sqlite(url: str) -> None:
    global _template_file
    path = make_url(url).database
    if not path or path == ":memory:" or os.path.exists(path):
        upgrade(url)
        return
    if _template_file is None:
        template = Path(tempfile.mkdtemp(prefix="cs-schema-")) / "template.db"
        upgrade(f"sqlite:///{template}")
        _template_file = template
    make_engine(url).dispose()  # creates the file 0600, the service's way, before SQLite opens it
    source, target = sqlite3.connect(_template_file), sqlite3.connect(path)
    try:
        source.backup(target)
    finally:
        source.close()
        target.close()


def _postgres(url: str) -> None:
    match = _SEARCH_PATH.search(str(make_url(url).query.get("options", "")))
    if match is None:
        upgrade(url)
        return
    schema = match.group(1)
    admin = create_engine(url, poolclass=NullPool)
    try:
        with admin.connect() as connection:
            tables = connection.execute(
                text("SELECT count(*) FROM information_schema.tables WHERE table_schema = :s"), {"s": schema}
            ).scalar_one()
        if tables:
            upgrade(url)
            return
        template = _postgres_template(url)
        if not template:  # no pg_dump that can read this server: the migrations, as the service runs them
            upgrade(url)
            return
        script = template.replace(_PLACEHOLDER, schema)
        with admin.begin() as connection:
            # psycopg itself, without parameters: it runs a multi-statement script as one and reads
            # no '%' in it as a placeholder (a trigger's RAISE message has one).
            driver = connection.connection.driver_connection
            assert driver is not None
            driver.execute(script)
    finally:
        admin.dispose()


def _postgres_template(url: str) -> str:
    """pg_dump of a schema the real migrations made, its name replaced by a placeholder ('' if pg_dump failed)."""
    global _template_sql
    if _template_sql is not None:
        return _template_sql
    template = f"cs_tpl{os.getpid()}_{uuid.uuid4().hex[:12]}"
    parsed = make_url(url)
    base = parsed.set(query={})
    admin = create_engine(base, poolclass=NullPool)
    try:
        with admin.begin() as connection:
            connection.execute(text(f'CREATE SCHEMA "{template}"'))
        try:
            upgrade(parsed.update_query_dict({"options": f"-csearch_path={template}"}).render_as_string(False))
            try:
                dumped = subprocess.run(
                    ["pg_dump", "--schema", template, "--no-owner", "--no-privileges", "--inserts", _libpq(base)],
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout
            except (OSError, subprocess.CalledProcessError):
                _template_sql = ""  # e.g. a pg_dump older than the server; remembered for the process
                return _template_sql
        finally:
            with admin.begin() as connection:
                connection.execute(text(f'DROP SCHEMA "{template}" CASCADE'))
    finally:
        admin.dispose()
    kept = []
    for line in dumped.splitlines():
        # psql meta-commands (\restrict since the 2025 security releases) are not SQL; the schema
        # itself already exists (the test allocated it); search_path is the URL's, so set_config goes.
        if line.startswith("\\") or line.startswith("CREATE SCHEMA") or "set_config('search_path'" in line:
            continue
        kept.append(line)
    if template not in "\n".join(kept):
        raise RuntimeError(f"pg_dump of {template} names no object of it:\n{dumped[:2000]}")
    _template_sql = "\n".join(kept).replace(template, _PLACEHOLDER)
    return _template_sql


def _libpq(url: URL) -> str:
    """The libpq connection string pg_dump takes, from a SQLAlchemy URL without its driver."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)
