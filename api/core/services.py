"""Everything a running service holds, built once per app by build_services."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import nacl.signing
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from api.core.audit import SIGNER_KEY, CheckpointPolicy
from api.core.db import make_engine, make_sessionmaker
from api.core.group_commit import GroupCommitter
from api.core.keys import KeyCustodian
from api.core.settings import Settings
from api.core.storage import BlobStore
from api.core.storage.filesystem import FilesystemStore
from api.core.throttle import FailureThrottle

T = TypeVar("T")
# Threads for the upload path's blocking steps (authentication; reading, verifying and storing a
# segment). More than the database pool keeps (api.core.db.POOL_SIZE) would only queue on it; enough that
# fsyncs or S3 round trips of many devices overlap.
UPLOAD_THREADS = 16


@dataclass
class Services:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    store: BlobStore
    keys: KeyCustodian
    # Unauthenticated failures (bad tokens, bad enrolment codes) per client address (api.core.deps.deny).
    failures: FailureThrottle = field(default_factory=FailureThrottle)
    _writer: GroupCommitter | None = field(default=None, repr=False)
    _upload_threads: ThreadPoolExecutor | None = field(default=None, repr=False)

    def writer(self) -> GroupCommitter:
        """The process's group committer for uploads' writes (made on first use, for this engine)."""
        if self._writer is None:
            self._writer = GroupCommitter(self.sessions)
        return self._writer

    async def offload(self, run: Callable[..., T], *args: Any) -> T:
        """Run blocking work of an upload on the service's own threads, and wait for it.

        asyncio's own hand-off to a plain executor: the uploads' hot path makes two of these, and
        anyio's (`run_in_threadpool`, with its capacity limiter and run-variables) measured ~40 µs
        of CPU per call here against ~16 µs.
        """
        if self._upload_threads is None:
            self._upload_threads = ThreadPoolExecutor(UPLOAD_THREADS, thread_name_prefix="upload")
        return await asyncio.get_running_loop().run_in_executor(self._upload_threads, run, *args)


def make_store(settings: Settings) -> BlobStore:
    if settings.store == "s3":
        from api.core.storage.s3 import S3Store  # boto3 is loaded only where S3 is configured

        return S3Store(
            settings.s3_bucket,
            prefix=settings.s3_prefix,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
        )
    return FilesystemStore(settings.data_dir / "objects")


def build_services(settings: Settings) -> Services:
    keys = KeyCustodian.load(settings.data_dir, settings.passphrase())
    engine = make_engine(settings.sqlalchemy_url)
    assert keys.signing_key is not None  # KeyCustodian.load refuses to return without one
    return Services(
        settings,
        engine,
        audit_sessions(engine, keys.signing_key, settings),
        make_store(settings),
        keys,
        FailureThrottle(burst=settings.auth_failures_per_minute),
    )


def audit_sessions(engine: Engine, key: nacl.signing.SigningKey, settings: Settings) -> sessionmaker[Session]:
    """Sessions whose audit appends are checkpointed with the service key."""
    policy = CheckpointPolicy(key, settings.audit_checkpoint_entries, settings.audit_checkpoint_seconds)
    return make_sessionmaker(engine, {SIGNER_KEY: policy})
