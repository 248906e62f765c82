"""Transport security as it is deployed: `server run --tls-cert/--tls-key`, a private CA, pinned certificates.

A private CA and server certificates for 127.0.0.1 are made here with the `openssl` command.
The recorder and the client run as real CLIs against a live https server; swapping the
server's certificate (same CA, new key) stands in for an impostor that holds a certificate
the CA signed: chain and host name verify, only the pin tells it apart.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
import typer
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.bootstrap import approve_user
from api.core.settings import Settings
from countersign.cli import app as cli_app
from evidence.errors import ExitCode
from tests.conftest import LiveServer, bearer, cli_env, countersign, free_port
from tests.support.factories import tone

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


def openssl(*args: str, cwd: Path) -> str:
    return subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


@dataclass
class Pki:
    folder: Path
    ca: Path
    ca_key: Path

    def issue(self, name: str, serial: int) -> tuple[Path, Path]:
        """A new key and a certificate for 127.0.0.1 signed by the CA."""
        key, csr, cert = (self.folder / f"{name}.{ext}" for ext in ("key", "csr", "pem"))
        ext = self.folder / f"{name}.ext"
        ext.write_text(
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
            "extendedKeyUsage=serverAuth\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
        )
        openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                "-keyout", key.name, "-out", csr.name, "-subj", "/CN=127.0.0.1", cwd=self.folder)  # fmt: skip
        openssl("x509", "-req", "-in", csr.name, "-CA", self.ca.name, "-CAkey", self.ca_key.name, "-set_serial",
                str(serial), "-days", "2", "-out", cert.name, "-extfile", ext.name, cwd=self.folder)  # fmt: skip
        return cert, key


def pin_of(cert: Path) -> str:
    """The certificate's SHA-256 as openssl prints it, written as a pin (independently of evidence/tls.py)."""
    line = openssl("x509", "-in", str(cert), "-noout", "-fingerprint", "-sha256", cwd=cert.parent).strip()
    return "sha256:" + line.split("=", 1)[1].replace(":", "").lower()


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    folder = tmp_path / "pki"
    folder.mkdir()
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=Countersign test CA",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            cwd=folder)  # fmt: skip
    return Pki(folder, folder / "ca.pem", folder / "ca.key")


@dataclass
class TlsDeployment:
    server: LiveServer
    pki: Pki
    admin: httpx.Client
    officer_token: str
    cert: tuple[Path, Path]

    def officer_env(self, **extra: str) -> dict[str, str]:
        return cli_env(COUNTERSIGN_TOKEN=self.officer_token, COUNTERSIGN_SERVER=self.server.url, **extra)

    def enrolment_code(self, name: str) -> str:
        reply = self.admin.post("/v1/devices", json={"name": name, "site": "tokyo"})
        assert reply.status_code == 201, reply.text
        code: str = reply.json()["enrolment_code"]
        return code

    def requests_logged(self, needle: str) -> int:
        return self.server.log.read_text(errors="replace").count(needle)

    def restart_with(self, cert: tuple[Path, Path]) -> None:
        self.server.stop()
        self.server.tls = cert
        self.server.start()


@pytest.fixture
def tls_deployment(tmp_path: Path, pki: Pki) -> Iterator[TlsDeployment]:
    data = tmp_path / "server"
    init = countersign("server", "init", "--data", str(data))
    admin_token = next(line.split()[-1] for line in init.stdout.splitlines() if line.startswith("admin token"))
    cert = pki.issue("server-1", 1)
    server = LiveServer(data, free_port(), tls=cert, ca=pki.ca)
    server.start()
    # No keep-alive: an idle TLS connection would hold up each restart's graceful shutdown
    # (asyncio waits for the peer's close_notify), and restarts are part of these tests.
    admin = httpx.Client(
        base_url=server.url,
        headers=bearer(admin_token),
        verify=server.verify(),
        limits=httpx.Limits(max_keepalive_connections=0),
    )
    try:
        assert admin.post("/v1/sites", json={"id": "tokyo"}).status_code == 201
        officer = admin.post("/v1/users", json={"name": "olivia", "role": "officer", "sites": ["tokyo"]})
        approve_user(Settings(data_dir=server.data, env="development"), "olivia")
        yield TlsDeployment(server, pki, admin, officer.json()["token"], cert)
    finally:
        admin.close()
        server.stop()


def write_wav(path: Path, seconds: int) -> np.ndarray:
    pcm = np.concatenate([tone(1.0, freq=300 + 40 * i, seed=i) for i in range(seconds)])
    sf.write(path, pcm, 16000, subtype="PCM_16")
    return pcm[:, 0]


def record(home: Path, wav: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    return countersign("recorder", "record", "--home", str(home), "--input", str(wav), "--consent", "given",
                       "--language", "en", "--segment-seconds", "1", "--upload-wait", "5", check=check)  # fmt: skip


def enrol(d: TlsDeployment, home: Path, *extra: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    code = d.enrolment_code(home.name)
    return countersign("recorder", "enroll", "--server", d.server.url, "--code", code, "--home", str(home), *extra,
                       check=check)  # fmt: skip


def evidence_ids(d: TlsDeployment, *extra: str) -> list[str]:
    listed = countersign("evidence", "list", "--json", "--ca-file", str(d.pki.ca), *extra, env=d.officer_env())
    return [r["id"] for r in json.loads(listed.stdout)]


def spooled_segments(home: Path) -> int:
    return len(list((home / "spool").glob("*/[0-9]*.json")))


def test_recording_over_tls_with_a_private_ca_and_a_pinned_certificate(
    tls_deployment: TlsDeployment, tmp_path: Path
) -> None:
    d = tls_deployment
    health = httpx.get(f"{d.server.url}/healthz", verify=d.server.verify())
    assert health.headers["strict-transport-security"].startswith("max-age=")

    # Without the private CA the certificate does not verify: a clear refusal, nothing written.
    untrusted = enrol(d, tmp_path / "no-ca", check=False)
    assert untrusted.returncode == ExitCode.SERVER_UNREACHABLE, untrusted.stderr
    assert "not trusted" in untrusted.stderr and "--ca-file" in untrusted.stderr
    assert "Traceback" not in untrusted.stderr
    assert not (tmp_path / "no-ca" / "device.json").exists()

    # With it: enrolled, the server certificate's fingerprint pinned, the CA kept in the home.
    home = tmp_path / "device"
    enrol(d, home, "--ca-file", str(d.pki.ca))
    config = json.loads((home / "device.json").read_text())
    assert config["server"] == d.server.url
    assert config["server_pin"] == pin_of(d.cert[0])
    assert (home / "ca.pem").read_text() == d.pki.ca.read_text()
    assert pin_of(d.cert[0]) in countersign("recorder", "status", "--home", str(home)).stdout

    # Record, upload, read back through the client over TLS: bit-exact.
    source = write_wav(tmp_path / "in.wav", 4)
    assert "uploaded" in record(home, tmp_path / "in.wav").stdout
    [rid] = evidence_ids(d)
    out = tmp_path / "out.wav"
    countersign("evidence", "get", rid, "--purpose", "TLS end-to-end check", "-o", str(out),
                "--ca-file", str(d.pki.ca), "--pin", pin_of(d.cert[0]), env=d.officer_env())  # fmt: skip
    samples, rate = sf.read(out, dtype="int16")
    assert rate == 16000 and np.array_equal(samples, source)
    # The environment variables do the same as the options.
    env = d.officer_env(COUNTERSIGN_CA_FILE=str(d.pki.ca), COUNTERSIGN_SERVER_PIN=pin_of(d.cert[0]))
    assert rid in countersign("evidence", "show", rid, env=env).stdout

    # The client with a wrong pin refuses before sending anything (not even its token).
    reads = d.requests_logged("GET /v1/evidence")
    wrong = countersign("evidence", "list", "--ca-file", str(d.pki.ca), "--pin", "sha256:" + "0" * 64,
                        env=d.officer_env(), check=False)  # fmt: skip
    assert wrong.returncode == ExitCode.SERVER_UNREACHABLE, wrong.stderr
    assert "not the pinned sha256:" + "0" * 64 in wrong.stderr and "Traceback" not in wrong.stderr
    assert d.requests_logged("GET /v1/evidence") == reads

    # A certificate from the same CA with a new key: chain and name verify, the pin does not.
    impostor = d.pki.issue("server-2", 2)
    d.restart_with(impostor)
    uploads = d.requests_logged("POST /v1/recordings")
    write_wav(tmp_path / "second.wav", 3)
    refused = record(home, tmp_path / "second.wav", check=False)
    assert refused.returncode == ExitCode.SERVER_UNREACHABLE, refused.stderr
    assert f"not the pinned {pin_of(d.cert[0])}" in refused.stderr and "Traceback" not in refused.stderr
    assert spooled_segments(home) == 3, "the refused recording's evidence must stay in the spool"
    synced = countersign("recorder", "sync", "--home", str(home), check=False)
    assert synced.returncode == ExitCode.SERVER_UNREACHABLE, synced.stderr
    assert "not the one this device trusts" in synced.stderr and pin_of(impostor[0]) in synced.stderr
    assert spooled_segments(home) == 3
    assert d.requests_logged("POST /v1/recordings") == uploads, "nothing may reach an unpinned server"
    assert d.requests_logged("PUT /v1/recordings") == 4, "only the first recording's segments arrived"
    assert evidence_ids(d) == [rid]  # the officer trusts the CA without a pin: the server is reachable

    # The pinned certificate back: the spooled recording goes.
    d.restart_with(d.cert)
    synced = countersign("recorder", "sync", "--home", str(home))
    assert "3 segments sent; complete" in synced.stdout
    assert spooled_segments(home) == 0 and len(evidence_ids(d)) == 2


def test_an_explicit_pin_is_checked_before_the_enrolment_code_is_sent(
    tls_deployment: TlsDeployment, tmp_path: Path
) -> None:
    d = tls_deployment
    code = d.enrolment_code("counter-9")
    home = tmp_path / "device"
    enroll = ["recorder", "enroll", "--server", d.server.url, "--code", code, "--home", str(home)]
    refused = countersign(*enroll, "--ca-file", str(d.pki.ca), "--pin", "sha256:" + "ab" * 32, check=False)
    assert refused.returncode == ExitCode.SERVER_UNREACHABLE, refused.stderr
    assert "not the pinned" in refused.stderr and "nothing was written" in refused.stderr
    assert not (home / "device.json").exists()
    assert d.requests_logged("POST /v1/enrol") == 0
    # The same code still works (it never left this machine), with the pin in openssl's own notation.
    colons = ":".join(pin_of(d.cert[0])[7:][i : i + 2] for i in range(0, 64, 2)).upper()
    countersign(*enroll, "--ca-file", str(d.pki.ca), "--pin", colons)
    assert json.loads((home / "device.json").read_text())["server_pin"] == pin_of(d.cert[0])


def test_tls_options_are_checked_before_anything_is_sent(tmp_path: Path, pki: Pki) -> None:
    for args in (
        ["--server", "http://127.0.0.1:9", "--ca-file", str(pki.ca)],  # TLS options on plain http
        ["--server", "https://127.0.0.1:9", "--pin", "sha256:1234"],  # not a SHA-256
        ["--server", "https://127.0.0.1:9", "--ca-file", str(tmp_path / "missing.pem")],
        ["--server", "https://127.0.0.1:9", "--ca-file", str(pki.folder / "ca.key")],  # not a certificate
    ):
        result = countersign("recorder", "enroll", "--code", "ABCD-EFGH-JKLM-NPQR", "--home", str(tmp_path / "h"),
                             *args, check=False)  # fmt: skip
        assert result.returncode == ExitCode.USAGE, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr, result.stderr
    client = countersign("evidence", "list", "--server", "https://127.0.0.1:9", "--pin", "nope",
                         env=cli_env(COUNTERSIGN_TOKEN="x"), check=False)  # fmt: skip
    assert client.returncode == ExitCode.USAGE and "64 hex digits" in client.stderr, client.stderr


def test_server_run_refuses_a_bad_certificate_or_key_in_one_line(tmp_path: Path, pki: Pki) -> None:
    cert, key = pki.issue("server-1", 1)
    _, other_key = pki.issue("server-2", 2)
    cases = {
        "go together": ["--tls-cert", str(cert)],
        "cannot read --tls-key": ["--tls-cert", str(cert), "--tls-key", str(tmp_path / "missing.key")],
        "is not the private key": ["--tls-cert", str(cert), "--tls-key", str(other_key)],
        "cannot use --tls-cert": ["--tls-cert", str(key), "--tls-key", str(key)],
    }
    for expected, args in cases.items():
        result = countersign("server", "run", "--data", str(tmp_path / "no-data"), "--port", "9", *args,
                             check=False, timeout=30)  # fmt: skip
        assert result.returncode == ExitCode.USAGE, (args, result.stderr)
        assert expected in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_hsts_only_on_https_answers(app: FastAPI) -> None:
    with TestClient(app) as plain:
        assert "strict-transport-security" not in plain.get("/healthz").headers
    with TestClient(app, base_url="https://testserver") as secure:
        assert secure.get("/healthz").headers["strict-transport-security"] == "max-age=31536000"


def _commands(command: object, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], object]]:
    if hasattr(command, "list_commands"):
        ctx = typer.Context(command)  # type: ignore[arg-type]
        for name in command.list_commands(ctx):
            yield from _commands(command.get_command(ctx, name), (*path, name))  # type: ignore[attr-defined]
    else:
        yield path, command


def test_every_client_command_with_server_takes_the_tls_options() -> None:
    """client/tls.add_tls_options runs at the end of each client module: a command added below it is caught here."""
    top = typer.main.get_command(cli_app)
    checked = 0
    for path, command in _commands(top):
        if path[0] not in ("admin", "evidence", "hold", "audit"):
            continue
        options = {opt for param in command.params for opt in getattr(param, "opts", [])}  # type: ignore[attr-defined]
        if "--server" in options:
            assert {"--ca-file", "--pin"} <= options, path
            checked += 1
    assert checked > 15
