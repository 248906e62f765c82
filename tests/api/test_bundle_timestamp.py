"""RFC 3161 time-stamps of SHA256SUMS (api.bundle.timestamp) against a real local TSA (openssl ts)."""

from __future__ import annotations

import hashlib
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from api.bundle.timestamp import TimestampError, fetch_timestamp, timestamp_request
from api.core.settings import Settings
from tests.support.tsa import local_tsa

SUMS = b"0" * 64 + b"  manifest.json\n"
DIGEST = hashlib.sha256(SUMS).digest()


@pytest.fixture(scope="module")
def tsa() -> Iterator[tuple[str, Path, Path]]:
    with local_tsa() as authority:
        yield authority


def openssl_verify(
    reply: bytes, digest: bytes, ca_pem: Path, tsa_cert: Path, tmp_path: Path
) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "reply.tsr"
    path.write_bytes(reply)
    return subprocess.run(
        ["openssl", "ts", "-verify", "-digest", digest.hex(), "-in", str(path), "-CAfile", str(ca_pem),
         "-untrusted", str(tsa_cert)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_the_request_is_the_der_openssl_reads(tmp_path: Path) -> None:
    request = timestamp_request(DIGEST, 0x8000_0000_0000_0001)
    path = tmp_path / "q.tsq"
    path.write_bytes(request)
    shown = subprocess.run(
        ["openssl", "ts", "-query", "-in", str(path), "-text"], check=True, capture_output=True, text=True
    ).stdout
    assert "Version: 1" in shown
    assert "Hash Algorithm: sha256" in shown
    assert "Nonce: 0x8000000000000001" in shown
    assert "Certificate required: yes" in shown
    assert DIGEST.hex()[:8] in shown.replace(" ", "").replace("-", "").lower()
    # byte for byte what openssl makes for this digest, plus our nonce (openssl's own has none or a random one)
    made = subprocess.run(
        ["openssl", "ts", "-query", "-digest", DIGEST.hex(), "-sha256", "-cert", "-no_nonce"],
        check=True, capture_output=True,
    ).stdout  # fmt: skip
    assert made.endswith(b"\x01\x01\xff") and made[1] < 0x7D  # certReq TRUE last; a short-form length
    assert timestamp_request(DIGEST, 5) == made[:1] + bytes([made[1] + 3]) + made[2:-3] + b"\x02\x01\x05" + made[-3:]


def test_the_request_refuses_a_wrong_digest_or_nonce() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        timestamp_request(b"short", 1)
    with pytest.raises(ValueError, match="nonce"):
        timestamp_request(DIGEST, -1)


def test_a_granted_time_stamp_verifies_with_openssl(tsa: tuple[str, Path, Path], tmp_path: Path) -> None:
    url, ca_pem, tsa_cert = tsa
    reply = fetch_timestamp(url, DIGEST)
    done = openssl_verify(reply, DIGEST, ca_pem, tsa_cert, tmp_path)
    assert done.returncode == 0 and "Verification: OK" in done.stdout, done.stderr
    # ...and only for that digest
    other = openssl_verify(reply, hashlib.sha256(b"other").digest(), ca_pem, tsa_cert, tmp_path)
    assert other.returncode != 0
    # two requests, two nonces, two different tokens
    assert fetch_timestamp(url, DIGEST) != reply


def test_a_rejection_from_a_real_tsa_is_an_error() -> None:
    with (
        local_tsa(digests=("sha512",)) as (url, _, _),
        pytest.raises(TimestampError, match=r"refused.*rejection.*badAlg"),
    ):
        fetch_timestamp(url, DIGEST)


@contextmanager
def answering(status: int, content_type: str, body: bytes) -> Iterator[str]:
    """An HTTP server that answers every POST the same way."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/tsa"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


REPLY = "application/timestamp-reply"
# TimeStampResp { PKIStatusInfo { rejection, "policy refused", failInfo unacceptedPolicy } }, no token
REJECTION = bytes.fromhex("301c301a02010230100c0e") + b"policy refused" + bytes.fromhex("0303000001")


@pytest.mark.parametrize(
    ("status", "content_type", "body", "message"),
    [
        (500, "text/plain", b"internal error", "answered HTTP 500"),
        (404, "text/html", b"<h1>not here</h1>", "answered HTTP 404"),
        (200, "text/html", b"<html>a login page</html>", "not 'application/timestamp-reply'"),
        (200, REPLY, b"garbage that is not DER", "not a TimeStampResp|not DER"),
        (200, REPLY, b"", "not DER"),
        (200, REPLY, bytes.fromhex("3003020100") + b"trailing", "not a TimeStampResp"),
        (200, REPLY, REJECTION, "refused the time-stamp: rejection: 'policy refused' \\(unacceptedPolicy\\)"),
        (200, REPLY, bytes.fromhex("30053003020103"), "refused the time-stamp: waiting"),
        (200, REPLY, bytes.fromhex("30053003020100"), "granted the time-stamp but sent no token"),
        (200, REPLY, bytes.fromhex("300c3003020100300504") + b"\x03abc", "does not cover our digest"),
        (200, REPLY, bytes.fromhex("302c3003020100302504") + b"\x20" + DIGEST + bytes(3), "without our nonce"),
    ],
)
def test_a_bad_answer_is_a_timestamp_error(status: int, content_type: str, body: bytes, message: str) -> None:
    with answering(status, content_type, body) as url, pytest.raises(TimestampError, match=message):
        fetch_timestamp(url, DIGEST)


def test_an_unreachable_tsa_is_a_timestamp_error_without_its_password() -> None:
    with answering(200, REPLY, b"") as url:
        port = url.split(":")[2].split("/")[0]
    with pytest.raises(TimestampError, match="could not be reached") as caught:
        fetch_timestamp(f"http://user:s3cret@127.0.0.1:{port}/tsa", DIGEST, timeout=2)
    assert "s3cret" not in str(caught.value)
    with pytest.raises(TimestampError):
        fetch_timestamp("not a url", DIGEST)


def test_the_tsa_url_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().tsa_url is None
    monkeypatch.setenv("COUNTERSIGN_TSA_URL", "https://tsa.example.jp/rfc3161")
    assert Settings().tsa_url == "https://tsa.example.jp/rfc3161"
