"""S3 blob store (AWS S3, MinIO, any S3 with object lock): the scale-out shape.

The bucket must have object lock enabled, which also makes it versioned; the store checks this
when it starts and refuses otherwise, because a bucket without object lock cannot enforce a
legal hold against anyone who holds its credentials.

What the operations mean on a versioned, locked bucket:

- ``put`` is one PutObject carrying Content-MD5 and a SHA-256 checksum, so S3 refuses a body
  that was corrupted on the way (and an interrupted upload never becomes an object: S3 stores
  a PutObject whole or not at all). It is sent with ``If-None-Match: *``, so the usual case, a
  new segment, costs one request; only when the key exists does the store look closer: the same
  bytes again is a no-op (a device's retry), different bytes over a held object raise ObjectHeld,
  otherwise a new current version is written. (A server without conditional writes answers
  501; the store then looks before every write.) As a second line of defence the returned ETag,
  which is the body's MD5 for a single PUT stored plain or with SSE-S3, is compared with ours; a
  mismatch removes that version again and raises UploadCorrupted (this is also what protects us
  on S3 look-alikes that do not check Content-MD5, such as moto).
- ``delete`` removes *every version* of the key, delete markers included. A plain DeleteObject
  on a versioned bucket only hides the object behind a delete marker and keeps every byte, which
  is not deletion: a purge follows crypto-shredding and must leave nothing behind. S3 refuses to
  delete a version under a legal hold (or unexpired retention); that refusal is ObjectHeld.
- A legal hold is set on, or released from, every version of the key, and ``legal_hold`` reports
  whether any version is held: that is exactly when ``delete`` would be refused.

Credentials come from boto3's usual chain (environment, shared profiles, instance or task
roles), never from Countersign's own settings.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import botocore.session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError, NoCredentialsError
from botocore.loaders import Loader, create_loader

from api.core.settings import SettingsError
from api.core.storage.interface import ObjectExists, ObjectHeld, ObjectMissing, check_key

log = logging.getLogger(__name__)

_MISSING = frozenset({"NoSuchKey", "NoSuchVersion", "404", "NotFound"})
_EXISTS = frozenset({"PreconditionFailed", "412", "ConditionalRequestConflict"})
# GetObjectLegalHold on a version that never had a hold: AWS documents NoSuchObjectLegalHold for
# it (SeaweedFS answers exactly that; moto answers OFF), and some servers say there is no lock
# configuration. Either way that version is not held. 405 MethodNotAllowed: a delete marker.
_NO_HOLD = frozenset({"NoSuchObjectLegalHold", "NoSuchObjectLockConfiguration", "InvalidRequest", "MethodNotAllowed"})
# Server-side encryption under which a single PUT's ETag is the MD5 of the body (AWS and MinIO).
_MD5_ETAG_SSE = frozenset({None, "AES256"})


class BucketNotUsable(SettingsError):
    """The configured bucket is missing, unreachable, or cannot enforce legal holds."""


class UploadCorrupted(OSError):
    """S3 stored other bytes than the ones sent; the bad version was removed again."""


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def _check_range(start: int, end: int) -> None:
    if not 0 <= start <= end:
        raise ValueError(f"bad byte range {start}..{end}")


_LOADER_LOCK = threading.Lock()
_loader: Loader | None = None


def _session() -> boto3.session.Session:
    """A new boto3 session (so credentials are resolved afresh) sharing one model loader: parsing
    S3's service model is most of the cost of a client, and it never changes within a process."""
    global _loader
    with _LOADER_LOCK:
        core = botocore.session.Session()
        if _loader is None:
            _loader = create_loader(core.get_config_variable("data_path"))  # honours AWS_DATA_PATH
        core.register_component("data_loader", _loader)
        return boto3.session.Session(botocore_session=core)


def make_client(endpoint_url: str | None, region: str) -> Any:
    """A thread-safe S3 client. Path-style addressing for custom endpoints: MinIO and most
    look-alikes do not resolve bucket names as host names."""
    config = Config(
        region_name=region,
        retries={"mode": "standard", "max_attempts": 5},
        connect_timeout=5,
        read_timeout=30,
        max_pool_connections=64,  # the API writes from a thread pool; botocore's default of 10 would queue them
        s3={"addressing_style": "path"} if endpoint_url else {},
    )
    return _session().client("s3", endpoint_url=endpoint_url, config=config)


class S3Store:
    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        client: Any = None,
        page_size: int = 1000,
        check: bool = True,
    ) -> None:
        self.bucket = bucket
        self.endpoint_url = endpoint_url
        # "tenant" and "tenant/" mean the same folder; keys are stored as prefix + key.
        self.prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        self.client = client if client is not None else make_client(endpoint_url, region)
        self.page_size = page_size
        self.conditional_writes = True  # If-None-Match on PutObject; switched off if the server lacks it
        if check:
            self.check_bucket()

    # ------------------------------------------------------------------ start-up check

    def check_bucket(self) -> None:
        """Refuse to start unless the bucket exists, is reachable and has object lock enabled."""
        where = f"S3 bucket {self.bucket!r}" + (f" at {self.endpoint_url}" if self.endpoint_url else "")
        try:
            self.client.head_bucket(Bucket=self.bucket)
            config = self.client.get_object_lock_configuration(Bucket=self.bucket)
        except NoCredentialsError as exc:
            raise BucketNotUsable(
                f"{where}: no AWS credentials found (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                "AWS_PROFILE, or run with an instance/task role)"
            ) from exc
        except EndpointConnectionError as exc:
            raise BucketNotUsable(f"{where}: cannot reach the endpoint ({exc})") from exc
        except ClientError as exc:
            code = _code(exc)
            if code in {"404", "NoSuchBucket", "NotFound"}:
                raise BucketNotUsable(f"{where} does not exist; create it with object lock enabled") from exc
            if code == "ObjectLockConfigurationNotFoundError":
                raise BucketNotUsable(
                    f"{where} does not have object lock enabled, so it cannot enforce legal holds; "
                    "use a bucket created with object lock (ObjectLockEnabledForBucket)"
                ) from exc
            raise BucketNotUsable(f"{where} is not usable: {code} {exc}") from exc
        except BotoCoreError as exc:
            raise BucketNotUsable(f"{where} is not usable: {exc}") from exc
        lock = config.get("ObjectLockConfiguration", {})
        if lock.get("ObjectLockEnabled") != "Enabled":
            raise BucketNotUsable(f"{where} does not have object lock enabled, so it cannot enforce legal holds")
        default = lock.get("Rule", {}).get("DefaultRetention")
        if default:
            # Not refused: an organisation may want a floor. But purges of younger recordings will be
            # refused by S3 (and retried by the retention job) until that retention runs out.
            log.warning("%s has a default object-lock retention %s: purges will wait for it", where, default)

    # ------------------------------------------------------------------ helpers

    def _name(self, key: str) -> str:
        return self.prefix + check_key(key)

    def _versions(self, name: str, markers: bool = False) -> list[str]:
        """Version ids of exactly this key (the listing is by prefix), newest first."""
        found: list[str] = []
        pages = self.client.get_paginator("list_object_versions").paginate(Bucket=self.bucket, Prefix=name)
        for page in pages:
            entries = page.get("Versions", []) + (page.get("DeleteMarkers", []) if markers else [])
            found.extend(str(e["VersionId"]) for e in entries if e["Key"] == name)
        return found

    def _version_held(self, name: str, version_id: str | None = None) -> bool:
        args = {"Bucket": self.bucket, "Key": name} | ({"VersionId": version_id} if version_id else {})
        try:
            reply = self.client.get_object_legal_hold(**args)
        except ClientError as exc:
            if _code(exc) in _NO_HOLD or _code(exc) in _MISSING:
                return False
            raise
        return bool(reply.get("LegalHold", {}).get("Status") == "ON")

    def _why_refused(self, name: str, version_id: str) -> str | None:
        """Why S3 refused to delete this version, if object lock is the reason (HeadObject reports
        both the legal hold and the retention, given s3:GetObjectLegalHold / s3:GetObjectRetention)."""
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=name, VersionId=version_id)
        except ClientError:
            return None
        if head.get("ObjectLockLegalHoldStatus") == "ON":
            return "under a legal hold"
        until = head.get("ObjectLockRetainUntilDate")
        if isinstance(until, datetime) and until > datetime.now(UTC):
            return f"under object-lock retention ({head.get('ObjectLockMode')}) until {until.isoformat()}"
        return None

    def _put(self, name: str, data: bytes, md5: bytes, sha256: bytes, only_new: bool) -> dict[str, Any]:
        extra = {"IfNoneMatch": "*"} if only_new else {}
        reply: dict[str, Any] = self.client.put_object(
            Bucket=self.bucket,
            Key=name,
            Body=data,
            ContentMD5=_b64(md5),
            ChecksumSHA256=_b64(sha256),
            ContentType="application/octet-stream",
            **extra,
        )
        return reply

    @staticmethod
    def _etag_is_md5(reply: dict[str, Any]) -> bool:
        etag = str(reply.get("ETag", "")).strip('"')
        return (
            len(etag) == 32
            and reply.get("ServerSideEncryption") in _MD5_ETAG_SSE
            and not reply.get("SSECustomerAlgorithm")
        )

    def _same_object(self, name: str, data: bytes, md5: bytes, sha256: bytes) -> bool:
        """Whether the current object holds exactly these bytes, judged from its metadata."""
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=name, ChecksumMode="ENABLED")
        except ClientError as exc:
            if _code(exc) in _MISSING:
                return False
            raise
        if head.get("ContentLength") != len(data):
            return False
        if head.get("ChecksumSHA256"):
            return bool(head["ChecksumSHA256"] == _b64(sha256))
        return self._etag_is_md5(head) and str(head["ETag"]).strip('"') == md5.hex()

    # ------------------------------------------------------------------ BlobStore

    def put(self, key: str, data: bytes, *, replace: bool = True) -> None:
        name = self._name(key)
        md5 = hashlib.md5(data, usedforsecurity=False).digest()  # what S3 checks; not a security hash here
        sha256 = hashlib.sha256(data).digest()
        reply = None
        if self.conditional_writes:
            try:
                reply = self._put(name, data, md5, sha256, only_new=True)
            except ClientError as exc:
                if _code(exc) == "NotImplemented":  # an S3 look-alike without If-None-Match
                    log.warning("S3 bucket %r: no conditional writes; every put checks first", self.bucket)
                    self.conditional_writes = False
                elif _code(exc) not in _EXISTS:
                    raise
        if reply is None:  # the key exists (or we cannot tell cheaply): look before writing
            if self._same_object(name, data, md5, sha256):
                return
            if not replace and (self.conditional_writes or self.exists(key)):
                # (Without conditional writes the look and the put below are two requests: a racing
                # put of other bytes in between can still replace; the warning above said so.)
                raise ObjectExists(key)
            if self._version_held(name):
                raise ObjectHeld(key)
            reply = self._put(name, data, md5, sha256, only_new=False)
        if self._etag_is_md5(reply) and str(reply["ETag"]).strip('"') != md5.hex():
            # Remove exactly the version just written, so the previous one (if any) is current again.
            version = reply.get("VersionId")
            problem = f"S3 stored other bytes than were sent for {key!r}; upload refused"
            try:
                args = {"Bucket": self.bucket, "Key": name} | ({"VersionId": version} if version else {})
                self.client.delete_object(**args)
            except (ClientError, BotoCoreError) as exc:
                raise UploadCorrupted(f"{problem}, and the bad copy could not be removed: {exc}") from exc
            raise UploadCorrupted(problem)

    def get(self, key: str) -> bytes:
        try:
            # ChecksumMode makes botocore check the body against the SHA-256 stored with it.
            reply = self.client.get_object(Bucket=self.bucket, Key=self._name(key), ChecksumMode="ENABLED")
        except ClientError as exc:
            if _code(exc) in _MISSING:
                raise ObjectMissing(key) from exc
            raise
        data: bytes = reply["Body"].read()
        return data

    def get_range(self, key: str, start: int, end: int) -> bytes:
        _check_range(start, end)
        if start == end:  # HTTP cannot ask for zero bytes; the answer still depends on existence
            if not self.exists(key):
                raise ObjectMissing(key)
            return b""
        try:
            reply = self.client.get_object(Bucket=self.bucket, Key=self._name(key), Range=f"bytes={start}-{end - 1}")
        except ClientError as exc:
            if _code(exc) in _MISSING:
                raise ObjectMissing(key) from exc
            if _code(exc) == "InvalidRange":  # start is at or past the end of an existing object
                return b""
            raise
        data: bytes = reply["Body"].read()
        # A server that ignores Range answers 200 with the whole object: cut it here.
        return data if reply.get("ContentRange") else data[start:end]

    def delete(self, key: str) -> None:
        name = self._name(key)
        held: list[str] = []
        for version_id in self._versions(name, markers=True):
            try:
                self.client.delete_object(Bucket=self.bucket, Key=name, VersionId=version_id)
            except ClientError as exc:
                if _code(exc) in _MISSING:
                    continue  # a concurrent purge got there first
                why = self._why_refused(name, version_id) if _code(exc) == "AccessDenied" else None
                if why is None:
                    raise
                held.append(why)
        if held:
            # The other versions are gone; the held ones stay, the newest of them now current.
            raise ObjectHeld(key, held[0])

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._name(key))
        except ClientError as exc:
            if _code(exc) in _MISSING:
                return False
            raise
        return True

    def set_legal_hold(self, key: str, on: bool) -> None:
        name = self._name(key)
        versions = self._versions(name)  # delete markers cannot carry a hold
        if not versions:
            raise ObjectMissing(key)
        for version_id in versions:
            self.client.put_object_legal_hold(
                Bucket=self.bucket, Key=name, VersionId=version_id, LegalHold={"Status": "ON" if on else "OFF"}
            )

    def legal_hold(self, key: str) -> bool:
        name = self._name(key)
        versions = self._versions(name)
        if not versions:
            raise ObjectMissing(key)
        return any(self._version_held(name, v) for v in versions)

    def list(self, prefix: str = "") -> Iterator[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix + prefix, PaginationConfig={"PageSize": self.page_size}
        )
        for page in pages:
            for item in page.get("Contents", []):
                yield str(item["Key"])[len(self.prefix) :]
