"""Which database and blob store the tests' services use: COUNTERSIGN_TEST_BACKEND.

* unset or ``sqlite-fs``: SQLite and the filesystem store inside each test's data directory.
* ``postgres-s3``: each test gets a fresh PostgreSQL schema (CREATE SCHEMA and a search_path in
  the URL: much faster than a database per test) and a fresh object-lock bucket on a moto S3
  server on loopback. PostgreSQL comes from COUNTERSIGN_TEST_PG_URL (default: the local
  cluster, database ``test``).

Either way, a test may move its service to a bucket on SeaweedFS, a real S3 server
(``BACKENDS.seaweed_bucket_env()``; tests/support/seaweed.py): one process for the session,
started the first time a test asks, stopped by ``shutdown``.

Tests reach this through conftest's autouse ``backend_env`` (environment variables, so in-process
``Settings()`` and the CLI subprocesses both see them); fixtures that live longer than one test
(module scope, Hypothesis examples) call ``BACKENDS.allocate()`` themselves.
"""

from __future__ import annotations

import os
import uuid
import weakref
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, create_engine, event, make_url, text
from sqlalchemy.pool import NullPool, Pool

BACKEND = os.environ.get("COUNTERSIGN_TEST_BACKEND", "sqlite-fs")
if BACKEND not in ("sqlite-fs", "postgres-s3"):
    raise RuntimeError(f"COUNTERSIGN_TEST_BACKEND={BACKEND!r}: use sqlite-fs or postgres-s3")
POSTGRES_S3 = BACKEND == "postgres-s3"
PG_URL = os.environ.get("COUNTERSIGN_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")

# The service settings a backend sets; conftest clears them from the host environment in SQLite mode.
SERVICE_VARS = (
    "COUNTERSIGN_DATABASE_URL",
    "COUNTERSIGN_STORE",
    "COUNTERSIGN_S3_ENDPOINT_URL",
    "COUNTERSIGN_S3_BUCKET",
    "COUNTERSIGN_S3_REGION",
    "COUNTERSIGN_S3_PREFIX",
)


@dataclass
class Allocation:
    """One fresh database (+ bucket): as Settings overrides and as environment variables."""

    settings: dict[str, Any]
    env: dict[str, str]
    schema: str | None = None


def pg_url_for(schema: str) -> str:
    # application_name marks every connection to this schema, so teardown can find stragglers.
    url = make_url(PG_URL).update_query_dict({"options": f"-csearch_path={schema}", "application_name": schema})
    return url.render_as_string(hide_password=False)


@dataclass
class Backends:
    """Allocates and frees per-test databases and buckets for the configured backend."""

    _admin: Engine | None = None
    _moto: Any = None
    _seaweed: Any = None
    # psycopg warns (ResourceWarning, an error under our filterwarnings) when a connection is
    # garbage-collected open; apps built by tests never dispose their engines, so teardown closes
    # every connection opened to a schema it drops.
    _opened: dict[str, weakref.WeakSet[Any]] = field(default_factory=dict)

    def admin(self) -> Engine:
        if self._admin is None:
            self._admin = create_engine(PG_URL, poolclass=NullPool)
            event.listen(Pool, "connect", self._track)
        return self._admin

    def _track(self, dbapi_connection: Any, _record: Any) -> None:
        name = getattr(getattr(dbapi_connection, "info", None), "parameter_status", lambda _n: None)("application_name")
        if name in self._opened:
            self._opened[name].add(dbapi_connection)

    def moto(self) -> Any:
        if self._moto is None:
            import logging

            from moto.server import ThreadedMotoServer

            logging.getLogger("werkzeug").setLevel(logging.ERROR)
            server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
            server.start()
            self._moto = server
        return self._moto

    def endpoint_url(self) -> str:
        host, port = self.moto().get_host_and_port()
        return f"http://{host}:{port}"

    def seaweed_endpoint_url(self) -> str:
        if self._seaweed is None:
            from tests.support.seaweed import start_seaweed

            self._seaweed = start_seaweed()
        return str(self._seaweed.endpoint_url)

    def seaweed_bucket_env(self) -> dict[str, str]:
        """The service variables that put a service's store on a fresh object-lock bucket on SeaweedFS."""
        from tests.support.s3_server import S3Server

        endpoint = self.seaweed_endpoint_url()
        bucket = S3Server(endpoint).create_locked_bucket()
        return {"COUNTERSIGN_STORE": "s3", "COUNTERSIGN_S3_ENDPOINT_URL": endpoint, "COUNTERSIGN_S3_BUCKET": bucket}

    def allocate_schema(self) -> Allocation:
        """A fresh, empty PostgreSQL schema whatever the backend (for tests about PostgreSQL itself)."""
        schema = f"cs_t{os.getpid()}_{uuid.uuid4().hex[:12]}"
        with self.admin().begin() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
        self._opened[schema] = weakref.WeakSet()
        url = pg_url_for(schema)
        return Allocation(settings={"database_url": url}, env={"COUNTERSIGN_DATABASE_URL": url}, schema=schema)

    def allocate(self) -> Allocation:
        """A fresh database and store for one service, as the configured backend makes them."""
        if not POSTGRES_S3:
            return Allocation(settings={"database_url": None, "store": "filesystem"}, env={})
        from tests.support.s3_server import MotoS3

        schema = self.allocate_schema().schema
        assert schema is not None
        endpoint = self.endpoint_url()
        bucket = MotoS3(endpoint).create_locked_bucket()
        url = pg_url_for(schema)
        settings = {"database_url": url, "store": "s3", "s3_endpoint_url": endpoint, "s3_bucket": bucket}
        env = {
            "COUNTERSIGN_DATABASE_URL": url,
            "COUNTERSIGN_STORE": "s3",
            "COUNTERSIGN_S3_ENDPOINT_URL": endpoint,
            "COUNTERSIGN_S3_BUCKET": bucket,
        }
        return Allocation(settings=settings, env=env, schema=schema)

    def release(self, allocation: Allocation) -> None:
        """Close this process's connections, end other processes' (servers killed mid-test), drop the schema."""
        if allocation.schema is None:
            return
        schema = allocation.schema
        for connection in list(self._opened.pop(schema, ())):
            connection.close()
        with self.admin().begin() as connection:
            connection.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = :n"),
                {"n": schema},
            )
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))

    def shutdown(self) -> None:
        if self._moto is not None:
            self._moto.stop()
            self._moto = None
        if self._seaweed is not None:
            self._seaweed.stop()
            self._seaweed = None
        if self._admin is not None:
            event.remove(Pool, "connect", self._track)
            self._admin.dispose()
            self._admin = None


BACKENDS = Backends()

# Fake credentials for boto3's default chain (the service's own S3 client), and no host AWS config.
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": "/nonexistent/countersign-tests",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/countersign-tests",
}
AWS_UNSET = (
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
)
