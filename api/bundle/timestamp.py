"""RFC 3161 time-stamps of a bundle's SHA256SUMS: a third party's signed word that it existed by then.

The bundle builder asks the time-stamp authority at COUNTERSIGN_TSA_URL (if set) for a token
over SHA-256(SHA256SUMS) and stores the whole reply as SHA256SUMS.tsr; anyone checks it later with
`openssl ts -verify -digest <hex> -in SHA256SUMS.tsr -CAfile <the TSA's CA>`.

Only encoding and a light reading happen here, no cryptography: the request is a fixed DER
structure written by hand (RFC 3161 §2.4.1), and the reply is walked just far enough to refuse
what is plainly not a time-stamp for us: an HTTP error, the wrong content type, a PKIStatus other
than granted / grantedWithMods, a granted reply without a token, or a token that names neither
our digest nor our nonce. The token's CMS signature is for `openssl ts -verify` to check.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import httpx

SHA256_OID = (2, 16, 840, 1, 101, 3, 4, 2, 1)
REQUEST_TYPE = "application/timestamp-query"
REPLY_TYPES = ("application/timestamp-reply", "application/timestamp-response")  # the RFC's; a common variant
MAX_REPLY_BYTES = 1024 * 1024
NONCE_BITS = 64
GRANTED, GRANTED_WITH_MODS = 0, 1
_STATUS = {
    0: "granted",
    1: "grantedWithMods",
    2: "rejection",
    3: "waiting",
    4: "revocationWarning",
    5: "revocationNotification",
}
_FAILURES = {  # PKIFailureInfo bit -> name (RFC 3161 §2.4.2)
    0: "badAlg",
    2: "badRequest",
    5: "badDataFormat",
    14: "timeNotAvailable",
    15: "unacceptedPolicy",
    16: "unacceptedExtension",
    17: "addInfoNotAvailable",
    25: "systemFailure",
}

_BOOLEAN, _INTEGER, _BIT_STRING, _OCTET_STRING, _NULL, _OID, _UTF8, _SEQUENCE = (
    0x01,
    0x02,
    0x03,
    0x04,
    0x05,
    0x06,
    0x0C,
    0x30,
)


class TimestampError(Exception):
    """No usable time-stamp: the authority could not be reached, refused, or answered something else."""


# --- DER, just enough -------------------------------------------------------------------------------------


def _tlv(tag: int, content: bytes) -> bytes:
    length = len(content)
    if length < 0x80:
        return bytes([tag, length]) + content
    size = (length.bit_length() + 7) // 8
    return bytes([tag, 0x80 | size]) + length.to_bytes(size, "big") + content


def _integer(value: int) -> bytes:
    if value < 0:
        raise ValueError("only non-negative integers are encoded here")
    return _tlv(_INTEGER, value.to_bytes(value.bit_length() // 8 + 1, "big"))  # a leading 0 byte keeps it positive


def _oid(arcs: tuple[int, ...]) -> bytes:
    body = bytearray([40 * arcs[0] + arcs[1]])
    for arc in arcs[2:]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body.extend(reversed(chunk))
    return _tlv(_OID, bytes(body))


def timestamp_request(digest: bytes, nonce: int) -> bytes:
    """DER of an RFC 3161 TimeStampReq: v1, SHA-256 `digest`, `nonce`, certReq TRUE."""
    if len(digest) != 32:
        raise ValueError(f"a SHA-256 digest is 32 bytes, not {len(digest)}")
    if not 0 <= nonce < 2**160:
        raise ValueError("the nonce must be a non-negative integer below 2**160")
    algorithm = _tlv(_SEQUENCE, _oid(SHA256_OID) + _tlv(_NULL, b""))
    imprint = _tlv(_SEQUENCE, algorithm + _tlv(_OCTET_STRING, digest))
    return _tlv(_SEQUENCE, _integer(1) + imprint + _integer(nonce) + _tlv(_BOOLEAN, b"\xff"))


@dataclass(frozen=True)
class _Element:
    tag: int
    content: bytes
    end: int  # offset just past it


def _read(data: bytes, offset: int = 0) -> _Element:
    """One DER element at `offset` (low tag numbers and definite lengths only, which is all DER has here)."""
    if offset + 2 > len(data):
        raise TimestampError("the reply is not DER: it ends inside an element")
    tag, first = data[offset], data[offset + 1]
    if tag & 0x1F == 0x1F:
        raise TimestampError("the reply is not a TimeStampResp: unexpected high tag number")
    start = offset + 2
    if first < 0x80:
        length = first
    else:
        size = first & 0x7F
        if size == 0 or size > 4 or start + size > len(data):
            raise TimestampError("the reply is not DER: bad length")
        length = int.from_bytes(data[start : start + size], "big")
        start += size
    end = start + length
    if end > len(data):
        raise TimestampError("the reply is not DER: an element runs past the end")
    return _Element(tag, data[start:end], end)


def _children(content: bytes) -> list[_Element]:
    items, offset = [], 0
    while offset < len(content):
        item = _read(content, offset)
        items.append(item)
        offset = item.end
    return items


@dataclass(frozen=True)
class _Status:
    code: int
    text: str
    failures: tuple[str, ...]
    token: bytes | None


def _parse_reply(reply: bytes) -> _Status:
    """TimeStampResp ::= SEQUENCE { status PKIStatusInfo, timeStampToken ContentInfo OPTIONAL }."""
    outer = _read(reply)
    if outer.tag != _SEQUENCE or outer.end != len(reply):
        raise TimestampError("the reply is not a TimeStampResp (one DER SEQUENCE)")
    parts = _children(outer.content)
    if not parts or parts[0].tag != _SEQUENCE or len(parts) > 2:
        raise TimestampError("the reply is not a TimeStampResp: no PKIStatusInfo")
    info = _children(parts[0].content)
    if not info or info[0].tag != _INTEGER or not 1 <= len(info[0].content) <= 4:
        raise TimestampError("the reply is not a TimeStampResp: no PKIStatus")
    code = int.from_bytes(info[0].content, "big", signed=True)
    text = ""
    failures: tuple[str, ...] = ()
    for item in info[1:]:
        if item.tag == _SEQUENCE:  # PKIFreeText: UTF8Strings
            text = "; ".join(
                s.content.decode("utf-8", errors="replace") for s in _children(item.content) if s.tag == _UTF8
            )
        elif item.tag == _BIT_STRING and item.content:
            bits = int.from_bytes(item.content[1:], "big")
            width = 8 * (len(item.content) - 1)
            failures = tuple(_FAILURES.get(bit, f"bit {bit}") for bit in range(width) if bits >> (width - 1 - bit) & 1)
    token = parts[1].content if len(parts) == 2 else None
    return _Status(code, text, failures, token)


# --- asking an authority ----------------------------------------------------------------------------------


def _where(url: str) -> str:
    """The authority as errors name it: never a password that the URL may carry."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        parsed = None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host:
        return "the time-stamp authority (COUNTERSIGN_TSA_URL is not an http(s) URL)"
    port = f":{parsed.port}" if parsed.port else ""
    return f"the time-stamp authority {parsed.scheme}://{parsed.host}{port}{parsed.path}"


def fetch_timestamp(url: str, digest: bytes, timeout: float = 10) -> bytes:
    """The DER TimeStampResp that the RFC 3161 authority at `url` gives for the SHA-256 `digest`.

    Raises TimestampError unless the authority answered 200, as application/timestamp-reply,
    with status granted (0) or grantedWithMods (1), and a token naming `digest` and our nonce.
    """
    nonce = secrets.randbits(NONCE_BITS)
    request = timestamp_request(digest, nonce)
    where = _where(url)
    try:
        with httpx.stream(
            "POST",
            url,
            content=request,
            headers={"Content-Type": REQUEST_TYPE, "Accept": REPLY_TYPES[0]},
            timeout=timeout,
        ) as response:
            if response.status_code != 200:
                raise TimestampError(f"{where} answered HTTP {response.status_code}")
            kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
            if kind not in REPLY_TYPES:
                raise TimestampError(
                    f"{where} answered {kind or 'no content type'!r}, not {REPLY_TYPES[0]!r}: is this a TSA URL?"
                )
            reply = bytearray()
            for chunk in response.iter_bytes():
                reply += chunk
                if len(reply) > MAX_REPLY_BYTES:
                    raise TimestampError(f"{where} answered more than {MAX_REPLY_BYTES} bytes")
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise TimestampError(f"{where} could not be reached: {exc.__class__.__name__}: {exc}") from None
    data = bytes(reply)
    try:
        status = _parse_reply(data)
    except TimestampError as exc:
        raise TimestampError(f"{where}: {exc}") from None
    if status.code not in (GRANTED, GRANTED_WITH_MODS):
        name = _STATUS.get(status.code, f"status {status.code}")
        said = f": {status.text!r}" if status.text else ""
        why = f" ({', '.join(status.failures)})" if status.failures else ""
        raise TimestampError(f"{where} refused the time-stamp: {name}{said}{why}")
    if not status.token:
        raise TimestampError(f"{where} granted the time-stamp but sent no token")
    if digest not in status.token:
        raise TimestampError(f"{where} sent a token that does not cover our digest")
    if _integer(nonce) not in status.token:
        raise TimestampError(f"{where} sent a token without our nonce (a replayed or foreign reply?)")
    return data
