#!/usr/bin/env python3
"""Verify a Countersign evidence bundle, offline.

    python verify.py BUNDLE.zip [--service-key HEX|PEMFILE]
                     [--key RECIPIENT.key | --passphrase-file FILE]
                     [--lang ja|en] [--json] [--extract DIR]
    python verify.py keygen RECIPIENT.key

This file ships, unchanged, inside every bundle. It needs Python 3.9 or later
and PyNaCl (`pip install pynacl`), nothing else: no part of Countersign. The
format it checks is written down in README.txt beside it (and in the service's
docs/evidence-bundle.md); the checks run in the order listed there, and the
first one that fails makes the bundle INVALID and is named: the file and what
about it does not hold.

What a VALID verdict means: every file is the one the service signed in
SHA256SUMS; the audio of every segment is what the recording device signed,
in order, back to a header that names the consent notice shown; the device
key is the one the service enrolled; and every custody event shown is in the
service's signed audit log. What it does not mean: that the service key is the
organisation's. Only a key obtained separately (--service-key, or comparing the
fingerprint printed here with the one the organisation publishes) says that.

Exit status: 0 valid (also a valid partial recording), 1 invalid, 2 usage.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import getpass
import hashlib
import io
import json
import os
import re
import struct
import sys
import unicodedata
import zipfile
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, NoReturn

try:
    import nacl.bindings as sodium
    import nacl.exceptions
    import nacl.pwhash
    import nacl.signing
    from nacl.public import PrivateKey, SealedBox
except ImportError:  # pragma: no cover - the one dependency; say how to get it instead of a traceback
    sys.stderr.write("verify.py needs PyNaCl: pip install pynacl\n")
    sys.exit(2)

# --------------------------------------------------------------------------- the format's constants

BUNDLE_FORMAT = "countersign-evidence-bundle/v1"
ENCRYPTION_FORMAT = "countersign-bundle-encryption/v1"
CIPHER = "xchacha20poly1305-secretstream"
KDF_ALG = "argon2id13"
ENROLMENT_TYPE = "countersign/device-enrolment/v1"
HEADER_DOMAIN = b"countersign/recording-header/v1\x00"
SEGMENT_DOMAIN = b"countersign/segment/v1\x00"
TREE_HEAD_DOMAIN = b"countersign/audit-tree-head/v1\n"
# RFC 8410: an Ed25519 SubjectPublicKeyInfo is this fixed prefix and the 32-byte key.
ED25519_SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")

SUMS = "SHA256SUMS"
SUMS_SIG = "SHA256SUMS.sig"
SUMS_TSR = "SHA256SUMS.tsr"
NOT_LISTED = (SUMS, SUMS_SIG, SUMS_TSR)  # the only members SHA256SUMS does not list

# Segment statement layout (141 bytes): domain (23) | version (1) | recording id (16) | index (4)
# | final (1) | sha256(ciphertext) (32) | sha256(plaintext FLAC) (32) | previous link (32).
STATEMENT = struct.Struct(">23sB16sIB32s32s32s")
STATEMENT_CIPHERTEXT_AT = 45
STATEMENT_PLAINTEXT_AT = 77
STATEMENT_PREVIOUS_AT = 109

ENTRY_FIELDS = ("seq", "at", "actor", "action", "target", "outcome", "purpose", "detail")
ACTION_ENROL = "api:device:enrol"
ACTION_UPLOAD = "api:segment:upload"
ENTRY_NAME = re.compile(r"^custody/entries/([0-9]{12})\.json$")
SEGMENT_NAME = re.compile(r"^segments/([0-9]{6,})\.(flac|statement|sig)$")
SUMS_LINE = re.compile(r"^([0-9a-f]{64})  (\S(?:.*\S)?)$")

# Argon2id parameters come from the bundle, so from whoever made it: cap them, so that a
# hostile file cannot make this machine allocate or compute without end (libsodium's
# "sensitive" level is 1 GiB and 4 passes; these limits are four times that).
MAX_MEMLIMIT = 4 << 30
MAX_OPSLIMIT = 16

EXIT_VALID, EXIT_INVALID, EXIT_USAGE = 0, 1, 2

# --------------------------------------------------------------------------- failure


class Check(Exception):
    """A check that failed: which file, and what about it does not hold (English and Japanese)."""

    def __init__(self, file: str, en: str, ja: str) -> None:
        super().__init__(f"{file}: {en}")
        self.file = file
        self.en = en
        self.ja = ja

    def reason(self, lang: str) -> str:
        return f"{self.file}: {self.ja if lang == 'ja' else self.en}"


class Usage(Exception):
    """The command line cannot be acted on (exit 2): no key for an encrypted bundle, and so on."""

    def __init__(self, en: str, ja: str) -> None:
        super().__init__(en)
        self.en = en
        self.ja = ja


def fail(file: str, en: str, ja: str) -> NoReturn:
    raise Check(file, en, ja)


# --------------------------------------------------------------------------- small readers
# Everything in a bundle is untrusted input until a signature covers it: each reader below
# either returns a value of the expected shape or raises Check naming the file.


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Two values for one key would let two readers of the same file see different things.
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _no_constants(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def parse_json(data: bytes, file: str) -> Any:
    try:
        return json.loads(data.decode("utf-8"), object_pairs_hook=_no_duplicate_keys, parse_constant=_no_constants)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        fail(file, f"not valid JSON ({exc})", f"JSON として読めません ({exc})")


def json_object(data: bytes, file: str) -> dict[str, Any]:
    value = parse_json(data, file)
    if not isinstance(value, dict):
        fail(file, "not a JSON object", "JSON オブジェクトではありません")
    return value


def text_field(obj: dict[str, Any], key: str, file: str, optional: bool = False) -> str:
    value = obj.get(key)
    if value is None and optional:
        return ""
    if not isinstance(value, str):
        fail(file, f"field {key!r} is missing or not text", f"項目 {key!r} がないか、文字列ではありません")
    return value


def int_field(obj: dict[str, Any], key: str, file: str) -> int:
    value = obj.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        fail(file, f"field {key!r} is missing or not an integer", f"項目 {key!r} がないか、整数ではありません")
    return value


def hex_bytes(value: Any, length: int, file: str, what: str) -> bytes:
    try:
        if isinstance(value, str) and value == value.lower():
            raw = bytes.fromhex(value)
            if len(raw) == length:
                return raw
    except ValueError:
        pass
    fail(file, f"{what} is not {length} bytes of lower-case hex", f"{what} が {length} バイトの16進数ではありません")


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def member(members: dict[str, bytes], name: str) -> bytes:
    try:
        return members[name]
    except KeyError:
        fail(name, "missing from the bundle", "バンドルにありません")


def ed25519_from_pem(pem: bytes, file: str) -> bytes:
    """The raw 32-byte key of an Ed25519 public key in SubjectPublicKeyInfo PEM (what openssl writes)."""
    lines = pem.decode("ascii", "replace").strip().splitlines()
    if len(lines) < 3 or lines[0] != "-----BEGIN PUBLIC KEY-----" or lines[-1] != "-----END PUBLIC KEY-----":
        fail(file, "not a PEM public key", "PEM 形式の公開鍵ではありません")
    try:
        der = base64.b64decode("".join(lines[1:-1]), validate=True)
    except (binascii.Error, ValueError):
        fail(file, "not a PEM public key (bad base64)", "PEM 形式の公開鍵ではありません (base64 が不正)")
    if len(der) != len(ED25519_SPKI_PREFIX) + 32 or not der.startswith(ED25519_SPKI_PREFIX):
        fail(file, "not an Ed25519 public key", "Ed25519 の公開鍵ではありません")
    return der[len(ED25519_SPKI_PREFIX) :]


def check_signature(key: bytes, message: bytes, signature: bytes, file: str, sig_file: str, signer: str) -> None:
    """Ed25519: `signature` (from sig_file) by `key` over the exact bytes of `file`."""
    signer_ja = {"service": "サービス", "device": "端末"}[signer]
    try:
        nacl.signing.VerifyKey(key).verify(message, signature)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, ValueError, TypeError):
        fail(
            file,
            f"{signer} signature invalid ({sig_file} is not the {signer} key's signature over this file)",
            f"{signer_ja}の署名が無効です ({sig_file} はこのファイルに対する{signer_ja}鍵の署名ではありません)",
        )


def fingerprint(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()


def grouped(hex_text: str) -> str:
    """A fingerprint in groups of four, to read aloud over the phone."""
    return " ".join(hex_text[i : i + 4] for i in range(0, len(hex_text), 4))


# --------------------------------------------------------------------------- reading zips


def read_zip(data: bytes, file: str) -> dict[str, bytes]:
    """Every file member of a zip, by name; a damaged zip is a failed check, not a traceback."""
    members: dict[str, bytes] = {}
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            for info in archive.infolist():
                if info.is_dir():
                    continue
                if info.filename in members:
                    fail(
                        file,
                        f"holds two members named {info.filename!r}",
                        f"同じ名前のファイル {info.filename!r} が2つあります",
                    )
                members[info.filename] = archive.read(info)
    except Check:
        raise
    except (zipfile.BadZipFile, zlib.error, NotImplementedError, RuntimeError, ValueError, EOFError, OSError) as exc:
        fail(file, f"not a readable zip file ({exc})", f"zip ファイルとして読めません ({exc})")
    return members


# --------------------------------------------------------------------------- 1. the outer layer


@dataclass
class Opener:
    """How to open an encrypted bundle: a recipient key file, or a passphrase (asked for lazily)."""

    private_key: bytes | None = None
    passphrase: Callable[[], bytes] | None = None


def derive_key(passphrase: bytes, kdf: dict[str, Any]) -> bytes:
    """The X25519 private key a passphrase stands for: Argon2id seed -> PrivateKey.from_seed."""
    file = "encryption.json"
    if kdf.get("alg") != KDF_ALG:
        fail(file, f"unknown key derivation {kdf.get('alg')!r}", f"未知の鍵導出方式です: {kdf.get('alg')!r}")
    salt = hex_bytes(kdf.get("salt"), nacl.pwhash.argon2id.SALTBYTES, file, "kdf.salt")
    opslimit, memlimit = int_field(kdf, "opslimit", file), int_field(kdf, "memlimit", file)
    if not (0 < opslimit <= MAX_OPSLIMIT and 0 < memlimit <= MAX_MEMLIMIT):
        fail(file, "unreasonable key derivation parameters", "鍵導出のパラメータが不当です")
    try:
        seed = nacl.pwhash.argon2id.kdf(32, passphrase, salt, opslimit=opslimit, memlimit=memlimit)
    except (nacl.exceptions.CryptoError, ValueError, TypeError) as exc:
        fail(file, f"key derivation failed ({exc})", f"鍵導出に失敗しました ({exc})")
    return bytes(PrivateKey.from_seed(seed))


def open_outer(outer: dict[str, bytes], opener: Opener) -> bytes:
    """Decrypt bundle.enc (libsodium secretstream under a sealed key) into the inner zip's bytes."""
    record = json_object(member(outer, "encryption.json"), "encryption.json")
    if record.get("format") != ENCRYPTION_FORMAT or record.get("cipher") != CIPHER:
        fail("encryption.json", "unknown encryption format", "未知の暗号化形式です")
    sealed = hex_bytes(record.get("sealed_key"), 32 + 48, "encryption.json", "sealed_key")
    chunk_size = int_field(record, "chunk_size", "encryption.json")
    if not 0 < chunk_size <= 1 << 30:
        fail("encryption.json", "unreasonable chunk_size", "chunk_size が不当です")
    kdf = record.get("kdf")
    if kdf is not None and not isinstance(kdf, dict):
        fail("encryption.json", "kdf is neither null nor an object", "kdf が null でもオブジェクトでもありません")

    if opener.private_key is not None:
        private = opener.private_key
    elif kdf is not None and opener.passphrase is not None:
        private = derive_key(opener.passphrase(), kdf)
    elif kdf is not None:
        raise Usage(
            "this bundle is encrypted to a passphrase: give --passphrase-file, or set COUNTERSIGN_BUNDLE_PASSPHRASE",
            "このバンドルはパスフレーズで暗号化されています。--passphrase-file を指定するか、"
            "COUNTERSIGN_BUNDLE_PASSPHRASE を設定してください",
        )
    else:
        raise Usage(
            "this bundle is encrypted to a recipient key: give --key RECIPIENT.key",
            "このバンドルは受領者の鍵で暗号化されています。--key 受領者鍵ファイル を指定してください",
        )
    try:
        stream_key = SealedBox(PrivateKey(private)).decrypt(sealed)
    except (nacl.exceptions.CryptoError, ValueError, TypeError):
        fail(
            "bundle.enc",
            "cannot be opened with this key or passphrase (it was encrypted to another, or altered)",
            "この鍵またはパスフレーズでは開けません (別の鍵あての暗号化か、改変されています)",
        )
    return decrypt_stream(member(outer, "bundle.enc"), stream_key, chunk_size)


def decrypt_stream(payload: bytes, key: bytes, chunk_size: int) -> bytes:
    """libsodium crypto_secretstream_xchacha20poly1305: header, chunks, the last tagged FINAL."""
    header_size = sodium.crypto_secretstream_xchacha20poly1305_HEADERBYTES
    overhead = sodium.crypto_secretstream_xchacha20poly1305_ABYTES
    final_tag = sodium.crypto_secretstream_xchacha20poly1305_TAG_FINAL
    state = sodium.crypto_secretstream_xchacha20poly1305_state()
    out = io.BytesIO()
    try:
        if len(payload) < header_size:
            fail("bundle.enc", "cut short (no stream header)", "途中で切れています (ヘッダーがありません)")
        sodium.crypto_secretstream_xchacha20poly1305_init_pull(state, payload[:header_size], key)
        at = header_size
        while True:
            chunk = payload[at : at + chunk_size + overhead]
            at += len(chunk)
            if not chunk:  # no FINAL chunk: someone cut the file
                fail("bundle.enc", "cut short (no final chunk)", "途中で切れています (最後のチャンクがありません)")
            message, tag = sodium.crypto_secretstream_xchacha20poly1305_pull(state, chunk, None)
            out.write(message)
            if tag == final_tag:
                break
    except (nacl.exceptions.CryptoError, ValueError, TypeError):
        fail("bundle.enc", "altered (authentication failed)", "改変されています (認証に失敗しました)")
    if at != len(payload):
        fail("bundle.enc", "has data after its final chunk", "最後のチャンクの後にデータがあります")
    return out.getvalue()


# --------------------------------------------------------------------------- what the checks find


@dataclass
class Findings:
    """What the checks established, in the order they established it (the report prints these)."""

    service_key: bytes = b""
    key_from_bundle: bool = True
    manifest: dict[str, Any] = field(default_factory=dict)
    status: dict[str, Any] = field(default_factory=dict)
    enrolment: dict[str, Any] = field(default_factory=dict)
    header: dict[str, Any] = field(default_factory=dict)
    notice_text: str = ""
    segments: int = 0
    final: bool = False
    complete: bool = False
    custody: list[dict[str, Any]] = field(default_factory=list)
    actors: dict[str, str] = field(default_factory=dict)
    tree_head: dict[str, Any] = field(default_factory=dict)
    timestamp: dict[str, Any] | None = None


# --------------------------------------------------------------------------- 2. SHA256SUMS


def service_key_of(members: dict[str, bytes], given: bytes | None, found: Findings) -> None:
    """The key everything is checked against: the one given on the command line, else the bundle's own."""
    if given is not None:  # service_key.pem is then just another listed file, checked in step 3
        found.service_key, found.key_from_bundle = given, False
    else:
        found.service_key = ed25519_from_pem(member(members, "service_key.pem"), "service_key.pem")
        found.key_from_bundle = True


def check_sums(members: dict[str, bytes], found: Findings) -> None:
    sums = member(members, SUMS)
    signature = member(members, SUMS_SIG)
    if found.key_from_bundle:  # say which key failed: the reader may have swapped in the published one
        try:
            nacl.signing.VerifyKey(found.service_key).verify(sums, signature)
        except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, ValueError, TypeError):
            fail(
                SUMS,
                f"service signature invalid ({SUMS_SIG} is not the signature of the key in service_key.pem)",
                f"サービスの署名が無効です ({SUMS_SIG} は service_key.pem の鍵による署名ではありません)",
            )
    else:
        check_signature(found.service_key, sums, signature, SUMS, SUMS_SIG, "service")
    listed: dict[str, str] = {}
    previous = ""
    try:
        lines = sums.decode("utf-8").split("\n")
    except UnicodeDecodeError:
        fail(SUMS, "not UTF-8 text", "UTF-8 のテキストではありません")
    if lines[-1] != "":
        fail(SUMS, "does not end with a newline", "改行で終わっていません")
    for number, line in enumerate(lines[:-1], 1):
        match = SUMS_LINE.match(line)
        if match is None:
            fail(
                SUMS,
                f"line {number} is not '<sha256>  <path>'",
                f"{number} 行目が「<sha256>  <パス>」の形ではありません",
            )
        digest, name = match.group(1), match.group(2)
        if name <= previous:  # sorted and unique, as the builder writes it
            fail(
                SUMS,
                f"line {number} ({name}) is out of order or repeated",
                f"{number} 行目 ({name}) の順序が乱れているか重複しています",
            )
        previous = name
        listed[name] = digest
    for name in sorted(set(listed) | set(members)):
        if name in NOT_LISTED:
            if name in listed:
                fail(SUMS, f"lists {name}, which it cannot cover", f"{name} を含めることはできません")
            continue
        if name not in members:
            fail(
                name, "listed in SHA256SUMS but missing from the bundle", "SHA256SUMS にありますがバンドルにありません"
            )
        if name not in listed:
            fail(name, "in the bundle but not listed in SHA256SUMS", "バンドルにありますが SHA256SUMS にありません")
        if hashlib.sha256(members[name]).hexdigest() != listed[name]:
            fail(name, "SHA-256 does not match SHA256SUMS", "SHA-256 が SHA256SUMS と一致しません")


# --------------------------------------------------------------------------- 3. the manifest


def check_manifest(members: dict[str, bytes], found: Findings) -> None:
    file = "manifest.json"
    manifest = json_object(member(members, file), file)
    if manifest.get("format") != BUNDLE_FORMAT:
        fail(file, f"format is not {BUNDLE_FORMAT}", f"format が {BUNDLE_FORMAT} ではありません")
    service = manifest.get("service")
    if not isinstance(service, dict):
        fail(file, "no service object", "service がありません")
    in_pem = ed25519_from_pem(member(members, "service_key.pem"), "service_key.pem")
    if in_pem != found.service_key:  # the by-hand steps check with service_key.pem: it must be the real key
        fail(
            "service_key.pem",
            "not the service key given with --service-key",
            "--service-key で指定したサービス鍵と異なります",
        )
    key = hex_bytes(service.get("public_key"), 32, file, "service.public_key")
    if key != in_pem:
        fail(
            file,
            "service.public_key is not the key in service_key.pem",
            "service.public_key が service_key.pem の鍵と異なります",
        )
    if service.get("fingerprint") != fingerprint(key):
        fail(
            file,
            "service.fingerprint is not SHA-256 of service.public_key",
            "service.fingerprint が公開鍵の SHA-256 と一致しません",
        )
    text_field(manifest, "recording_id", file)
    int_field(manifest, "segments", file)
    if not isinstance(manifest.get("complete"), bool):
        fail(file, "complete is not true or false", "complete が true/false ではありません")
    found.manifest = manifest
    found.status = json_object(member(members, "recording/status.json"), "recording/status.json")
    found.actors = {
        str(k): str(v) for k, v in json_object(member(members, "custody/actors.json"), "custody/actors.json").items()
    }


# --------------------------------------------------------------------------- 4. the enrolment


def read_header(members: dict[str, bytes]) -> dict[str, Any]:
    file = "recording/header.bin"
    data = member(members, file)
    if not data.startswith(HEADER_DOMAIN):
        fail(
            file,
            "does not start with countersign/recording-header/v1",
            "countersign/recording-header/v1 で始まっていません",
        )
    header = json_object(data[len(HEADER_DOMAIN) :], file)
    if not isinstance(header.get("consent"), dict):
        fail(file, "no consent record", "同意記録がありません")
    text_field(header, "recording_id", file)
    text_field(header, "device_id", file)
    return header


def check_enrolment(members: dict[str, bytes], found: Findings) -> None:
    file = "device/enrolment.json"
    data = member(members, file)
    check_signature(
        found.service_key, data, member(members, "device/enrolment.sig"), file, "device/enrolment.sig", "service"
    )
    enrolment = json_object(data, file)
    if enrolment.get("type") != ENROLMENT_TYPE:
        fail(file, f"type is not {ENROLMENT_TYPE}", f"type が {ENROLMENT_TYPE} ではありません")
    for name in ("device_id", "device_name", "site_id", "enrolled_at"):
        text_field(enrolment, name, file)
    int_field(enrolment, "audit_seq", file)
    enrolled_key = hex_bytes(enrolment.get("public_key"), 32, file, "public_key")
    device_key = ed25519_from_pem(member(members, "device/device_key.pem"), "device/device_key.pem")
    if device_key != enrolled_key:
        fail(
            "device/device_key.pem",
            "not the key the service enrolled (enrolment.json)",
            "サービスが登録した鍵 (enrolment.json) ではありません",
        )
    header = read_header(members)
    if header["device_id"] != enrolment["device_id"]:
        fail(
            "recording/header.bin",
            "the recording's device is not the enrolled device",
            "録音の端末が登録された端末ではありません",
        )
    if header["recording_id"] != found.manifest["recording_id"]:
        fail("manifest.json", "recording_id is not the header's", "recording_id がヘッダーと異なります")
    status = found.status
    if status.get("device_id") != enrolment["device_id"] or status.get("site_id") != enrolment["site_id"]:
        fail("recording/status.json", "device or site is not the enrolled one", "端末または拠点が登録内容と異なります")
    found.enrolment, found.header = enrolment, header


# --------------------------------------------------------------------------- 5. the header and consent


def check_header(members: dict[str, bytes], found: Findings) -> None:
    file = "recording/header.bin"
    device_key = hex_bytes(found.enrolment["public_key"], 32, "device/enrolment.json", "public_key")
    check_signature(
        device_key, members[file], member(members, "recording/header.sig"), file, "recording/header.sig", "device"
    )
    consent = found.header["consent"]
    for name in (
        "notice_id",
        "notice_sha256",
        "language",
        "method",
        "presented_at",
        "decided_at",
        "outcome",
        "staff_code",
    ):
        text_field(consent, name, file)
    notice = member(members, "consent/notice.txt")
    if hashlib.sha256(notice).hexdigest() != consent["notice_sha256"]:
        fail(
            "consent/notice.txt",
            "SHA-256 is not the notice hash in the consent record",
            "SHA-256 が同意記録の告知文ハッシュと一致しません",
        )
    try:
        found.notice_text = notice.decode("utf-8")
    except UnicodeDecodeError:
        fail("consent/notice.txt", "not UTF-8 text", "UTF-8 のテキストではありません")


# --------------------------------------------------------------------------- 6. the segment chain


def segment_files(members: dict[str, bytes], count: int) -> None:
    """Exactly segments 0..count-1, each with its audio, statement and signature; nothing else."""
    expected = {f"segments/{i:06d}.{kind}" for i in range(count) for kind in ("flac", "statement", "sig")}
    for name in sorted(n for n in members if n.startswith("segments/")):
        if name not in expected:
            fail(
                name,
                f"not one of the {count} segments the manifest counts",
                f"マニフェストが数える {count} 個のセグメントに含まれません",
            )
    for name in sorted(expected):
        member(members, name)


def check_segments(members: dict[str, bytes], found: Findings) -> None:
    count = found.manifest["segments"]
    if count < 0:
        fail("manifest.json", "segments is negative", "segments が負です")
    segment_files(members, count)
    device_key = bytes.fromhex(found.enrolment["public_key"])
    recording_id = found.header["recording_id"]
    previous_link = sha256(members["recording/header.bin"])  # segment 0 points back at the header
    final = False
    for index in range(count):
        name = f"segments/{index:06d}"
        statement = members[f"{name}.statement"]
        if len(statement) != STATEMENT.size:
            fail(f"{name}.statement", f"not {STATEMENT.size} bytes", f"{STATEMENT.size} バイトではありません")
        check_signature(device_key, statement, members[f"{name}.sig"], f"{name}.statement", f"{name}.sig", "device")
        domain, version, rid, st_index, st_final, _cipher, plain, prev = STATEMENT.unpack(statement)
        if domain != SEGMENT_DOMAIN or version != 1:
            fail(
                f"{name}.statement",
                "not a countersign/segment/v1 statement",
                "countersign/segment/v1 の宣言ではありません",
            )
        if rid.hex() != recording_id.replace("-", ""):
            fail(f"{name}.statement", "belongs to another recording", "別の録音のものです")
        if st_index != index:
            fail(
                f"{name}.statement",
                f"is segment {st_index}, in the place of segment {index}",
                f"セグメント {st_index} の宣言が {index} の位置にあります",
            )
        if final:
            fail(f"{name}.statement", "follows the final segment", "最終セグメントの後にあります")
        if prev != previous_link:
            before = "recording/header.bin" if index == 0 else f"segments/{index - 1:06d}.statement"
            fail(
                f"{name}.statement",
                f"previous link is not SHA-256 of {before}",
                f"前リンクが {before} の SHA-256 と一致しません",
            )
        if sha256(members[f"{name}.flac"]) != plain:
            fail(
                f"{name}.flac",
                "SHA-256 is not the plaintext hash the device signed",
                "SHA-256 が端末の署名した平文ハッシュと一致しません",
            )
        if st_final not in (0, 1):
            fail(f"{name}.statement", "final flag is neither 0 nor 1", "final フラグが 0 でも 1 でもありません")
        final = st_final == 1
        previous_link = sha256(statement)
    consented = found.header["consent"].get("outcome") == "given"
    if not consented and count:
        fail("manifest.json", "a recording without consent holds audio", "同意のない録音に音声があります")
    chain_complete = final or not consented  # an objection record has no audio and is complete as it is
    if found.manifest["complete"] != chain_complete:
        said, chain = json.dumps(found.manifest["complete"]), json.dumps(chain_complete)
        fail(
            "manifest.json",
            f"complete is {said}, but the segment chain says {chain}",
            f"complete が {said} ですが、セグメントのチェーンは {chain} です",
        )
    found.segments, found.final, found.complete = count, final, chain_complete


# --------------------------------------------------------------------------- 7. custody: the audit log


def leaf_hash(data: bytes) -> bytes:
    return sha256(b"\x00" + data)


def node_hash(left: bytes, right: bytes) -> bytes:
    return sha256(b"\x01" + left + right)


def verify_inclusion(leaf: bytes, index: int, size: int, path: list[bytes], root: bytes) -> bool:
    """RFC 9162 §2.1.3.2: does `path` lead from leaf `index` of a tree of `size` leaves to `root`?"""
    if not 0 <= index < size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while fn & 1 == 0 and fn != 0:  # climb past levels where this node has no right sibling
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def read_tree_head(members: dict[str, bytes], found: Findings) -> dict[str, Any]:
    file = "custody/tree_head.bin"
    data = member(members, file)
    check_signature(
        found.service_key, data, member(members, "custody/tree_head.sig"), file, "custody/tree_head.sig", "service"
    )
    fixed = len(TREE_HEAD_DOMAIN) + 8 + 32 + 32
    if len(data) <= fixed or not data.startswith(TREE_HEAD_DOMAIN):
        fail(
            file,
            "not a countersign/audit-tree-head/v1 message",
            "countersign/audit-tree-head/v1 のメッセージではありません",
        )
    (size,) = struct.unpack(">Q", data[len(TREE_HEAD_DOMAIN) : len(TREE_HEAD_DOMAIN) + 8])
    root = data[len(TREE_HEAD_DOMAIN) + 8 : len(TREE_HEAD_DOMAIN) + 40]
    chain = data[len(TREE_HEAD_DOMAIN) + 40 : fixed]
    try:
        at = data[fixed:].decode("ascii")
    except UnicodeDecodeError:
        fail(file, "its time is not ASCII", "時刻が ASCII ではありません")
    head = {"size": size, "root": root.hex(), "chain_hash": chain.hex(), "at": at}
    readable = json_object(member(members, "custody/tree_head.json"), "custody/tree_head.json")
    if readable != head:
        fail(
            "custody/tree_head.json",
            "does not agree with the signed tree_head.bin",
            "署名された tree_head.bin と一致しません",
        )
    return head


def read_entries(members: dict[str, bytes]) -> dict[int, dict[str, Any]]:
    entries: dict[int, dict[str, Any]] = {}
    for name in sorted(members):
        if not name.startswith("custody/entries/"):
            continue
        match = ENTRY_NAME.match(name)
        if match is None:
            fail(
                name,
                "not named custody/entries/<12-digit seq>.json",
                "custody/entries/<12桁の連番>.json の名前ではありません",
            )
        entry = json_object(members[name], name)
        if sorted(entry) != sorted(ENTRY_FIELDS):
            fail(
                name,
                "does not hold exactly the eight fields of an audit entry",
                "監査エントリの8項目ちょうどではありません",
            )
        if entry["seq"] != int(match.group(1)):
            fail(name, "its seq is not the one in its name", "seq がファイル名と一致しません")
        for key in ("at", "actor", "action", "outcome"):
            text_field(entry, key, name)
        entries[entry["seq"]] = entry
    return entries


def entry_file(seq: int) -> str:
    return f"custody/entries/{seq:012d}.json"


def check_proofs(members: dict[str, bytes], entries: dict[int, dict[str, Any]], head: dict[str, Any]) -> None:
    file = "custody/proofs.json"
    proofs = json_object(member(members, file), file)
    wanted = {f"{seq:012d}" for seq in entries}
    for key in sorted(set(proofs) - wanted):
        fail(
            file,
            f"a proof for {key}, whose entry is not in the bundle",
            f"バンドルにないエントリ {key} の証明があります",
        )
    root = bytes.fromhex(head["root"])
    for seq in sorted(entries):
        name = entry_file(seq)
        proof = proofs.get(f"{seq:012d}")
        if not isinstance(proof, dict):
            fail(name, "has no inclusion proof in custody/proofs.json", "custody/proofs.json に包含証明がありません")
        if int_field(proof, "leaf_index", file) != seq - 1 or int_field(proof, "tree_size", file) != head["size"]:
            fail(
                name,
                "its proof is not for leaf seq-1 of the signed tree head",
                "証明が署名済みツリーヘッドの葉 seq-1 に対するものではありません",
            )
        path = proof.get("path")
        if not isinstance(path, list):
            fail(file, f"{seq:012d}: path is not a list", f"{seq:012d}: path がリストではありません")
        hashes = [hex_bytes(p, 32, file, f"{seq:012d}: path") for p in path]
        if not verify_inclusion(leaf_hash(members[name]), seq - 1, head["size"], hashes, root):
            fail(name, "inclusion proof does not reach the tree head", "包含証明がツリーヘッドに到達しません")


def check_custody(members: dict[str, bytes], found: Findings) -> None:
    head = read_tree_head(members, found)
    entries = read_entries(members)
    check_proofs(members, entries, head)
    recording, device = found.header["recording_id"], found.enrolment["device_id"]
    about = {f"recording:{recording}", f"device:{device}"}
    for seq, entry in sorted(entries.items()):
        if entry["target"] not in about:
            fail(
                entry_file(seq),
                "is about neither this recording nor its device",
                "この録音にもその端末にも関係しません",
            )
    check_enrolment_entry(entries, found)
    check_uploads(members, entries, found)
    found.tree_head, found.custody = head, [entries[s] for s in sorted(entries)]


def check_enrolment_entry(entries: dict[int, dict[str, Any]], found: Findings) -> None:
    enrolment = found.enrolment
    seq = enrolment["audit_seq"]
    entry = entries.get(seq)
    if entry is None:
        fail(
            "device/enrolment.json",
            f"its audit entry (seq {seq}) is not in custody/entries",
            f"登録の監査エントリ (seq {seq}) が custody/entries にありません",
        )
    device = f"device:{enrolment['device_id']}"
    detail = entry["detail"] if isinstance(entry["detail"], dict) else {}
    if (
        entry["action"] != ACTION_ENROL
        or entry["actor"] != device
        or entry["target"] != device
        or entry["outcome"] != "allowed"
        or detail.get("site") != enrolment["site_id"]
        or detail.get("public_key") != enrolment["public_key"]
    ):
        fail(
            entry_file(seq),
            "does not record the enrolment in device/enrolment.json",
            "device/enrolment.json の登録を記録していません",
        )


def check_uploads(members: dict[str, bytes], entries: dict[int, dict[str, Any]], found: Findings) -> None:
    """Each segment's ciphertext hash is what the log recorded on upload, and no logged segment is missing."""
    target = f"recording:{found.header['recording_id']}"
    logged: dict[int, tuple[int, dict[str, Any]]] = {}
    for seq, entry in sorted(entries.items()):
        if entry["action"] == ACTION_UPLOAD and entry["target"] == target and entry["outcome"] == "allowed":
            detail = entry["detail"]
            if not isinstance(detail, dict) or not isinstance(detail.get("index"), int):
                fail(
                    entry_file(seq),
                    "an upload entry without a segment index",
                    "セグメント番号のないアップロード記録です",
                )
            logged[detail["index"]] = (seq, detail)
    for index in range(found.segments):
        name = f"segments/{index:06d}.statement"
        if index not in logged:
            fail(
                name,
                "the audit log excerpt does not record this segment being received",
                "監査ログの抜粋にこのセグメントの受信記録がありません",
            )
        seq, detail = logged[index]
        statement = members[name]
        ciphertext = statement[STATEMENT_CIPHERTEXT_AT:STATEMENT_PLAINTEXT_AT].hex()
        if detail.get("sha256") != ciphertext or detail.get("final") != (statement[44] == 1):
            fail(
                name,
                f"not the segment the log recorded on upload ({entry_file(seq)})",
                f"ログがアップロード時に記録したセグメントではありません ({entry_file(seq)})",
            )
    for index in sorted(i for i in logged if i >= found.segments):
        fail(
            entry_file(logged[index][0]),
            f"records segment {index} being received; the bundle does not hold it",
            f"セグメント {index} の受信を記録していますが、バンドルにありません",
        )


# --------------------------------------------------------------------------- 8. the time-stamp

OID_TSTINFO = bytes.fromhex("2a864886f70d0109100104")  # 1.2.840.113549.1.9.16.1.4 id-ct-TSTInfo
OID_SHA256 = bytes.fromhex("608648016503040201")  # 2.16.840.1.101.3.4.2.1


def der_items(data: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    """The (tag, content start, content end) of each DER element in data[start:end]."""
    items = []
    at = start
    while at < end:
        if at + 2 > end:
            raise ValueError("truncated")
        tag, length = data[at], data[at + 1]
        at += 2
        if length & 0x80:
            n = length & 0x7F
            if not 0 < n <= 4 or at + n > end:
                raise ValueError("bad length")
            length = int.from_bytes(data[at : at + n], "big")
            at += n
        if at + length > end:
            raise ValueError("truncated")
        items.append((tag, at, at + length))
        at += length
    return items


def der_child(data: bytes, parent: tuple[int, int, int], index: int, tag: int) -> tuple[int, int, int]:
    children = der_items(data, parent[1], parent[2])
    if index >= len(children) or children[index][0] != tag:
        raise ValueError("unexpected structure")
    return children[index]


def read_timestamp(reply: bytes) -> tuple[bytes, bytes, str]:
    """(hash algorithm OID, hashed message, genTime) from an RFC 3161 TimeStampResp (structure only)."""
    (resp,) = der_items(reply, 0, len(reply))
    token = der_child(reply, resp, 1, 0x30)  # ContentInfo
    signed = der_child(reply, der_child(reply, token, 1, 0xA0), 0, 0x30)  # SignedData
    encap = der_child(reply, signed, 2, 0x30)  # EncapsulatedContentInfo
    content_type = der_child(reply, encap, 0, 0x06)
    if reply[content_type[1] : content_type[2]] != OID_TSTINFO:
        raise ValueError("not a TSTInfo")
    octets = der_child(reply, der_child(reply, encap, 1, 0xA0), 0, 0x04)
    tst = der_items(reply, octets[1], octets[2])[0]
    imprint = der_child(reply, tst, 2, 0x30)
    algorithm = der_child(reply, der_child(reply, imprint, 0, 0x30), 0, 0x06)
    hashed = der_child(reply, imprint, 1, 0x04)
    gen_time = der_child(reply, tst, 4, 0x18)
    return (
        reply[algorithm[1] : algorithm[2]],
        reply[hashed[1] : hashed[2]],
        reply[gen_time[1] : gen_time[2]].decode("ascii"),
    )


def check_timestamp(members: dict[str, bytes], found: Findings) -> None:
    reply = members.get(SUMS_TSR)
    if reply is None:
        return
    try:
        algorithm, hashed, gen_time = read_timestamp(reply)
    except (ValueError, IndexError, UnicodeDecodeError):
        fail(SUMS_TSR, "not an RFC 3161 time-stamp reply", "RFC 3161 のタイムスタンプ応答ではありません")
    if algorithm != OID_SHA256 or hashed != sha256(members[SUMS]):
        fail(SUMS_TSR, "does not cover SHA-256(SHA256SUMS)", "SHA-256(SHA256SUMS) に対するタイムスタンプではありません")
    found.timestamp = {"gen_time": gen_time, "sha256": hashed.hex()}


# --------------------------------------------------------------------------- running the checks


def verify_inner(members: dict[str, bytes], given_key: bytes | None, found: Findings) -> None:
    """Checks 2-8 of the spec, in its order; raises Check at the first that fails."""
    service_key_of(members, given_key, found)
    check_sums(members, found)
    check_manifest(members, found)
    check_enrolment(members, found)
    check_header(members, found)
    check_segments(members, found)
    check_custody(members, found)
    check_timestamp(members, found)


def load_bundle(path: str, opener: Opener) -> dict[str, bytes]:
    """The inner bundle's members: decrypted first (check 1) if this is the outer zip."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise Usage(f"cannot read {path}: {exc.strerror}", f"{path} を読めません: {exc.strerror}") from None
    members = read_zip(data, os.path.basename(path))
    if "encryption.json" in members:
        members = read_zip(open_outer(members, opener), "bundle.enc")
    return members


# --------------------------------------------------------------------------- the report

TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "title": "Countersign evidence bundle",
        "VALID": "VALID",
        "PARTIAL": "VALID (PARTIAL)",
        "INVALID": "INVALID",
        "failed": "First failed check",
        "device": "Device",
        "site": "Site",
        "notice": "Consent notice",
        "language": "language",
        "method": "method",
        "presented": "presented",
        "decided": "decided",
        "outcome": "outcome",
        "staff": "staff code",
        "start": "Started",
        "end": "Ended",
        "segments": "Segments",
        "complete": "{n} of {n} complete",
        "none": "none (no audio: the customer objected)",
        "partial": "partial: segments 0..{k}; the recording was cut short (device lost)",
        "partial0": "none: no audio was captured (consent was given, no segment arrived); the recording ended",
        "reason": "reason",
        "case": "Case",
        "exported": "Exported",
        "by": "by",
        "purpose": "purpose",
        "custody": "Custody events",
        "tree_head": "Audit log tree head",
        "size": "size",
        "root": "root",
        "fingerprint": "Service key fingerprint (SHA-256)",
        "published": "published at",
        "warning": (
            "WARNING: the service key came only from this bundle. Compare this fingerprint with the one the "
            "organisation publishes, or verify again with --service-key."
        ),
        "given": "the service key given with --service-key",
        "timestamp": "Time-stamp (RFC 3161)",
        "ts_note": "covers SHA256SUMS; check its signature with openssl ts -verify (README.txt, step 10)",
        "no_ts": "none",
    },
    "ja": {
        "title": "Countersign 証拠バンドル",
        "VALID": "有効 (VALID)",
        "PARTIAL": "有効・一部のみ (VALID (PARTIAL))",
        "INVALID": "無効 (INVALID)",
        "failed": "最初に不合格となった検査",
        "device": "端末",
        "site": "拠点",
        "notice": "同意告知",
        "language": "言語",
        "method": "方法",
        "presented": "提示",
        "decided": "回答",
        "outcome": "結果",
        "staff": "職員コード",
        "start": "開始",
        "end": "終了",
        "segments": "セグメント",
        "complete": "{n} 件中 {n} 件、完全",
        "none": "なし (音声なし: 利用者が録音を拒否しました)",
        "partial": "一部のみ: セグメント 0..{k}。録音は途中で途切れています (端末の喪失)",
        "partial0": "なし: 音声は記録されていません (同意はあり、セグメントが届く前に録音が終了しました)",
        "reason": "理由",
        "case": "事件番号",
        "exported": "書き出し",
        "by": "実施者",
        "purpose": "目的",
        "custody": "保管の記録 (監査ログ)",
        "tree_head": "監査ログのツリーヘッド",
        "size": "件数",
        "root": "ルート",
        "fingerprint": "サービス鍵のフィンガープリント (SHA-256)",
        "published": "公開場所",
        "warning": (
            "警告: サービス鍵はこのバンドルに含まれていたものだけです。このフィンガープリントを、"
            "組織が公開しているものと照合してください (または --service-key を指定して再度検証してください)。"
        ),
        "given": "--service-key で指定されたサービス鍵",
        "timestamp": "タイムスタンプ (RFC 3161)",
        "ts_note": "SHA256SUMS に対するもの。署名は openssl ts -verify で確認してください (README.ja.txt 手順10)",
        "no_ts": "なし",
    },
}


def shown(value: Any, keep_newlines: bool = False) -> str:
    """Text from the bundle made safe for a terminal: control and format characters become escapes.

    A bundle is untrusted until verified, and even a valid one carries text typed by people
    (names, purposes): an escape sequence or a right-to-left override must not change what
    the report appears to say.
    """
    out = []
    for ch in "" if value is None else str(value):
        if keep_newlines and ch in "\n\t":
            out.append(ch)
        elif unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Zl", "Zp"):
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return "".join(out)


def verdict_of(found: Findings, failure: Check | None) -> str:
    if failure is not None:
        return "INVALID"
    return "VALID" if found.complete else "VALID (PARTIAL)"


def as_json(found: Findings, failure: Check | None) -> dict[str, Any]:
    verdict = verdict_of(found, failure)
    out: dict[str, Any] = {"verdict": verdict, "valid": failure is None, "partial": verdict == "VALID (PARTIAL)"}
    if found.service_key:
        out["service_key"] = {
            "public_key": found.service_key.hex(),
            "fingerprint": fingerprint(found.service_key),
            "from_bundle_only": found.key_from_bundle,
        }
    if failure is not None:
        out["failure"] = {"file": failure.file, "check": failure.en, "check_ja": failure.ja}
        return out
    header, manifest, status, enrolment = found.header, found.manifest, found.status, found.enrolment
    out.update(
        {
            "recording_id": header["recording_id"],
            "device": {"id": enrolment["device_id"], "name": enrolment["device_name"]},
            "site": {"id": enrolment["site_id"], "name": status.get("site_name")},
            "consent": dict(header["consent"], notice_text=found.notice_text),
            "started_at": header.get("started_at"),
            "ended_at": status.get("ended_at"),
            "segments": {"count": found.segments, "final": found.final, "complete": found.complete},
            "partial_reason": manifest.get("partial_reason"),
            "export": {
                k: manifest.get(k)
                for k in ("exported_at", "exported_by", "exported_by_id", "case_ref", "purpose", "recipient")
            },
            "custody": [dict(e, actor_name=found.actors.get(e["actor"], e["actor"])) for e in found.custody],
            "tree_head": found.tree_head,
            "published_at": (manifest.get("service") or {}).get("published_at"),
            "timestamp": found.timestamp,
        }
    )
    return out


def as_text(found: Findings, failure: Check | None, lang: str) -> str:
    t = TEXTS[lang]
    verdict = verdict_of(found, failure)
    lines = [f"{t['title']}: {t[{'VALID': 'VALID', 'VALID (PARTIAL)': 'PARTIAL', 'INVALID': 'INVALID'}[verdict]]}"]
    if failure is not None:
        lines.append(f"{t['failed']}: {shown(failure.reason(lang))}")
    else:
        lines += report_body(found, t)
    if found.service_key:
        lines.append("")
        lines.append(f"{t['fingerprint']}: {grouped(fingerprint(found.service_key))}")
        if found.key_from_bundle:
            lines.append(t["warning"])
        else:
            lines.append(f"  ({t['given']})")
    return "\n".join(lines) + "\n"


def report_body(found: Findings, t: dict[str, str]) -> list[str]:
    header, manifest, status, enrolment = found.header, found.manifest, found.status, found.enrolment
    consent = header["consent"]
    lines = [
        "",
        f"{t['device']}: {shown(enrolment['device_name'])} ({shown(enrolment['device_id'])})",
        f"{t['site']}: {shown(status.get('site_name'))} ({shown(enrolment['site_id'])})",
        f"{t['notice']}: {shown(consent.get('notice_id'))} v{shown(consent.get('notice_version'))}",
        f"  {t['language']}: {shown(consent['language'])}, {t['method']}: {shown(consent['method'])}",
        f"  {t['presented']}: {shown(consent['presented_at'])}, {t['decided']}: {shown(consent['decided_at'])}",
        f"  {t['outcome']}: {shown(consent['outcome'])}, {t['staff']}: {shown(consent['staff_code'])}",
        "  ----",
    ]
    lines += [f"  | {line}" for line in shown(found.notice_text, keep_newlines=True).splitlines()]
    lines.append("  ----")
    lines.append(f"{t['start']}: {shown(header.get('started_at'))}")
    lines.append(f"{t['end']}: {shown(status.get('ended_at'))}")
    if found.complete and found.segments:
        lines.append(f"{t['segments']}: {t['complete'].format(n=found.segments)}")
    elif found.complete:
        lines.append(f"{t['segments']}: {t['none']}")
    else:
        partial = t["partial"].format(k=found.segments - 1) if found.segments else t["partial0"]
        lines.append(f"{t['segments']}: {partial}")
        lines.append(f"  {t['reason']}: {shown(manifest.get('partial_reason'))}")
    lines.append(
        f"{t['exported']}: {shown(manifest.get('exported_at'))}, {t['by']}: {shown(manifest.get('exported_by'))}"
        f" ({shown(manifest.get('exported_by_id'))}), {t['case']}: {shown(manifest.get('case_ref'))},"
        f" {t['purpose']}: {shown(manifest.get('purpose'))}"
    )
    lines.append(f"{t['custody']}:")
    for e in found.custody:
        name = found.actors.get(e["actor"], e["actor"])
        purpose = f" {t['purpose']}: {shown(e['purpose'])}" if e.get("purpose") else ""
        lines.append(f"  {shown(e['at'])}  {shown(name)}  {shown(e['action'])}  {shown(e['outcome'])}{purpose}")
    head = found.tree_head
    lines.append(f"{t['tree_head']}: {t['size']} {head['size']}, {t['root']} {head['root']}, {shown(head['at'])}")
    if found.timestamp is not None:
        lines.append(f"{t['timestamp']}: {shown(found.timestamp['gen_time'])}, {t['ts_note']}")
    else:
        lines.append(f"{t['timestamp']}: {t['no_ts']}")
    published = (manifest.get("service") or {}).get("published_at")
    if published:
        lines.append(f"{t['published']}: {shown(published)}")
    return lines


# --------------------------------------------------------------------------- extraction


def safe_name(name: str) -> bool:
    """A member name that stays inside the target folder on any system."""
    parts = name.split("/")
    return not (
        not name
        or name.startswith("/")
        or "\\" in name
        or ":" in name
        or any(part in ("", ".", "..") for part in parts)
    )


def extract(members: dict[str, bytes], target: str) -> None:
    if os.path.exists(target) and (not os.path.isdir(target) or os.listdir(target)):
        raise Usage(f"{target} exists and is not an empty folder", f"{target} は空のフォルダーではありません")
    for name in members:
        if not safe_name(name):
            fail(name, "a name that would leave the extraction folder", "展開先フォルダーの外を指す名前です")
    os.makedirs(target, mode=0o700, exist_ok=True)  # the audio is personal data: owner only
    for name, data in sorted(members.items()):
        path = os.path.join(target, *name.split("/"))
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as handle:
            handle.write(data)


# --------------------------------------------------------------------------- keys and passphrases


def read_service_key(value: str) -> bytes:
    """--service-key: 64 hex digits, or a PEM file (as service_key.pem, or as the organisation publishes it)."""
    if re.fullmatch(r"[0-9a-fA-F]{64}", value.strip()):
        return bytes.fromhex(value.strip())
    try:
        with open(value, "rb") as handle:
            pem = handle.read()
    except OSError:
        raise Usage(
            "--service-key: neither 64 hex digits nor a readable PEM file",
            "--service-key: 64桁の16進数でも、読める PEM ファイルでもありません",
        ) from None
    try:
        return ed25519_from_pem(pem, value)
    except Check as exc:
        raise Usage(f"--service-key: {exc.en}", f"--service-key: {exc.ja}") from None


def read_recipient_key(path: str) -> bytes:
    try:
        with open(path, encoding="ascii") as handle:
            text = handle.read().strip()
        key = bytes.fromhex(text)
        if len(key) == 32:
            return key
    except (OSError, ValueError):
        pass
    raise Usage(
        f"{path}: not a recipient key file (64 hex digits, as `verify.py keygen` writes)",
        f"{path}: 受領者の鍵ファイルではありません (`verify.py keygen` が書く64桁の16進数)",
    )


def strip_newline(data: bytes) -> bytes:
    # A passphrase file written by an editor or `echo` ends with a newline that is not part of it.
    if data.endswith(b"\r\n"):
        return data[:-2]
    return data[:-1] if data.endswith(b"\n") else data


def passphrase_source(path: str | None) -> Callable[[], bytes]:
    """Where the passphrase comes from: --passphrase-file, else the environment, else a prompt."""

    def read() -> bytes:
        if path is not None:
            try:
                with open(path, "rb") as handle:
                    return strip_newline(handle.read())
            except OSError as exc:
                raise Usage(f"cannot read {path}: {exc.strerror}", f"{path} を読めません: {exc.strerror}") from None
        env = os.environ.get("COUNTERSIGN_BUNDLE_PASSPHRASE")
        if env is not None:
            return env.encode("utf-8")
        if sys.stdin is not None and sys.stdin.isatty():
            return getpass.getpass("Passphrase / パスフレーズ: ").encode("utf-8")
        raise Usage(
            "this bundle is encrypted to a passphrase: give --passphrase-file, or set COUNTERSIGN_BUNDLE_PASSPHRASE",
            "このバンドルはパスフレーズで暗号化されています。--passphrase-file を指定するか、"
            "COUNTERSIGN_BUNDLE_PASSPHRASE を設定してください",
        )

    return read


def keygen(path: str, lang: str) -> int:
    """Make a recipient key pair: the private half to `path` (0600, never overwritten), the public half printed."""
    key = PrivateKey.generate()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        say(lang, f"{path} exists: not overwritten", f"{path} は既にあります。上書きしません")
        return EXIT_USAGE
    except OSError as exc:
        say(lang, f"cannot write {path}: {exc.strerror}", f"{path} に書き込めません: {exc.strerror}")
        return EXIT_USAGE
    with open(fd, "w", encoding="ascii") as handle:
        handle.write(bytes(key).hex() + "\n")
    say(
        lang,
        f"Private key written to {path} (keep it; it opens bundles encrypted to you). Your public key:",
        f"秘密鍵を {path} に書き込みました (大切に保管してください。あなたあての証拠バンドルを開く鍵です)。公開鍵:",
    )
    print(bytes(key.public_key).hex())
    return EXIT_VALID


# --------------------------------------------------------------------------- the command line


def say(lang: str, en: str, ja: str) -> None:
    sys.stderr.write((ja if lang == "ja" else en) + "\n")


def default_lang() -> str:
    for name in ("LC_ALL", "LC_MESSAGES", "LANG"):
        value = os.environ.get(name)
        if value:
            return "ja" if value.startswith("ja") else "en"
    return "en"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="verify.py",
        description="Verify a Countersign evidence bundle (encrypted or not). "
        "`verify.py keygen FILE` makes a recipient key.",
    )
    p.add_argument("bundle", metavar="BUNDLE.zip", help="the bundle: the encrypted outer zip or the inner zip")
    p.add_argument("--service-key", metavar="HEX|PEMFILE", help="the organisation's published service key")
    opening = p.add_mutually_exclusive_group()
    opening.add_argument("--key", metavar="RECIPIENT.key", help="your private key file (from keygen)")
    opening.add_argument("--passphrase-file", metavar="FILE", help="a file holding the passphrase")
    p.add_argument("--lang", choices=("ja", "en"), help="report language (default: from LANG)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--extract", metavar="DIR", help="write the inner bundle's files into DIR (for checking by hand)")
    return p


def run_keygen(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="verify.py keygen", description="Make a recipient key pair.")
    p.add_argument("file", metavar="FILE", help="where to write the private key (must not exist)")
    p.add_argument("--lang", choices=("ja", "en"))
    args = p.parse_args(argv)
    return keygen(args.file, args.lang or default_lang())


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    for stream in (sys.stdout, sys.stderr):  # a report must print even where the terminal cannot show Japanese
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")
    if argv[:1] == ["keygen"]:
        return run_keygen(argv[1:])
    args = parser().parse_args(argv)
    lang: str = args.lang or default_lang()
    try:
        given = read_service_key(args.service_key) if args.service_key else None
        opener = Opener(
            private_key=read_recipient_key(args.key) if args.key else None,
            passphrase=passphrase_source(args.passphrase_file),
        )
        found = Findings()
        failure: Check | None = None
        members: dict[str, bytes] = {}
        try:
            members = load_bundle(args.bundle, opener)
            verify_inner(members, given, found)
        except Check as exc:
            failure = exc
        if args.extract and members:
            extract(members, args.extract)
    except Usage as exc:
        say(lang, exc.en, exc.ja)
        return EXIT_USAGE
    except Check as exc:  # from extraction: a name that would escape the folder
        failure = exc
    if args.json:
        print(json.dumps(as_json(found, failure), ensure_ascii=False, indent=2, sort_keys=True))
    else:
        sys.stdout.write(as_text(found, failure, lang))
    return EXIT_INVALID if failure is not None else EXIT_VALID


if __name__ == "__main__":
    sys.exit(main())
