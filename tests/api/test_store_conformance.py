"""One behaviour for every blob store: the filesystem store, and S3 on two servers, each on loopback
with an object-lock bucket: moto (S3 reimplemented in Python) and SeaweedFS (a real server, which
answers some calls as AWS does and moto does not: NoSuchObjectLegalHold for a version never held).

The parametrized suite is the contract (api/core/storage/interface.py). The S3-only tests at the end
pin what cannot be seen through the interface: the request carries Content-MD5 and a SHA-256
checksum, delete removes every version, an interrupted body never becomes an object.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest, AWSResponse
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from api.core.storage import BlobStore, ObjectExists, ObjectHeld, ObjectMissing
from api.core.storage.filesystem import FilesystemStore
from api.core.storage.interface import segment_key
from api.core.storage.s3 import S3Store, UploadCorrupted

if TYPE_CHECKING:
    from tests.support.s3_server import S3Server

pytest_plugins = ["tests.support.s3_server"]

KEY = segment_key("2b1f4b9e-8c5d-4d0e-9a53-1f0c2d3e4f50", 0)


@dataclass
class Backend:
    kind: str
    make: Callable[..., BlobStore]  # make(page_size=...) -> a store over the same objects
    break_next_put: Callable[[BlobStore, pytest.MonkeyPatch], None]  # make the next put fail midway


class _HalfWriter:
    """A file whose write stores half the data and then fails, like a disk filling up midway."""

    def __init__(self, f: Any) -> None:
        self.f = f

    def __enter__(self) -> _HalfWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.f.close()

    def write(self, data: bytes) -> int:
        self.f.write(data[: len(data) // 2])
        self.f.flush()
        raise OSError(28, "No space left on device")


def _break_filesystem_put(store: BlobStore, monkeypatch: pytest.MonkeyPatch) -> None:
    real = os.fdopen
    monkeypatch.setattr("api.core.storage.filesystem.os.fdopen", lambda fd, mode: _HalfWriter(real(fd, mode)))


def _break_s3_put(store: BlobStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """Flip one byte of the body after the client computed its checksums: corruption in transit."""
    assert isinstance(store, S3Store)

    def corrupt(request: Any, **kwargs: Any) -> None:
        body = request.body.read() if hasattr(request.body, "read") else bytes(request.body)
        request.body = bytes([body[0] ^ 0xFF]) + body[1:]

    store.client.meta.events.register("before-send.s3.PutObject", corrupt)  # this client only


SERVERS = {"s3": "moto_s3", "moto": "moto_s3", "seaweedfs": "seaweed_s3"}  # parameter -> that server's fixture


@pytest.fixture(params=["moto", "seaweedfs"])
def s3_server(request: pytest.FixtureRequest, aws_env: None) -> S3Server:
    """Each S3 server in turn, with the fake credentials in boto3's chain (aws_env)."""
    server: S3Server = request.getfixturevalue(SERVERS[request.param])
    return server


@pytest.fixture(params=["filesystem", "s3", "seaweedfs"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "filesystem":
        root = tmp_path / "objects"
        return Backend("filesystem", lambda page_size=1000: FilesystemStore(root), _break_filesystem_put)
    request.getfixturevalue("aws_env")  # credentials come from boto3's chain
    server: S3Server = request.getfixturevalue(SERVERS[request.param])
    bucket = server.create_locked_bucket()

    def make(page_size: int = 1000) -> BlobStore:
        return S3Store(bucket, endpoint_url=server.endpoint_url, region=server.region, page_size=page_size)

    return Backend(request.param, make, _break_s3_put)


@pytest.fixture
def store(backend: Backend) -> BlobStore:
    return backend.make()


# --------------------------------------------------------------------------- the contract


@pytest.mark.parametrize("size", [0, 1, 100_000])
def test_round_trip(store: BlobStore, size: int) -> None:
    data = os.urandom(size)
    store.put(KEY, data)
    assert store.get(KEY) == data
    assert store.exists(KEY)


def test_same_bytes_again_is_a_no_op_and_other_bytes_replace(store: BlobStore) -> None:
    store.put(KEY, b"first")
    store.put(KEY, b"first")
    assert store.get(KEY) == b"first"
    store.put(KEY, b"second, longer")
    assert store.get(KEY) == b"second, longer"
    assert list(store.list()) == [KEY]


def test_not_replacing_keeps_the_first_bytes_and_says_so(store: BlobStore) -> None:
    store.put(KEY, b"first", replace=False)
    store.put(KEY, b"first", replace=False)  # a retry of the same bytes
    with pytest.raises(ObjectExists):
        store.put(KEY, b"second", replace=False)
    assert store.get(KEY) == b"first"
    assert list(store.list()) == [KEY]  # no temporary file or version left visible


def test_racing_puts_of_different_bytes_store_exactly_one(store: BlobStore) -> None:
    """Two uploads of one segment index with other bytes at once (a device's key used twice): one wins, whole."""
    copies = [os.urandom(50_000) for _ in range(6)]
    outcomes: dict[int, str] = {}
    go = threading.Barrier(len(copies))

    def put(n: int) -> None:
        go.wait()
        try:
            store.put(KEY, copies[n], replace=False)
            outcomes[n] = "stored"
        except ObjectExists:
            outcomes[n] = "refused"

    threads = [threading.Thread(target=put, args=(n,)) for n in range(len(copies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    stored = [n for n, outcome in outcomes.items() if outcome == "stored"]
    assert len(outcomes) == len(copies) and len(stored) == 1, outcomes
    assert store.get(KEY) == copies[stored[0]]


@pytest.mark.parametrize(
    ("start", "end"),
    [(0, 10), (10, 20), (0, 1024), (1000, 1024), (1020, 2000), (1024, 1030), (2000, 3000), (5, 5), (0, 0)],
)
def test_get_range_is_like_slicing(store: BlobStore, start: int, end: int) -> None:
    data = bytes(range(256)) * 4
    store.put(KEY, data)
    assert store.get_range(KEY, start, end) == data[start:end]


def test_get_range_refuses_bad_ranges_and_missing_objects(store: BlobStore) -> None:
    with pytest.raises(ObjectMissing):
        store.get_range(KEY, 0, 10)
    with pytest.raises(ObjectMissing):
        store.get_range(KEY, 0, 0)
    store.put(KEY, b"0123456789")
    for start, end in [(5, 4), (-1, 3)]:
        with pytest.raises(ValueError):
            store.get_range(KEY, start, end)


def test_missing_object(store: BlobStore) -> None:
    with pytest.raises(ObjectMissing):
        store.get(KEY)
    assert not store.exists(KEY)
    with pytest.raises(ObjectMissing):
        store.legal_hold(KEY)
    with pytest.raises(ObjectMissing):
        store.set_legal_hold(KEY, True)
    with pytest.raises(ObjectMissing):
        store.set_legal_hold(KEY, False)


def test_delete_is_idempotent(store: BlobStore) -> None:
    store.delete(KEY)  # never existed
    store.put(KEY, b"evidence")
    store.delete(KEY)
    assert not store.exists(KEY)
    with pytest.raises(ObjectMissing):
        store.get(KEY)
    store.delete(KEY)  # already gone
    assert list(store.list()) == []


def test_list_by_prefix_in_key_order(store: BlobStore) -> None:
    keys = ["recordings/a/000000.seg", "recordings/a/000001.seg", "recordings/a.b", "recordings/ab/000000.seg"]
    keys += ["other/x", "top"]
    for key in keys:
        store.put(key, key.encode())
    assert list(store.list()) == sorted(keys)  # plain string order, as S3 lists: "a.b" before "a/"
    assert list(store.list("recordings/a/")) == ["recordings/a/000000.seg", "recordings/a/000001.seg"]
    assert list(store.list("recordings/a")) == sorted(k for k in keys if k.startswith("recordings/a"))
    assert list(store.list("nothing/")) == []
    assert list(store.list("../")) == []


def test_list_follows_pages(backend: Backend) -> None:
    store = backend.make(page_size=10)
    keys = [f"recordings/p/{i:06d}.seg" for i in range(35)]
    for key in keys:
        store.put(key, b"x")
    assert list(store.list("recordings/p/")) == keys


UNSAFE = [
    "../x",
    "/etc/passwd",
    "a/../b",
    "a/./b",
    "a//b",
    "",
    ".hidden",
    "a/.x.hold",
    "a/b/",
    "a\\b",
    "a b",
    "x" * 1025,
]


@pytest.mark.parametrize("key", UNSAFE)
def test_unsafe_keys_are_refused(store: BlobStore, key: str) -> None:
    for call in (
        lambda: store.put(key, b"x"),
        lambda: store.get(key),
        lambda: store.get_range(key, 0, 1),
        lambda: store.delete(key),
        lambda: store.exists(key),
        lambda: store.set_legal_hold(key, True),
        lambda: store.legal_hold(key),
    ):
        with pytest.raises(ValueError, match="unsafe object key"):
            call()


def test_legal_hold_blocks_delete_and_replace_until_released(store: BlobStore) -> None:
    store.put(KEY, b"evidence")
    assert store.legal_hold(KEY) is False
    store.set_legal_hold(KEY, True)
    store.set_legal_hold(KEY, True)  # twice is harmless
    assert store.legal_hold(KEY) is True
    with pytest.raises(ObjectHeld):
        store.delete(KEY)
    with pytest.raises(ObjectHeld):
        store.put(KEY, b"something else")
    store.put(KEY, b"evidence")  # a device's retry of the same bytes still succeeds
    assert store.get(KEY) == b"evidence" and store.exists(KEY)
    assert list(store.list()) == [KEY]  # the hold itself is never listed as an object

    store.set_legal_hold(KEY, False)
    assert store.legal_hold(KEY) is False
    store.delete(KEY)
    assert not store.exists(KEY)


def test_a_fresh_store_sees_the_hold(backend: Backend) -> None:
    backend.make().put(KEY, b"evidence")
    backend.make().set_legal_hold(KEY, True)
    again = backend.make()  # a restarted service, or another node
    assert again.legal_hold(KEY)
    with pytest.raises(ObjectHeld):
        again.delete(KEY)


@pytest.mark.parametrize("previous", [None, b"the old version"])
def test_interrupted_upload_leaves_old_version_or_nothing(
    backend: Backend, store: BlobStore, monkeypatch: pytest.MonkeyPatch, previous: bytes | None
) -> None:
    if previous is not None:
        store.put(KEY, previous)
    backend.break_next_put(store, monkeypatch)
    with pytest.raises((OSError, UploadCorrupted, ClientError)):
        store.put(KEY, os.urandom(50_000))
    fresh = backend.make()
    if previous is None:
        assert not fresh.exists(KEY)
        with pytest.raises(ObjectMissing):
            fresh.get(KEY)
        assert list(fresh.list()) == []
    else:
        assert fresh.get(KEY) == previous
        assert list(fresh.list()) == [KEY]


# --------------------------------------------------------------------------- S3 only


@pytest.fixture
def s3(s3_server: S3Server) -> S3Store:
    return S3Store(s3_server.create_locked_bucket(), endpoint_url=s3_server.endpoint_url, region=s3_server.region)


def _versions(server: S3Server, bucket: str, key: str) -> tuple[list[str], list[str]]:
    reply = server.client().list_object_versions(Bucket=bucket, Prefix=key)
    versions = [v["VersionId"] for v in reply.get("Versions", []) if v["Key"] == key]
    return versions, [m["VersionId"] for m in reply.get("DeleteMarkers", []) if m["Key"] == key]


def test_s3_put_sends_md5_and_sha256(s3: S3Store) -> None:
    sent: dict[str, str] = {}

    def capture(request: Any, **kwargs: Any) -> None:
        sent.update({k: v.decode() if isinstance(v, bytes) else v for k, v in request.headers.items()})

    s3.client.meta.events.register("before-send.s3.PutObject", capture)
    data = os.urandom(1000)
    s3.put(KEY, data)
    assert sent["Content-MD5"] == base64.b64encode(hashlib.md5(data).digest()).decode()
    assert sent["x-amz-checksum-sha256"] == base64.b64encode(hashlib.sha256(data).digest()).decode()
    assert sent["If-None-Match"] == "*"  # a new key costs one request


class _Raw:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **kwargs: Any) -> Any:
        yield self.body


def test_s3_without_conditional_writes_still_guards_held_objects(s3: S3Store) -> None:
    """A look-alike answering 501 to If-None-Match: the store falls back to looking before writing."""
    error = b"<Error><Code>NotImplemented</Code><Message>If-None-Match</Message></Error>"

    def refuse_conditional(request: Any, **kwargs: Any) -> AWSResponse | None:
        if "If-None-Match" in request.headers:
            return AWSResponse(request.url, 501, {}, _Raw(error))
        return None

    s3.client.meta.events.register("before-send.s3.PutObject", refuse_conditional)
    s3.put(KEY, b"evidence")
    assert s3.conditional_writes is False and s3.get(KEY) == b"evidence"
    s3.put(KEY, b"evidence")
    s3.set_legal_hold(KEY, True)
    with pytest.raises(ObjectHeld):
        s3.put(KEY, b"other")
    assert s3.get(KEY) == b"evidence"


def test_s3_delete_removes_every_version(s3: S3Store, s3_server: S3Server) -> None:
    s3.put(KEY, b"one")
    s3.put(KEY, b"two")
    s3_server.client().delete_object(Bucket=s3.bucket, Key=KEY)  # a plain delete: only a marker
    versions, markers = _versions(s3_server, s3.bucket, KEY)
    assert len(versions) == 2 and len(markers) == 1
    s3.delete(KEY)
    assert _versions(s3_server, s3.bucket, KEY) == ([], [])


def test_s3_retry_of_the_same_bytes_adds_no_version(s3: S3Store, s3_server: S3Server) -> None:
    s3.put(KEY, b"segment")
    s3.put(KEY, b"segment")
    assert len(_versions(s3_server, s3.bucket, KEY)[0]) == 1


def test_s3_hold_covers_every_version(s3: S3Store, s3_server: S3Server) -> None:
    s3.put(KEY, b"one")
    s3.put(KEY, b"two")
    s3.set_legal_hold(KEY, True)
    raw = s3_server.client()
    for version in _versions(s3_server, s3.bucket, KEY)[0]:
        assert raw.get_object_legal_hold(Bucket=s3.bucket, Key=KEY, VersionId=version)["LegalHold"]["Status"] == "ON"
    s3.set_legal_hold(KEY, False)
    s3.delete(KEY)
    assert _versions(s3_server, s3.bucket, KEY) == ([], [])


def test_s3_prefix_keeps_keys_in_one_folder(s3_server: S3Server) -> None:
    s3_bucket = s3_server.create_locked_bucket()
    tenant = S3Store(s3_bucket, prefix="/tenant-a/", endpoint_url=s3_server.endpoint_url, region=s3_server.region)
    other = S3Store(s3_bucket, prefix="tenant-b", endpoint_url=s3_server.endpoint_url, region=s3_server.region)
    tenant.put(KEY, b"a")
    other.put(KEY, b"b")
    raw = s3_server.client().list_objects_v2(Bucket=s3_bucket)
    assert sorted(o["Key"] for o in raw["Contents"]) == [f"tenant-a/{KEY}", f"tenant-b/{KEY}"]
    assert list(tenant.list()) == [KEY] and tenant.get(KEY) == b"a"


def test_s3_list_beyond_one_thousand_keys(s3: S3Store) -> None:
    """S3 answers at most 1,000 keys a page whatever is asked: the listing must follow on."""
    keys = [f"recordings/many/{i:06d}.seg" for i in range(1050)]
    for key in keys:
        s3.client.put_object(Bucket=s3.bucket, Key=key, Body=b"")  # raw: the set-up, not the subject
    calls = []
    s3.client.meta.events.register("before-send.s3.ListObjectsV2", lambda **kw: calls.append(1))
    assert list(s3.list("recordings/many/")) == keys
    assert len(calls) == 2


def test_s3_interrupted_body_never_becomes_an_object(s3: S3Store, s3_server: S3Server) -> None:
    """A signed PutObject whose connection drops halfway through the body: nothing is stored."""
    data = os.urandom(200_000)
    url = f"{s3_server.endpoint_url}/{s3.bucket}/{KEY}"
    request = AWSRequest(
        method="PUT",
        url=url,
        data=data,
        headers={"Content-MD5": base64.b64encode(hashlib.md5(data).digest()).decode()},
    )
    credentials = Credentials(s3_server.access_key, s3_server.secret_key)
    SigV4Auth(credentials, "s3", s3_server.region).add_auth(request)
    parts = urlsplit(url)
    head = f"PUT {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Length: {len(data)}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in request.headers.items() if k.lower() not in {"host", "content-length"})
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(head.encode() + b"\r\n" + data[: len(data) // 2])
        sock.shutdown(socket.SHUT_WR)  # the device dies mid-upload
        reply = b""
        try:
            while chunk := sock.recv(4096):
                reply += chunk
        except OSError:
            pass
    assert not reply.startswith(b"HTTP/1.1 2")  # moto (werkzeug) answers 400; S3 would time the request out
    assert not s3.exists(KEY)
    assert list(s3.list()) == []


# --------------------------------------------------------------------------- going around the service


def test_s3_held_segment_survives_a_client_going_straight_to_the_bucket(s3: S3Store, s3_server: S3Server) -> None:
    """Object lock, not the service, refuses: anyone with the bucket's credentials is refused too."""
    s3.put(KEY, b"evidence")
    s3.set_legal_hold(KEY, True)
    raw = s3_server.client()
    (version,), _ = _versions(s3_server, s3.bucket, KEY)

    for bypass in (False, True):  # governance bypass does not lift a legal hold
        with pytest.raises(ClientError) as refused:
            raw.delete_object(Bucket=s3.bucket, Key=KEY, VersionId=version, BypassGovernanceRetention=bypass)
        assert refused.value.response["Error"]["Code"] == "AccessDenied"
    batch = raw.delete_objects(Bucket=s3.bucket, Delete={"Objects": [{"Key": KEY, "VersionId": version}]})
    assert [e["Code"] for e in batch["Errors"]] == ["AccessDenied"]
    assert s3.get(KEY) == b"evidence"

    # A plain DeleteObject is not refused, but it deletes nothing: it only hides the object behind
    # a delete marker. The held version is still there and comes back when the marker goes.
    marker = raw.delete_object(Bucket=s3.bucket, Key=KEY)
    assert marker["DeleteMarker"] is True and not s3.exists(KEY)
    assert raw.get_object(Bucket=s3.bucket, Key=KEY, VersionId=version)["Body"].read() == b"evidence"
    raw.delete_object(Bucket=s3.bucket, Key=KEY, VersionId=marker["VersionId"])
    assert s3.get(KEY) == b"evidence"

    s3.set_legal_hold(KEY, False)
    raw.delete_object(Bucket=s3.bucket, Key=KEY, VersionId=version)  # released: now it can go
    assert _versions(s3_server, s3.bucket, KEY) == ([], [])


def test_s3_retention_refusal_is_reported_as_held(s3: S3Store, s3_server: S3Server) -> None:
    s3.put(KEY, b"evidence")
    (version,), _ = _versions(s3_server, s3.bucket, KEY)
    until = datetime.now(UTC) + timedelta(days=1)
    retention = {"Mode": "COMPLIANCE", "RetainUntilDate": until}
    s3_server.client().put_object_retention(Bucket=s3.bucket, Key=KEY, VersionId=version, Retention=retention)
    with pytest.raises(ObjectHeld, match="retention"):
        s3.delete(KEY)
    assert s3.get(KEY) == b"evidence"
