"""The device's home directory: identity, keys, token, notices. Every file is 0600.

Layout::

    device.json          server URL, device id, site; server_pin: the SHA-256 of the server's
                         TLS certificate, taken at enrolment (https only; every connection checks it)
    ca.pem               the private CA the server's certificate chains to (if enrolled with --ca-file)
    signing.key          Ed25519 seed (hex); generated here, never sent anywhere
    token                device bearer token
    evidence_keys.json   the service's evidence public keys as GET /v1/keys last listed them: key id ->
                         {public_key (X25519, hex), state, custody, seal_to, valid_until}; recordings are
                         sealed to every key with seal_to (an older home's {key id: hex} means seal_to)
    notices.json         the site's consent notices (with each one's audio_sha256, if it has a reading)
    notice-audio/        ID.LANG.vN.wav: the notices' spoken readings, each checked against its listed
                         SHA-256 when fetched (recorder.notice_audio)
    spool/               encrypted segments waiting to upload (see recorder.spool)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nacl.exceptions
import nacl.public
import nacl.signing

from consent.catalogue import Notice
from recorder.errors import NoEvidenceKey, NotEnrolled


def write_private(path: Path, content: str | bytes) -> None:
    """Write a file only its owner can read, atomically and durably (text as UTF-8)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(content.encode() if isinstance(content, str) else content)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@dataclass(frozen=True)
class DeviceHome:
    root: Path

    @property
    def spool_dir(self) -> Path:
        return self.root / "spool"

    def _read_json(self, name: str) -> Any:
        path = self.root / name
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise NotEnrolled(f"{path} is missing") from exc
        except ValueError as exc:
            raise NotEnrolled(f"{path} is not valid JSON") from exc

    def save(
        self,
        config: dict[str, Any],
        seed: bytes,
        token: str,
        keys: dict[str, Any],
        notices: list[dict[str, Any]],
        ca_pem: str | None = None,
    ) -> None:
        if ca_pem is not None:
            write_private(self.root / "ca.pem", ca_pem)
        write_private(self.root / "signing.key", seed.hex())
        write_private(self.root / "token", token)
        self.save_keys(keys)
        write_private(self.root / "notices.json", json.dumps(notices, ensure_ascii=False, indent=2))
        write_private(self.root / "device.json", json.dumps(config, indent=2))  # last: marks enrolment complete

    def save_keys(self, keys: dict[str, Any]) -> None:
        """key id -> public key hex, or -> the entry GET /v1/keys gave for it (with its seal_to flag)."""
        write_private(self.root / "evidence_keys.json", json.dumps(keys, indent=2))

    def ca_file(self) -> Path | None:
        """The private CA this device trusts for its server, if it was enrolled with one."""
        path = self.root / "ca.pem"
        return path if path.exists() else None

    def is_enrolled(self) -> bool:
        return (self.root / "device.json").exists()

    def config(self) -> dict[str, Any]:
        data: dict[str, Any] = self._read_json("device.json")
        return data

    def token(self) -> str:
        try:
            return (self.root / "token").read_text().strip()
        except FileNotFoundError as exc:
            raise NotEnrolled("device token missing") from exc

    def signing_key(self) -> nacl.signing.SigningKey:
        try:
            return nacl.signing.SigningKey(bytes.fromhex((self.root / "signing.key").read_text().strip()))
        except (FileNotFoundError, ValueError) as exc:
            raise NotEnrolled("device signing key missing or damaged") from exc

    def key_entries(self) -> dict[str, dict[str, Any]]:
        """Every key this home holds, as {key id: {public_key, state, seal_to, valid_until, ...}}."""
        path = self.root / "evidence_keys.json"
        try:
            raw = json.loads(path.read_text())
            entries = {
                str(kid): {"public_key": value, "state": "current", "seal_to": True}
                if isinstance(value, str)
                else {**value, "seal_to": bool(value.get("seal_to", True))}
                for kid, value in raw.items()
            }
        except FileNotFoundError as exc:
            raise NoEvidenceKey(f"{path} is missing") from exc
        except (ValueError, TypeError, AttributeError) as exc:
            raise NoEvidenceKey(f"{path} is damaged ({exc})") from exc
        return entries

    def key_entries_or_none(self) -> dict[str, dict[str, Any]] | None:
        try:
            return self.key_entries()
        except NoEvidenceKey:
            return None

    def evidence_keys(self) -> dict[str, nacl.public.PublicKey]:
        """The keys recordings are sealed to (seal_to); fail closed, naming the keys, if there is none."""
        path = self.root / "evidence_keys.json"
        entries = self.key_entries()
        try:
            keys = {
                kid: nacl.public.PublicKey(bytes.fromhex(e["public_key"])) for kid, e in entries.items() if e["seal_to"]
            }
        except (KeyError, ValueError, TypeError, nacl.exceptions.CryptoError) as exc:
            raise NoEvidenceKey(f"{path} is damaged ({exc})") from exc
        if not keys:
            raise NoEvidenceKey(unusable(entries) if entries else f"{path} lists no key")
        return keys

    def notices(self) -> list[Notice]:
        return [Notice.from_dict(n) for n in self._read_json("notices.json")]


def unusable(entries: dict[str, dict[str, Any]]) -> str:
    """Why none of these keys may be sealed to, naming each ("k1 is retired (since ...)")."""
    reasons = []
    for kid, entry in sorted(entries.items()):
        state = entry.get("state") or "not valid"
        since = f" since {entry['valid_until']}" if entry.get("valid_until") else ""
        what = "superseded by a key rotation" if state == "previous" else state
        reasons.append(f"evidence key {kid} is {what}{since}")
    return "; ".join(reasons)
