"""A real RFC 3161 time-stamp authority on a loopback port, made of `openssl ts -reply`.

``with local_tsa() as (url, ca_pem, tsa_cert): ...`` makes a throwaway CA and a TSA certificate
under it (extendedKeyUsage critical timeStamping, as RFC 3161 §2.3 requires), and serves
POST requests on 127.0.0.1 by handing each query to `openssl ts -reply`. A reply it gives checks
with ``openssl ts -verify -digest <hex> -in reply.tsr -CAfile ca_pem -untrusted tsa_cert``.

`digests` is what the authority accepts: a query with any other hash gets a real rejection
(PKIStatus 2, badAlg) from openssl.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import NamedTuple

import pytest

POLICY = "1.3.6.1.4.1.55555.1.1"  # an arbitrary OID under a private-enterprise arc: tests only


class TSA(NamedTuple):
    url: str
    ca_pem: Path
    tsa_cert: Path


def _openssl(*args: str, cwd: Path, stdin: bytes | None = None) -> bytes:
    done = subprocess.run(["openssl", *args], cwd=cwd, input=stdin, capture_output=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed: {done.stderr.decode(errors='replace')}")
    return done.stdout


def make_authority(directory: Path, digests: Sequence[str] = ("sha256", "sha384", "sha512")) -> Path:
    """CA, TSA key and certificate and an `openssl ts` config in `directory`; returns the config."""
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=Countersign test CA",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )  # fmt: skip
    _openssl(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "tsa.key", "-out", "tsa.csr", "-subj", "/CN=Countersign test TSA",
        cwd=directory,
    )  # fmt: skip
    (directory / "tsa.ext").write_text(
        "basicConstraints = critical, CA:FALSE\n"
        "keyUsage = critical, digitalSignature\n"
        "extendedKeyUsage = critical, timeStamping\n"
    )
    _openssl(
        "x509", "-req", "-in", "tsa.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "tsa.pem", "-days", "2", "-extfile", "tsa.ext",
        cwd=directory,
    )  # fmt: skip
    (directory / "tsaserial").write_text("01\n")
    config = directory / "ts.cnf"
    config.write_text(
        f"""[ tsa ]
default_tsa = test_tsa

[ test_tsa ]
dir = {directory}
serial = $dir/tsaserial
crypto_device = builtin
signer_cert = $dir/tsa.pem
certs = $dir/tsa.pem
signer_key = $dir/tsa.key
signer_digest = sha256
default_policy = {POLICY}
digests = {", ".join(digests)}
accuracy = secs:1
ordering = yes
tsa_name = yes
ess_cert_id_chain = no
ess_cert_id_alg = sha256
"""
    )
    return config


@contextmanager
def local_tsa(digests: Sequence[str] = ("sha256", "sha384", "sha512")) -> Iterator[TSA]:
    """A running authority: yields (url, ca_pem, tsa_cert); stopped and deleted afterwards."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    with tempfile.TemporaryDirectory(prefix="countersign-tsa-") as name:
        directory = Path(name)
        config = make_authority(directory, digests)
        lock = threading.Lock()  # one `openssl ts -reply` at a time: it rewrites the serial file
        count = [0]

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                query = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with lock:
                    count[0] += 1
                    query_file = directory / f"query-{count[0]}.tsq"
                    reply_file = directory / f"reply-{count[0]}.tsr"
                    query_file.write_bytes(query)
                    done = subprocess.run(
                        ["openssl", "ts", "-reply", "-config", str(config), "-queryfile", str(query_file),
                         "-out", str(reply_file)],
                        capture_output=True, timeout=60,
                    )  # fmt: skip
                    reply = reply_file.read_bytes() if done.returncode == 0 and reply_file.exists() else b""
                if not reply:
                    self.send_error(500, "openssl ts -reply failed")
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/timestamp-reply")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: object) -> None:  # quiet: pytest shows failures
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=server.serve_forever, name="local-tsa", daemon=True)
        thread.start()
        try:
            host, port = server.server_address[:2]
            yield TSA(f"http://{host!s}:{port}/tsa", directory / "ca.pem", directory / "tsa.pem")
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=10)
