"""Bad input: every refusal is a clear 4xx with a useful detail, never a 500, and loses nothing.

One service per module holds a good, complete recording; after every test an
autouse fixture reads it back and checks the audio is byte-identical to what
was read before any bad request was made (and that its metadata is unchanged).
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import string
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import fastapi.routing
import httpx
import nacl.signing
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, update

from api.app import create_app
from api.bootstrap import init_data_dir
from api.core.models import AccessLog, Device, Recording
from api.core.services import Services
from api.core.settings import Settings
from evidence.chain import header_hash, sign_header
from retention.models import Hold
from tests.conftest import bearer, enrol_sim_device
from tests.support.backends import BACKENDS
from tests.support.factories import SimDevice, SimRecording, tone
from tests.support.world import approve_on_server

PURPOSE = "bad input regression check"

# --------------------------------------------------------------------------- a service with one good recording


@dataclass(repr=False)  # the default repr would print the reference audio in every failure
class Env:
    app: FastAPI
    client: TestClient
    admin: str
    officer: str
    auditor: str
    device: SimDevice  # site north
    other_device: SimDevice  # site north too: a device that is not the owner
    good: SimRecording  # complete, 3 segments
    good_audio: bytes
    hold: str = ""  # a legal hold over the good recording

    def __repr__(self) -> str:
        return f"Env(data_dir={self.services.settings.data_dir}, good={self.good.id})"

    def _repr_pretty_(self, printer: Any, _cycle: bool) -> None:  # hypothesis prints dataclasses field by field
        printer.text(repr(self))

    @property
    def services(self) -> Services:
        services: Services = self.app.state.services
        return services

    def open_recording(self, segments: int = 2, outcome: str = "given") -> SimRecording:
        rec = self.device.new_recording(outcome)
        if outcome == "given":
            self.device.add_segments(rec, segments)
        reply = self.client.post("/v1/recordings", json=rec.create_body(), headers=self.device.auth)
        assert reply.status_code == 201, reply.text
        return rec

    def put(self, rec: SimRecording, index: int, **overrides: Any) -> httpx.Response:
        seg = rec.segments[index]
        headers = {**self.device.segment_headers(seg), **overrides.pop("headers", {})}
        for name in overrides.pop("drop", ()):
            headers.pop(name)
        content = overrides.pop("content", seg.envelope)
        assert not overrides
        reply: httpx.Response = self.client.put(
            f"/v1/recordings/{rec.id}/segments/{index}", content=content, headers=headers
        )
        return reply

    def read_audio(self, rec_id: uuid.UUID | str, **params: str) -> httpx.Response:
        reply: httpx.Response = self.client.post(
            f"/v1/evidence/{rec_id}/audio", json={"purpose": PURPOSE, **params}, headers=bearer(self.officer)
        )
        return reply

    def assert_intact(self) -> None:
        """The good recording reads back (through the API, fully verified) exactly as before, still held."""
        reply = self.read_audio(self.good.id)
        assert reply.status_code == 200, reply.text
        assert reply.content == self.good_audio
        with self.services.sessions() as session:  # metadata straight from the database: no extra log writes
            row = session.get(Recording, str(self.good.id))
            assert row is not None
            assert (row.status, row.segment_count, row.incident_category, row.device_id, row.purge_state) == (
                "complete",
                3,
                None,
                self.device.id,
                None,
            )
            hold = session.get(Hold, self.hold)
            assert hold is not None and hold.released_at is None


def make_env(data: Path, **overrides: Any) -> Env:
    settings = Settings(data_dir=data, env="development", **overrides)
    admin = init_data_dir(settings).admin_token
    app = create_app(settings)
    client = TestClient(app)
    client.__enter__()
    assert client.post("/v1/sites", json={"id": "north"}, headers=bearer(admin)).status_code == 201

    def user(name: str, role: str, sites: list[str]) -> str:
        reply = client.post("/v1/users", json={"name": name, "role": role, "sites": sites}, headers=bearer(admin))
        assert reply.status_code == 201, reply.text
        token: str = reply.json()["token"]
        approve_on_server(client, name)  # the second person (tests/api/test_grants.py tests the rule)
        return token

    device = enrol_sim_device(client, admin, "counter-n1", "north")
    env = Env(
        app,
        client,
        admin,
        user("olivia", "officer", ["north"]),
        user("audrey", "auditor", []),
        device,
        enrol_sim_device(client, admin, "counter-n2", "north"),
        good=device.new_recording(),
        good_audio=b"",
    )
    env.device.add_segments(env.good, 3)
    assert client.post("/v1/recordings", json=env.good.create_body(), headers=device.auth).status_code == 201
    for seg in env.good.segments:
        assert env.put(env.good, seg.index).status_code == 201
    reply = env.read_audio(env.good.id)
    assert reply.status_code == 200 and reply.content[:4] == b"fLaC"
    env.good_audio = reply.content
    body = {"case_ref": "CASE-GOOD", "reason": "keeps the reference recording", "recordings": [str(env.good.id)]}
    held = client.post("/v1/holds", json=body, headers=bearer(env.officer))
    assert held.status_code == 201, held.text
    env.hold = held.json()["id"]
    return env


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    backend = BACKENDS.allocate()  # its own database: it outlives each test's
    made = make_env(tmp_path_factory.mktemp("bad-input") / "server", **backend.settings)
    yield made
    made.client.__exit__(None, None, None)
    BACKENDS.release(backend)


@pytest.fixture(autouse=True)
def _nothing_lost(env: Env) -> Iterator[None]:
    yield
    env.assert_intact()


def refused(reply: httpx.Response, status: int, *words: str) -> None:
    """A refusal with this status whose detail mentions every word (case-insensitive)."""
    assert reply.status_code == status, reply.text
    detail = reply.json()["detail"]
    assert detail, "an empty detail tells the caller nothing"
    if isinstance(detail, list):  # FastAPI validation errors: where, and what
        text = " ".join(" ".join(map(str, e["loc"])) + ": " + e["msg"] for e in detail)
    else:
        text = detail
    for word in words:
        assert word.lower() in text.lower(), f"{word!r} not in detail {text!r}"


def resign(device: SimDevice, rec: SimRecording, mutate: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """The create body for rec with its header changed by mutate, signed again by device."""
    header = copy.deepcopy(rec.header)
    mutate(header)
    return {
        "header": header,
        "header_signature": sign_header(device.signing_key, header).hex(),
        "sealed_keys": rec.sealed_keys,
    }


# --------------------------------------------------------------------------- malformed JSON and wrong types, every body


def json_routes(app: FastAPI) -> set[str]:
    """ "METHOD /path" of every route that reads a JSON body (included routers flattened)."""
    flatten = getattr(fastapi.routing, "iter_route_contexts", None)
    return {
        f"{method} {getattr(route, 'path', None)}"
        for route in (flatten(app.routes) if flatten else app.routes)
        if getattr(route, "body_field", None) is not None
        for method in getattr(route, "methods", None) or ()
    }


REASON = "a reason that is long enough"

# "METHOD /path" -> (role whose token is sent, [(body, field the detail must name)])
WRONG_TYPES: dict[str, tuple[str | None, list[tuple[Any, str]]]] = {
    "POST /v1/sites": (
        "admin",
        [({"id": 5}, "id"), ({"id": "two words"}, "id"), ({"id": "x", "name": ["n"]}, "name")],
    ),
    "POST /v1/users": (
        "admin",
        [
            ({"name": "u1", "role": "king"}, "role"),
            ({"name": "u1", "role": "officer", "sites": "north"}, "sites"),
            ({"name": None, "role": "auditor"}, "name"),
        ],
    ),
    "POST /v1/devices": ("admin", [({"name": 1, "site": "north"}, "name"), ({"name": "d1"}, "site")]),
    "POST /v1/notices": (
        "admin",
        [
            ({"id": "n1", "language": "fr", "title": "t", "text": "x"}, "language"),
            ({"id": 7, "language": "ja", "title": "t", "text": "x"}, "id"),
            ({"id": "n1", "language": "ja", "title": ["t"], "text": "x"}, "title"),
            ({"id": "n1", "language": "ja", "title": "t", "text": {"x": 1}}, "text"),
            ({"id": "n1", "language": "ja", "title": "t"}, "text"),
        ],
    ),
    "POST /v1/enrol": (
        None,
        [
            ({"code": 1234, "public_key": "00" * 32}, "code"),
            ({"code": "ABCD-EFGH", "public_key": "zz"}, "public_key"),
            ({"code": "ABCD-EFGH", "public_key": "AB" * 32}, "public_key"),
        ],
    ),
    "POST /v1/recordings": (
        "device",
        [
            ({"header": "x", "header_signature": "00" * 64}, "header"),
            ({"header": {}, "header_signature": 5}, "header_signature"),
            ({"header": {}, "header_signature": "AB" * 64}, "header_signature"),
            ({"header": {}, "header_signature": "00" * 64, "sealed_keys": {"key_id": "k"}}, "sealed_keys"),
            (
                {"header": {}, "header_signature": "00" * 64, "sealed_keys": [{"key_id": "k", "sealed": "xyz"}]},
                "sealed",
            ),
        ],
    ),
    "POST /v1/alerts": (
        "device",
        [
            ({"kind": "panic"}, "kind"),
            ({"kind": "help", "recording_id": "not-a-uuid"}, "recording_id"),
            ({"kind": "help", "category": "../etc"}, "category"),
            ({"kind": "help", "extra": 1}, "extra"),
        ],
    ),
    "POST /v1/alerts/{alert_id}/ack": (
        "officer",
        [({"message": 5}, "message"), ({"message": ""}, "message"), ({"message": "a\x1b[31mb"}, "message")],
    ),
    "POST /v1/device/heartbeat": (
        "device",
        [
            ({"clock": "yesterday", "spool_used_bytes": 0, "spool_max_bytes": 0, "unsent_segments": 0}, "clock"),
            (
                {"clock": "2026-01-01T00:00:00", "spool_used_bytes": 0, "spool_max_bytes": 0, "unsent_segments": 0},
                "clock",
            ),
            (
                {"clock": "2026-01-01T00:00:00Z", "spool_used_bytes": -1, "spool_max_bytes": 0, "unsent_segments": 0},
                "spool_used_bytes",
            ),
            ({"clock": "2026-01-01T00:00:00Z", "spool_used_bytes": 0, "spool_max_bytes": 0}, "unsent_segments"),
        ],
    ),
    "PUT /v1/sites/{site_id}/alerting": (
        "admin",
        [
            ({"escalate_after_seconds": 0}, "escalate_after_seconds"),
            ({"escalate_after_seconds": "soon"}, "escalate_after_seconds"),
            ({"opening_hours": "whenever"}, "opening_hours"),
            ({"timezone": "Mars/Olympus"}, "timezone"),
            ({"timezone": ""}, "timezone"),
            ({"incident_categories": [{"code": "x y", "ja": "a", "en": "b"}]}, "code"),
            ({"incident_alerts": "maybe"}, "incident_alerts"),
        ],
    ),
    "POST /v1/sites/{site_id}/alert-contacts": (
        "admin",
        [
            ({"tier": 0, "email": "a@b.example"}, "tier"),
            ({"tier": 1, "email": "not an address"}, "email"),
            ({"tier": 1, "webhook": "file:///etc/passwd"}, "webhook"),
            ({"tier": 1, "webhook": "javascript:alert(1)"}, "webhook"),
        ],
    ),
    "POST /v1/recordings/{recording_id}/incident": (
        "device",
        [({"category": 7}, "category"), ({"category": ""}, "category"), ({"category": "../etc"}, "category")],
    ),
    "POST /v1/holds": (
        "officer",
        [
            ({"case_ref": 5, "reason": REASON}, "case_ref"),
            ({"case_ref": " padded ", "reason": REASON}, "case_ref"),
            ({"case_ref": "C-1", "reason": "short"}, "reason"),
            ({"case_ref": "C-1", "reason": REASON, "recordings": ["../../etc/passwd"]}, "recordings"),
            ({"case_ref": "C-1", "reason": REASON, "started_from": "yesterday"}, "started_from"),
        ],
    ),
    "POST /v1/holds/{hold_id}/release": ("officer", [({"reason": 5}, "reason"), ({"reason": "short"}, "reason")]),
    "POST /v1/evidence/{recording_id}/flag": (
        "officer",
        [({"category": 7}, "category"), ({"category": "../etc"}, "category")],
    ),
    "POST /v1/evidence/{recording_id}/extend": (
        "officer",
        [
            ({"until": "soon", "reason": REASON}, "until"),
            ({"until": "2030-01-01T00:00:00+00:00", "reason": 3}, "reason"),
            ({"reason": REASON}, "until"),
        ],
    ),
    "POST /v1/evidence/{recording_id}/audio": (
        "officer",
        [
            ({"purpose": 5}, "purpose"),
            ({"purpose": "short"}, "purpose"),
            ({"purpose": PURPOSE, "format": "mp3"}, "format"),
        ],
    ),
    "POST /v1/evidence/{recording_id}/sealed": (
        "officer",
        [({"purpose": 5}, "purpose"), ({"purpose": "short"}, "purpose"), ({}, "purpose")],
    ),
    "POST /v1/evidence/{recording_id}/export": (
        "officer",
        [
            ({"purpose": 5, "case_ref": "K-1", "recipient_public_key": "11" * 32}, "purpose"),
            ({"purpose": PURPOSE, "case_ref": ["K-1"], "recipient_public_key": "11" * 32}, "case_ref"),
            ({"purpose": PURPOSE, "case_ref": "K-1", "recipient_public_key": 11}, "recipient_public_key"),
            ({"purpose": PURPOSE, "case_ref": "K-1"}, "recipient_public_key"),
            ({"purpose": PURPOSE, "case_ref": "K-1", "recipient_public_key": "11" * 32, "kdf": "argon"}, "kdf"),
        ],
    ),
    "POST /v1/evidence/{recording_id}/export/sealed": (
        "officer",
        [
            ({"purpose": "short", "case_ref": "K-1", "recipient_public_key": "11" * 32}, "purpose"),
            ({"purpose": PURPOSE, "case_ref": "", "recipient_public_key": "11" * 32}, "case_ref"),
            ({"purpose": PURPOSE, "case_ref": "K-1", "recipient_public_key": "zz" * 32}, "recipient_public_key"),
        ],
    ),
    "POST /v1/evidence/{recording_id}/deletion": (
        "officer",
        [({"reason": 5}, "reason"), ({"reason": "short"}, "reason"), ({}, "reason")],
    ),
    "POST /v1/deletions/{request_id}/cancel": (
        "officer",
        [({"reason": 5}, "reason"), ({"reason": "short"}, "reason"), ({}, "reason")],
    ),
    **{
        f"POST /v1/{kind}/{{{kind[:-1]}_id}}/{action}": (
            "admin",
            [({"reason": 5}, "reason"), ({"reason": "short"}, "reason"), ({}, "reason")],
        )
        for kind in ("users", "devices")
        for action in ("disable", "enable")
    },
    "PUT /v1/policies": (
        "admin",
        [
            ({"category": "forever"}, "category"),
            ({"category": "routine", "retain_days": -1}, "retain_days"),
            ({"category": "routine", "delete_days": "ten"}, "delete_days"),
        ],
    ),
}

MALFORMED = [
    pytest.param(b"{not json", "application/json", "json", id="not-json"),
    pytest.param(b'{"a": 1,}', "application/json", "json", id="trailing-comma"),
    pytest.param(b"", "application/json", "body", id="empty"),
    pytest.param(b"[]", "application/json", "body", id="array"),
    pytest.param(b"null", "application/json", "body", id="null"),
    pytest.param(b'"a string"', "application/json", "body", id="string"),
    pytest.param(b'{"id": "x"}', "text/plain", "body", id="not-declared-json"),
    pytest.param(b"\xff\xfe\x00garbage", "application/json", "json", id="not-utf8"),
    # Python's parser accepts these; echoing them back in the 422 used to fail to render (a 500).
    pytest.param(b'{"a": NaN, "b": [Infinity, -Infinity]}', "application/json", "body", id="nan-infinity"),
]


def _request(env: Env, route: str) -> tuple[str, str]:
    """Method and URL; ids are the good recording's and its hold's: a bad body must not touch them."""
    method, path = route.split(" ")
    # A body is validated before the id is looked up: any well-formed id does for a user.
    return method, path.format(
        recording_id=env.good.id,
        hold_id=env.hold,
        device_id=env.device.id,
        user_id="00000000-0000-4000-8000-000000000000",
        request_id="00000000-0000-4000-8000-000000000000",
        alert_id="00000000-0000-4000-8000-000000000000",
        site_id="north",
    )


def _auth(env: Env, role: str | None) -> dict[str, str]:
    if role is None:
        return {}
    return {"admin": bearer(env.admin), "officer": bearer(env.officer), "device": env.device.auth}[role]


def _state(env: Env) -> list[Any]:
    """What the administrative and retention endpoints show: a refused body must change none of it."""
    admin, officer = bearer(env.admin), bearer(env.officer)
    urls = [("/v1/sites", admin), ("/v1/users", admin), ("/v1/devices", admin), ("/v1/policies", admin)]
    urls += [("/v1/holds?active=", officer)]
    return [env.client.get(url, headers=headers).json() for url, headers in urls]


def test_every_json_route_is_in_the_table(env: Env) -> None:
    assert json_routes(env.app) == set(WRONG_TYPES)


@pytest.mark.parametrize("route", sorted(WRONG_TYPES))
@pytest.mark.parametrize(("content", "content_type", "word"), MALFORMED)
def test_malformed_json(env: Env, route: str, content: bytes, content_type: str, word: str) -> None:
    method, url = _request(env, route)
    headers = {**_auth(env, WRONG_TYPES[route][0]), "Content-Type": content_type}
    refused(env.client.request(method, url, content=content, headers=headers), 422, word)


@pytest.mark.parametrize(
    ("route", "body", "field"),
    [
        pytest.param(route, body, field, id=f"{route}-{field}")
        for route, (_, cases) in WRONG_TYPES.items()
        for body, field in cases
    ],
)
def test_wrong_types(env: Env, route: str, body: Any, field: str) -> None:
    before = _state(env)
    method, url = _request(env, route)
    refused(env.client.request(method, url, json=body, headers=_auth(env, WRONG_TYPES[route][0])), 422, field)
    assert _state(env) == before


def test_admin_conflicts_and_unknowns(env: Env) -> None:
    admin = bearer(env.admin)
    refused(env.client.post("/v1/sites", json={"id": "north", "name": "again"}, headers=admin), 409, "north", "exists")
    assert env.client.get("/v1/sites", headers=admin).json() == [{"id": "north", "name": "north"}]
    refused(env.client.post("/v1/users", json={"name": "olivia", "role": "auditor"}, headers=admin), 409, "olivia")
    refused(env.client.post("/v1/users", json={"name": "o2", "role": "officer"}, headers=admin), 422, "site")
    refused(
        env.client.post("/v1/users", json={"name": "o3", "role": "officer", "sites": ["atlantis"]}, headers=admin),
        404,
        "atlantis",
    )
    refused(env.client.post("/v1/devices", json={"name": "d9", "site": "atlantis"}, headers=admin), 404, "atlantis")
    names = [u["name"] for u in env.client.get("/v1/users", headers=admin).json()]
    assert "o2" not in names and "o3" not in names


# --------------------------------------------------------------------------- recording headers and consent


def _objected_with_keys(env: Env, rec: SimRecording) -> dict[str, Any]:
    objection = env.device.new_recording("objected")
    body = objection.create_body()
    body["sealed_keys"] = rec.sealed_keys
    return body


def _given_without_keys(_env: Env, rec: SimRecording) -> dict[str, Any]:
    return {**rec.create_body(), "sealed_keys": []}


def _sealed(key_id: str | None, hex_len: int) -> Callable[[Env, SimRecording], dict[str, Any]]:
    """Sealed keys naming key_id (None: the real evidence key) with hex_len hex digits."""

    def body(env: Env, rec: SimRecording) -> dict[str, Any]:
        kid = key_id or next(iter(env.device.evidence_keys))
        return {**rec.create_body(), "sealed_keys": [{"key_id": kid, "sealed": "ab" * (hex_len // 2)}]}

    return body


def _header(mutate: Callable[[dict[str, Any]], None]) -> Callable[[Env, SimRecording], dict[str, Any]]:
    return lambda env, rec: resign(env.device, rec, mutate)


def _consent(**fields: Any) -> Callable[[Env, SimRecording], dict[str, Any]]:
    return _header(lambda h: h["consent"].update(fields))


def _other_device_named(env: Env, rec: SimRecording) -> dict[str, Any]:
    return resign(env.device, rec, lambda h: h.update(device_id=env.other_device.id))


def _foreign_signature(_env: Env, rec: SimRecording) -> dict[str, Any]:
    stranger = nacl.signing.SigningKey.generate()
    return {**rec.create_body(), "header_signature": sign_header(stranger, rec.header).hex()}


def _tampered_after_signing(_env: Env, rec: SimRecording) -> dict[str, Any]:
    body = rec.create_body()
    body["header"] = copy.deepcopy(body["header"])
    body["header"]["consent"]["staff_code"] = "S-999"
    return body


def _same_id_new_header(env: Env, _rec: SimRecording) -> dict[str, Any]:
    return resign(env.device, env.good, lambda h: h.update(started_at=datetime.now(UTC).isoformat()))


def _drop(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda h: h.pop(key)


HEADER_CASES = [
    ("consent missing", _header(_drop("consent")), 422, ["consent"]),
    ("consent not an object", _header(lambda h: h.update(consent="yes")), 422, ["header"]),
    ("consent field missing", _header(lambda h: h["consent"].pop("staff_code")), 422, ["consent", "staff_code"]),
    ("unknown notice version", _consent(notice_version=99), 422, ["notice version"]),
    ("wrong notice sha256", _consent(notice_sha256="0" * 64), 422, ["notice version"]),
    ("unknown notice id", _consent(notice_id="no-such-notice"), 422, ["notice"]),
    ("unknown notice language", _consent(language="xx"), 422, ["notice"]),
    ("outcome not allowed", _consent(outcome="maybe"), 422, ["outcome"]),
    ("method not allowed", _consent(method="telepathy"), 422, ["method"]),
    ("decided before presented", _consent(decided_at="2000-01-01T00:00:00+00:00"), 422, ["before"]),
    ("consent time without zone", _consent(presented_at="2024-01-01T00:00:00"), 422, ["time zone"]),
    ("notice version not an int", _consent(notice_version="1"), 422, ["notice_version"]),
    # These four were 500s before the fix in consent/records.py and api/ingest.py.
    ("notice id not a string", _consent(notice_id=["counter-recording"]), 422, ["notice_id"]),
    ("notice language not a string", _consent(language={"en": 1}), 422, ["language"]),
    ("notice version out of range", _consent(notice_version=10**30), 422, ["notice_version"]),
    (
        "started_at overflows UTC",
        _header(lambda h: h.update(started_at="9999-12-31T23:59:59-23:59")),
        422,
        ["started_at"],
    ),
    ("objected with sealed keys", _objected_with_keys, 422, ["objection", "no data keys"]),
    ("given without sealed keys", _given_without_keys, 422, ["sealed"]),
    ("sealed to an unknown evidence key", _sealed("no-such-key", 160), 422, ["no-such-key"]),
    ("sealed key of the wrong length", _sealed(None, 158), 422, ["malformed"]),
    ("header names another device", _other_device_named, 422, ["another device"]),
    ("header signed by a stranger", _foreign_signature, 422, ["signature"]),
    ("header changed after signing", _tampered_after_signing, 422, ["signature"]),
    ("wrong format version", _header(lambda h: h.update(version=99)), 422, ["version"]),
    ("started_at without zone", _header(lambda h: h.update(started_at="2024-01-01T10:00:00")), 422, ["time zone"]),
    ("started_at not a time", _header(lambda h: h.update(started_at="yesterday")), 422, ["header"]),
    ("recording_id not a uuid", _header(lambda h: h.update(recording_id="../../etc/passwd")), 422, ["header"]),
    ("recording_id missing", _header(_drop("recording_id")), 422, ["recording_id"]),
    ("sample rate out of range", _header(lambda h: h.update(sample_rate=1)), 422, ["sample_rate"]),
    ("channels out of range", _header(lambda h: h.update(channels=9)), 422, ["channels"]),
    ("id reused with another header", _same_id_new_header, 409, ["different recording"]),
]


@pytest.mark.parametrize(("make_body", "status", "words"), [pytest.param(*c[1:], id=c[0]) for c in HEADER_CASES])
def test_bad_recording_header(
    env: Env, make_body: Callable[..., dict[str, Any]], status: int, words: list[str]
) -> None:
    body = make_body(env, env.device.new_recording())
    refused(env.client.post("/v1/recordings", json=body, headers=env.device.auth), status, *words)
    rid = body["header"].get("recording_id")
    if isinstance(rid, str) and rid != str(env.good.id):
        with env.services.sessions() as session:
            assert session.get(Recording, rid) is None


OBJECTION_CASES = [
    pytest.param({"sample_rate": "abc"}, id="sample-rate-string"),
    pytest.param({"sample_rate": 1.5, "channels": 1}, id="sample-rate-float"),
    pytest.param({"sample_rate": 16000, "channels": "two"}, id="channels-string"),
]


@pytest.mark.parametrize("params", OBJECTION_CASES)
def test_objection_with_bad_audio_parameters(env: Env, params: dict[str, Any]) -> None:
    """Was a stored poison: accepted (201), then every officer's evidence list for the site was a 500."""
    rec = env.device.new_recording("objected")
    body = resign(env.device, rec, lambda h: h.update(params))
    refused(env.client.post("/v1/recordings", json=body, headers=env.device.auth), 422, "header")
    assert env.client.get("/v1/evidence", headers=bearer(env.officer)).status_code == 200


def test_objection_with_audio_parameters_is_fine(env: Env) -> None:
    rec = env.device.new_recording("objected")
    body = resign(env.device, rec, lambda h: h.update(sample_rate=16000, channels=1))
    assert env.client.post("/v1/recordings", json=body, headers=env.device.auth).status_code == 201
    assert env.client.get("/v1/evidence", headers=bearer(env.officer)).status_code == 200


def test_recording_id_of_another_devices_recording(env: Env) -> None:
    """A valid, correctly signed header from another device that reuses the good recording's id."""
    other = env.other_device.new_recording()
    body = resign(env.other_device, other, lambda h: h.update(recording_id=str(env.good.id)))
    refused(env.client.post("/v1/recordings", json=body, headers=env.other_device.auth), 409, "different recording")
    seg = env.good.segments[0]
    reply = env.client.put(
        f"/v1/recordings/{env.good.id}/segments/0", content=seg.envelope, headers=env.other_device.segment_headers(seg)
    )
    refused(reply, 404, "no such recording")


def test_recording_create_is_idempotent(env: Env) -> None:
    rec = env.open_recording()
    again = env.client.post("/v1/recordings", json=rec.create_body(), headers=env.device.auth)
    assert again.status_code == 200 and again.json() == {"id": str(rec.id), "status": "open"}
    replay = env.client.post("/v1/recordings", json=rec.create_body(), headers=env.other_device.auth)
    refused(replay, 422, "another device")


def test_segments_to_an_objection_record(env: Env) -> None:
    objection = env.open_recording(outcome="objected")
    # A segment correctly signed and chained onto the objection record's header.
    objection.segments.append(env.device.make_segment(objection, 0, True, tone(1.0), header_hash(objection.header)))
    refused(env.put(objection, 0), 409, "objected")
    shown = env.client.get(f"/v1/evidence/{objection.id}", headers=bearer(env.officer)).json()
    assert (shown["status"], shown["segment_count"]) == ("objected", 0)
    assert shown["audio"] == "objection"
    refused(env.read_audio(objection.id), 409, "no audio to release", "objection record")


# --------------------------------------------------------------------------- segment uploads


@pytest.mark.parametrize("header", ["X-Signature", "X-Plaintext-Sha256", "X-Prev-Hash", "X-Segment-Final"])
def test_segment_header_missing(env: Env, header: str) -> None:
    rec = env.open_recording()
    refused(env.put(rec, 0, drop=[header]), 422, header.lower(), "required")
    assert_nothing_stored(env, rec)


BAD_SEGMENT_HEADERS = [
    ("X-Signature", "AB" * 64, 422, ["x-signature"]),
    ("X-Signature", "zz" * 64, 422, ["x-signature"]),
    ("X-Signature", "0" * 129, 422, ["x-signature"]),
    ("X-Signature", "00" * 63, 400, ["X-Signature", "64 bytes"]),
    ("X-Signature", "00" * 64, 422, ["bad device signature"]),
    ("X-Plaintext-Sha256", "00" * 31, 400, ["X-Plaintext-Sha256", "32 bytes"]),
    ("X-Plaintext-Sha256", "0" * 63, 400, ["X-Plaintext-Sha256"]),
    ("X-Plaintext-Sha256", "00" * 32, 422, ["bad device signature"]),
    ("X-Plaintext-Sha256", "-1", 422, ["x-plaintext-sha256"]),
    ("X-Prev-Hash", "00" * 33, 400, ["X-Prev-Hash", "32 bytes"]),
    ("X-Prev-Hash", "00" * 32, 409, ["does not follow"]),
    ("X-Prev-Hash", "0x" + "00" * 31, 422, ["x-prev-hash"]),
    ("X-Segment-Final", "2", 422, ["x-segment-final"]),
    ("X-Segment-Final", "true", 422, ["x-segment-final"]),
    ("X-Segment-Final", "", 422, ["x-segment-final"]),
    ("X-Segment-Final", "1", 422, ["bad device signature"]),  # signed as not final
]


@pytest.mark.parametrize(
    ("header", "value", "status", "words"),
    [pytest.param(*c, id=f"{c[0]}={c[1][:12]}..{len(c[1])}") for c in BAD_SEGMENT_HEADERS],
)
def test_segment_header_malformed(env: Env, header: str, value: str, status: int, words: list[str]) -> None:
    rec = env.open_recording()
    refused(env.put(rec, 0, headers={header: value}), status, *words)
    assert_nothing_stored(env, rec)
    assert env.put(rec, 0).status_code == 201  # the device's retry with the right header still works


def assert_nothing_stored(env: Env, rec: SimRecording) -> None:
    with env.services.sessions() as session:
        row = session.get(Recording, str(rec.id))
        assert row is not None and row.segment_count == 0 and row.status == "open"
    assert list(env.services.store.list(f"recordings/{rec.id}/")) == []


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 1]) + data[at + 1 :]


@pytest.mark.parametrize(
    ("make", "words"),
    [
        pytest.param(lambda e: b"", ["envelope"], id="empty"),
        pytest.param(lambda e: e[:10], ["envelope"], id="truncated-header"),
        pytest.param(lambda e: e[:-1], ["signature"], id="truncated-tag"),
        pytest.param(lambda e: _flip(e, 40), ["signature"], id="flipped-byte"),
        pytest.param(lambda e: b"\x07" + e[1:], ["version"], id="wrong-version"),
    ],
)
def test_segment_body_damaged(env: Env, make: Callable[[bytes], bytes], words: list[str]) -> None:
    rec = env.open_recording()
    refused(env.put(rec, 0, content=make(rec.segments[0].envelope)), 422, *words)
    assert_nothing_stored(env, rec)


@pytest.mark.parametrize(
    ("index", "status", "word"),
    [
        ("-1", 422, "out of range"),
        (str(2**31), 422, "out of range"),
        (str(10**40), 422, "out of range"),
        ("abc", 422, "index"),
        ("1.5", 422, "index"),
        ("0x1", 422, "index"),
    ],
)
def test_segment_index_out_of_range(env: Env, index: str, status: int, word: str) -> None:
    rec = env.open_recording()
    seg = rec.segments[0]
    reply = env.client.put(
        f"/v1/recordings/{rec.id}/segments/{index}", content=seg.envelope, headers=env.device.segment_headers(seg)
    )
    refused(reply, status, word)
    assert_nothing_stored(env, rec)


def test_segment_out_of_order(env: Env) -> None:
    rec = env.open_recording(3)
    refused(env.put(rec, 1), 409, "expected segment 0, got 1")
    assert_nothing_stored(env, rec)
    assert env.put(rec, 0).status_code == 201
    refused(env.put(rec, 2), 409, "expected segment 1, got 2")


def test_segment_reupload_same_and_different(env: Env) -> None:
    rec = env.open_recording(2)
    assert env.put(rec, 0).status_code == 201
    again = env.put(rec, 0)
    assert again.status_code == 200 and again.content == b""  # idempotent: a device may always retry
    other = env.device.make_segment(
        rec, 0, False, tone(1.0, seed=99), bytes.fromhex(rec.segments[0].headers["X-Prev-Hash"])
    )
    reply = env.client.put(
        f"/v1/recordings/{rec.id}/segments/0", content=other.envelope, headers=env.device.segment_headers(other)
    )
    refused(reply, 409, "segment 0", "different content")
    refused(env.put(rec, 0, headers={"X-Segment-Final": "1"}), 409, "different content")
    assert env.put(rec, 1).status_code == 201
    refused(env.put(rec, 0, content=other.envelope), 409, "different content")  # still different after completion
    shown = env.client.get(f"/v1/evidence/{rec.id}", headers=bearer(env.officer)).json()
    assert (shown["status"], shown["segment_count"]) == ("complete", 2)
    assert shown["segments"][0]["ciphertext_sha256"] == hashlib.sha256(rec.segments[0].envelope).hexdigest()
    assert env.read_audio(rec.id).status_code == 200


def test_segment_after_final(env: Env) -> None:
    rec = env.open_recording(1)
    assert env.put(rec, 0).status_code == 201
    env.device.add_segments(rec, 1)
    refused(env.put(rec, 1), 409, "complete")


def test_oversized_segment_default_limit(env: Env) -> None:
    rec = env.open_recording()
    limit = env.services.settings.max_segment_bytes
    refused(env.put(rec, 0, content=b"\0" * (limit + 1)), 413, f"larger than {limit} bytes")
    assert_nothing_stored(env, rec)


def test_oversized_segment_small_limit(tmp_path: Path) -> None:
    small = make_env(tmp_path / "server", max_segment_bytes=32 * 1024)
    try:
        rec = small.open_recording(1)
        big = small.device.make_segment(rec, 0, True, tone(3.0), bytes.fromhex(rec.segments[0].headers["X-Prev-Hash"]))
        assert len(big.envelope) > 32 * 1024 > len(rec.segments[0].envelope)
        refused(
            small.client.put(
                f"/v1/recordings/{rec.id}/segments/0", content=big.envelope, headers=small.device.segment_headers(big)
            ),
            413,
            "larger than 32768 bytes",
        )

        def chunks() -> Iterator[bytes]:  # no Content-Length: the limit must hold while streaming too
            for _ in range(20):
                yield b"\0" * 8192

        reply = small.client.put(
            f"/v1/recordings/{rec.id}/segments/0",
            content=chunks(),
            headers=small.device.segment_headers(rec.segments[0]),
        )
        refused(reply, 413, "larger than")
        assert_nothing_stored(small, rec)
        assert small.put(rec, 0).status_code == 201  # a segment under the limit still goes in
        small.assert_intact()
    finally:
        small.client.__exit__(None, None, None)


# --------------------------------------------------------------------------- unknown and path-like ids


FUTURE = (datetime.now(UTC) + timedelta(days=365)).isoformat()


def _targets(env: Env, rid: str) -> list[tuple[str, str, dict[str, Any]]]:
    """Every endpoint that takes a recording id, with an otherwise valid request."""
    seg, officer = env.good.segments[0], bearer(env.officer)
    return [
        (
            "PUT",
            f"/v1/recordings/{rid}/segments/0",
            {"content": seg.envelope, "headers": env.device.segment_headers(seg)},
        ),
        ("POST", f"/v1/recordings/{rid}/interrupt", {"headers": env.device.auth}),
        ("POST", f"/v1/recordings/{rid}/incident", {"json": {"category": "x"}, "headers": env.device.auth}),
        ("GET", f"/v1/evidence/{rid}", {"headers": officer}),
        ("POST", f"/v1/evidence/{rid}/audio", {"json": {"purpose": PURPOSE}, "headers": officer}),
        ("POST", f"/v1/evidence/{rid}/sealed", {"json": {"purpose": PURPOSE}, "headers": officer}),
        (
            "POST",
            f"/v1/evidence/{rid}/export/sealed",
            {"json": {"purpose": PURPOSE, "case_ref": "K-1", "recipient_public_key": "11" * 32}, "headers": officer},
        ),
        ("POST", f"/v1/evidence/{rid}/flag", {"json": {"category": "x"}, "headers": officer}),
        ("POST", f"/v1/evidence/{rid}/extend", {"json": {"until": FUTURE, "reason": REASON}, "headers": officer}),
        ("POST", f"/v1/evidence/{rid}/deletion", {"json": {"reason": REASON}, "headers": officer}),
        ("GET", f"/v1/evidence/{rid}/tombstone", {"headers": officer}),
        ("GET", f"/v1/audit/custody/{rid}", {"headers": bearer(env.auditor)}),
    ]


def test_unknown_recording_ids(env: Env) -> None:
    for method, url, kwargs in _targets(env, str(uuid.uuid4())):
        refused(env.client.request(method, url, **kwargs), 404, "no such recording")


@pytest.mark.parametrize(
    ("hold_id", "status"), [("00000000-0000-4000-8000-000000000000", 404), ("not-a-uuid", 422), ("%2e%2e", 422)]
)
def test_unknown_hold_ids(env: Env, hold_id: str, status: int) -> None:
    officer = bearer(env.officer)
    refused(env.client.get(f"/v1/holds/{hold_id}", headers=officer), status, "hold")
    reply = env.client.post(f"/v1/holds/{hold_id}/release", json={"reason": REASON}, headers=officer)
    refused(reply, status, "hold")


def test_deleting_the_held_recording_is_refused(env: Env) -> None:
    """The one request here that is well formed and allowed by role: the hold still wins, nothing is lost."""
    reply = env.client.post(
        f"/v1/evidence/{env.good.id}/deletion", json={"reason": REASON}, headers=bearer(env.officer)
    )
    refused(reply, 409, "legal hold", "CASE-GOOD")


@pytest.mark.parametrize(
    ("params", "word"),
    [
        pytest.param({}, "reason", id="reason-missing"),
        pytest.param({"reason": "oops"}, "at least 10", id="reason-too-short"),
        pytest.param({"reason": "x" * 2001}, "at most 2000", id="reason-too-long"),
        pytest.param({"reason": "\u200b" * 12}, "visible", id="reason-invisible"),
    ],
)
def test_bad_delete_reason(env: Env, params: dict[str, str], word: str) -> None:
    rec = env.open_recording(1)
    assert env.put(rec, 0).status_code == 201
    reply = env.client.post(f"/v1/evidence/{rec.id}/deletion", json=params, headers=bearer(env.officer))
    refused(reply, 422, word)
    assert env.read_audio(rec.id).status_code == 200


class SpyStore:
    """Wraps the blob store and records every call made to it."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.calls = inner, list[tuple[str, tuple[Any, ...]]]()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)

        def spy(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((name, args))
            return attr(*args, **kwargs)

        return spy


# Percent-encoded, so they reach the server as sent; bare dots are resolved by the client
# (httpx), so test_dot_dot_paths_sent_raw sends those past it.
PATH_LIKE = [
    "..%2F..%2Fetc%2Fpasswd",
    "%2e%2e",
    "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "not-a-uuid",
    "12345",
    "%00",
    quote("ünïcode"),
]


def raw_asgi(app: FastAPI, method: str, raw_path: bytes, headers: dict[str, str], body: bytes = b"") -> int:
    """Send a request with an exact, un-normalised path (HTTP clients would resolve the dots first)."""
    status = 0

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": raw_path.decode("latin-1"),
        "raw_path": raw_path,
        "query_string": b"purpose=" + quote(PURPOSE).encode(),
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 1),
        "server": ("testserver", 80),
        "state": {},
    }
    asyncio.run(app(scope, receive, send))  # type: ignore[arg-type]
    return status


@pytest.mark.parametrize("rid", PATH_LIKE)
def test_path_like_ids_never_reach_the_store(env: Env, rid: str, monkeypatch: pytest.MonkeyPatch) -> None:
    spy = SpyStore(env.services.store)
    monkeypatch.setattr(env.services, "store", spy)
    objects = env.services.settings.data_dir / "objects"
    before = sorted(objects.rglob("*"))
    for method, url, kwargs in _targets(env, rid):
        reply = env.client.request(method, url, **kwargs)
        assert reply.status_code in (404, 422), (url, reply.text)
        assert reply.json()["detail"]
    assert spy.calls == []
    assert sorted(objects.rglob("*")) == before


@pytest.mark.parametrize("raw", ["..", "../../etc/passwd", "../../../../../../etc/passwd", "..\\..\\etc\\passwd"])
def test_dot_dot_paths_sent_raw(env: Env, raw: str, monkeypatch: pytest.MonkeyPatch) -> None:
    spy = SpyStore(env.services.store)
    monkeypatch.setattr(env.services, "store", spy)
    for method, url, kwargs in _targets(env, raw):
        status = raw_asgi(env.app, method, url.encode(), kwargs.get("headers", {}), kwargs.get("content", b""))
        assert status in (404, 422), (url, status)
    assert spy.calls == []


# --------------------------------------------------------------------------- enrolment codes


def _new_code(env: Env, name: str) -> tuple[str, str]:
    created = env.client.post("/v1/devices", json={"name": name, "site": "north"}, headers=bearer(env.admin))
    assert created.status_code == 201, created.text
    return created.json()["id"], created.json()["enrolment_code"]


def _enrol(env: Env, code: str) -> httpx.Response:
    key = bytes(nacl.signing.SigningKey.generate().verify_key).hex()
    reply: httpx.Response = env.client.post("/v1/enrol", json={"code": code, "public_key": key})
    return reply


def _denied_enrolments(env: Env, device_id: str | None) -> list[str]:
    with env.services.sessions() as session:
        rows = session.scalars(
            select(AccessLog).where(AccessLog.action == "api:device:enrol", AccessLog.outcome == "denied")
        ).all()
        return [r.detail["reason"] for r in rows if r.target == (f"device:{device_id}" if device_id else None)]


def test_expired_enrolment_code(env: Env) -> None:
    device_id, code = _new_code(env, "expiring")
    with env.services.sessions() as session, session.begin():
        session.execute(
            update(Device)
            .where(Device.id == device_id)
            .values(enrol_expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    refused(_enrol(env, code), 403, "expired")
    assert _denied_enrolments(env, device_id) == ["expired code"]
    with env.services.sessions() as session:
        device = session.get(Device, device_id)
        assert device is not None and device.enrolled_at is None and device.token_hash is None


def test_enrolment_ttl_zero_expires_at_once(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "server", env="development", enrolment_ttl_seconds=0)
    admin = bearer(init_data_dir(settings).admin_token)
    with TestClient(create_app(settings)) as client:
        assert client.post("/v1/sites", json={"id": "north"}, headers=admin).status_code == 201
        created = client.post("/v1/devices", json={"name": "d", "site": "north"}, headers=admin).json()
        key = bytes(nacl.signing.SigningKey.generate().verify_key).hex()
        refused(client.post("/v1/enrol", json={"code": created["enrolment_code"], "public_key": key}), 403, "expired")


def test_reused_and_unknown_enrolment_codes(env: Env) -> None:
    device_id, code = _new_code(env, "once-only")
    assert _enrol(env, code).status_code == 200
    refused(_enrol(env, code), 403, "already used")
    refused(_enrol(env, code.lower()), 403, "already used")  # codes are case-insensitive: still the same code
    refused(_enrol(env, "AAAA-BBBB-CCCC-DDDD"), 403, "unknown")
    assert _denied_enrolments(env, None).count("unknown or used code") >= 3
    assert _denied_enrolments(env, device_id) == []


# --------------------------------------------------------------------------- reading evidence


@pytest.mark.parametrize(
    ("params", "word"),
    [
        pytest.param({"purpose": None}, "purpose", id="purpose-missing"),
        pytest.param({"purpose": "because"}, "at least 10", id="purpose-too-short"),
        pytest.param({"purpose": "          "}, "purpose", id="purpose-blank"),
        pytest.param({"purpose": "x" * 501}, "at most 500", id="purpose-too-long"),
        pytest.param({"format": "mp3"}, "format", id="format-mp3"),
        pytest.param({"format": "FLAC"}, "format", id="format-uppercase"),
        pytest.param({"format": "../wav"}, "format", id="format-path"),
    ],
)
def test_bad_audio_request(env: Env, params: dict[str, str | None], word: str) -> None:
    query = {k: v for k, v in {"purpose": PURPOSE, **params}.items() if v is not None}
    with env.services.sessions() as session:
        before = session.scalar(select(AccessLog.seq).order_by(AccessLog.seq.desc()).limit(1)) or 0
    reply = env.client.post(f"/v1/evidence/{env.good.id}/audio", json=query, headers=bearer(env.officer))
    refused(reply, 422, word)
    with env.services.sessions() as session:
        reads = session.scalars(
            select(AccessLog).where(AccessLog.seq > before, AccessLog.action == "api:evidence:read")
        ).all()
        assert reads == []  # a refused request is not logged as a read


def test_wav_is_accepted(env: Env) -> None:
    reply = env.read_audio(env.good.id, format="wav")
    assert reply.status_code == 200 and reply.content[:4] == b"RIFF"


@pytest.mark.parametrize(
    ("params", "word"),
    [
        pytest.param({"since": "2024-01-01T00:00:00"}, "time zone", id="since-naive"),  # was a 500
        pytest.param({"until": "2024-01-01T00:00:00"}, "time zone", id="until-naive"),  # was a 500
        pytest.param({"since": "last tuesday"}, "since", id="since-garbage"),
        pytest.param({"limit": "0"}, "limit", id="limit-zero"),
        pytest.param({"limit": "1000000"}, "limit", id="limit-huge"),
        pytest.param({"incident": "perhaps"}, "incident", id="incident-not-bool"),
    ],
)
def test_bad_evidence_query(env: Env, params: dict[str, str], word: str) -> None:
    refused(env.client.get("/v1/evidence", params=params, headers=bearer(env.officer)), 422, word)


def test_evidence_query_with_zone_still_works(env: Env) -> None:
    reply = env.client.get("/v1/evidence", params={"since": "2000-01-01T00:00:00+09:00"}, headers=bearer(env.officer))
    assert reply.status_code == 200 and str(env.good.id) in reply.text


@pytest.mark.parametrize("url", ["/v1/audit", "/v1/audit/checkpoints", "/v1/audit/export"])
@pytest.mark.parametrize(
    "params",
    [
        pytest.param({"after": str(10**30)}, id="after-huge"),  # was a 500 (SQLite integer overflow)
        pytest.param({"after": "-1"}, id="after-negative"),
        pytest.param({"after": "abc"}, id="after-text"),
        pytest.param({"limit": "0"}, id="limit-zero"),
        pytest.param({"limit": "abc"}, id="limit-text"),
        pytest.param({"until": "0"}, id="until-zero"),
        pytest.param({"until": str(10**30)}, id="until-huge"),
    ],
)
def test_bad_audit_query(env: Env, url: str, params: dict[str, str]) -> None:
    """The log, its (public) checkpoints and its export; a parameter an endpoint does not take is ignored."""
    reply = env.client.get(url, params=params, headers=bearer(env.auditor))
    [name] = params
    takes = {"/v1/audit": {"after", "limit"}, "/v1/audit/checkpoints": {"after", "limit"}}.get(url, {"after", "until"})
    if name in takes:
        refused(reply, 422, name)
    else:
        assert reply.status_code == 200, reply.text


# --------------------------------------------------------------------------- fuzzing


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=16,
)
HEADER_KEYS = ("version", "recording_id", "device_id", "started_at", "consent", "sample_rate", "channels")
CONSENT_KEYS = (
    "notice_id",
    "notice_version",
    "notice_sha256",
    "language",
    "method",
    "presented_at",
    "decided_at",
    "outcome",
    "staff_code",
)
FUZZ = settings(
    max_examples=50,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@FUZZ
@given(
    kind=st.sampled_from(["raw", "body", "header", "consent"]),
    value=JSON,
    body_key=st.sampled_from(["header", "header_signature", "sealed_keys"]),
    key=st.sampled_from(HEADER_KEYS),
    consent_key=st.sampled_from(CONSENT_KEYS),
    outcome=st.sampled_from(["given", "objected"]),
)
def test_fuzz_recording_create(
    env: Env, kind: str, value: Any, body_key: str, key: str, consent_key: str, outcome: str
) -> None:
    """Random JSON at every depth; headers are signed again so the checks behind the signature are reached."""
    rec = env.device.new_recording(outcome)
    if kind == "raw":
        body: Any = value
    elif kind == "body":
        body = {**rec.create_body(), body_key: value}
    elif kind == "header":
        body = resign(env.device, rec, lambda h: h.update({key: value}))
    else:
        body = resign(env.device, rec, lambda h: h["consent"].update({consent_key: value}))
    reply = env.client.post(
        "/v1/recordings",
        content=json.dumps(body).encode(),
        headers={**env.device.auth, "Content-Type": "application/json"},
    )
    assert reply.status_code < 500, reply.text
    assert reply.status_code in (200, 201) or reply.json()["detail"]
    if reply.status_code < 300:  # whatever was accepted must not break the officers' views
        assert env.client.get("/v1/evidence", headers=bearer(env.officer)).status_code == 200
        assert env.client.get(f"/v1/evidence/{rec.id}", headers=bearer(env.officer)).status_code == 200


HEADER_TEXT = st.text(alphabet=string.ascii_letters + string.digits + string.punctuation + " ", max_size=140)
HEX = st.integers(0, 70).flatmap(lambda n: st.binary(min_size=n, max_size=n)).map(bytes.hex)
SEGMENT_HEADERS = ("X-Signature", "X-Plaintext-Sha256", "X-Prev-Hash", "X-Segment-Final", "X-Other")


@pytest.fixture(scope="module")
def fuzz_target(env: Env) -> SimRecording:
    return env.open_recording(2)


@FUZZ
@given(
    body=st.binary(max_size=4096),
    overrides=st.dictionaries(st.sampled_from(SEGMENT_HEADERS), HEX | HEADER_TEXT, max_size=4),
    drop=st.lists(st.sampled_from(SEGMENT_HEADERS[:4]), max_size=2),
    index=st.one_of(st.integers(-(2**40), 2**40), st.sampled_from([0, 1])).map(str) | HEADER_TEXT.filter(bool),
    target=st.sampled_from(["open", "good", "random"]) | HEADER_TEXT.filter(bool),
)
def test_fuzz_segment_upload(
    env: Env,
    fuzz_target: SimRecording,
    body: bytes,
    overrides: dict[str, str],
    drop: list[str],
    index: str,
    target: str,
) -> None:
    seg = fuzz_target.segments[0]
    headers = {**env.device.segment_headers(seg), **overrides}
    for name in drop:
        headers.pop(name, None)
    rid = {"open": str(fuzz_target.id), "good": str(env.good.id), "random": str(uuid.uuid4())}.get(target)
    url = f"/v1/recordings/{quote(rid or target, safe='')}/segments/{quote(index, safe='')}"
    reply = env.client.put(url, content=body, headers=headers)
    assert reply.status_code < 500, reply.text
    if reply.status_code >= 400:
        assert reply.json()["detail"]
    # Nothing the fuzzer sends can be a valid next segment, so the open recording never moves.
    with env.services.sessions() as session:
        row = session.get(Recording, str(fuzz_target.id))
        assert row is not None and row.segment_count == 0
