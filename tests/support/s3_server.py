"""Test support: moto's S3 in server mode on a loopback port, SeaweedFS beside it, and object-lock buckets.

Use it from a test module with ``pytest_plugins = ["tests.support.s3_server"]`` (and import this module
only under TYPE_CHECKING there: pytest must import it first to rewrite its asserts). ``moto_s3`` is one
server for the whole session; ``s3_bucket`` is a fresh object-lock bucket per test, with fake
AWS credentials in the environment for that test only (so the service's own boto3 chain finds
them), and the host's AWS profiles kept out of the way. ``seaweed_s3`` is one SeaweedFS for the
session (tests/support/seaweed.py), with the same credentials, started only if a test asks.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from botocore.config import Config
from moto.server import ThreadedMotoServer

FAKE_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
REGION = "us-east-1"


@dataclass(frozen=True)
class S3Server:
    """An S3 endpoint on loopback that takes the fake credentials: moto's or SeaweedFS's."""

    endpoint_url: str
    region: str = REGION
    access_key: str = FAKE_CREDENTIALS["aws_access_key_id"]
    secret_key: str = FAKE_CREDENTIALS["aws_secret_access_key"]

    def client(self) -> Any:
        """A raw client with explicit fake credentials: for set-up and for going around the service."""
        return _raw_client(self.endpoint_url)

    def create_locked_bucket(self, name: str | None = None) -> str:
        """A new bucket with object lock (and so versioning) enabled; returns its name."""
        name = name or f"cs-test-{uuid.uuid4().hex[:16]}"
        self.client().create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
        return name


MotoS3 = S3Server  # the name the tests grew up with


@functools.cache  # one per server: a client costs ~0.1 s to build, and boto3 clients are thread-safe
def _raw_client(endpoint_url: str) -> Any:
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=REGION,
        config=Config(s3={"addressing_style": "path"}, retries={"mode": "standard", "max_attempts": 2}),
        **FAKE_CREDENTIALS,
    )


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[MotoS3]:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)  # port 0: the OS picks a free one
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield MotoS3(f"http://{host}:{port}")
    finally:
        server.stop()


@pytest.fixture(scope="session")
def seaweed_s3() -> S3Server:
    """SeaweedFS for the session: shared with tests/support/backends.py, stopped at the session's end."""
    from tests.support.backends import BACKENDS

    return S3Server(BACKENDS.seaweed_endpoint_url())


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Fake credentials for boto3's default chain, for one test; the host's AWS config stays out."""
    missing = tmp_path_factory.mktemp("aws") / "none"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", FAKE_CREDENTIALS["aws_access_key_id"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", FAKE_CREDENTIALS["aws_secret_access_key"])
    monkeypatch.setenv("AWS_CONFIG_FILE", str(missing))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(missing))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # never probe the instance-metadata address
    for name in (
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def s3_bucket(moto_s3: MotoS3, aws_env: None) -> str:
    """A fresh object-lock bucket on the session's moto server."""
    return moto_s3.create_locked_bucket()
