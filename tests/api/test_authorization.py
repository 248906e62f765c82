"""Who may call what: a role x endpoint table, every cell tested.

Allowed cells must succeed with a body of the documented shape; refused cells
must answer 401 (no or unknown token) or 403 (wrong role, other site), must
change nothing, and must leave an access-log entry with outcome "denied" that
names the actor. A last test reads the routes off the app itself, so a new
endpoint cannot ship without a row here.

The service is built once per module (building it per cell would cost ~0.3 s
x ~140 cells); every cell that changes state prepares its own fresh target.
"""

from __future__ import annotations

import io
import itertools
import json
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import fastapi.routing
import httpx
import nacl.signing
import numpy as np
import pytest
import soundfile as sf
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import TypeAdapter
from sqlalchemy import func, select

from api.app import create_app
from api.bootstrap import init_data_dir
from api.core.audit import checkpoint_now, record_event
from api.core.models import AccessLog, Alert, Device, EvidenceKey, NoticeAudio, NoticeRow, Recording, Segment, User
from api.core.services import Services
from api.core.settings import Settings
from api.core.storage.interface import segment_key
from api.core.tokens import token_hash
from api.key_custody import Custody
from api.recovery import add_offline
from api.schemas import (
    AccessLogPublic,
    CheckpointPublic,
    ConsistencyProofPublic,
    DeviceCreated,
    DevicePublic,
    EnrolResponse,
    EvidenceKeyPublic,
    InclusionProofPublic,
    NoticeAudioPublic,
    NoticePublic,
    RecordingDetail,
    RecordingPublic,
    SitePublic,
    TreeHeadPublic,
    UserCreated,
    UserPublic,
)
from evidence.audit_actions import Action
from evidence.bundle import completion
from evidence.recovery import OfflineKey
from evidence.sealed import open_document
from retention.deletion import state_of as deletion_state
from retention.models import DeletionRequest, Hold, RetentionPolicy
from retention.schemas import (
    DeletionDone,
    DeletionRequestPublic,
    HoldPublic,
    PolicyChange,
    PolicyPublic,
    RetentionChange,
    TombstonePublic,
)
from tests.support.backends import BACKENDS
from tests.support.factories import SimRecording
from tests.support.world import World, bearer, build_world, delete_early, request_deletion

ROLES = ("anonymous", "bad_token", "device", "officer", "other_officer", "admin", "auditor")
AUTHENTICATED = frozenset(ROLES) - {"anonymous", "bad_token"}
PUBLIC = frozenset(ROLES)
PURPOSE = "authorization matrix test"


# --------------------------------------------------------------------------- the service, once per module


@dataclass(repr=False)
class Env:
    app: FastAPI
    client: TestClient
    world: World
    evidence: SimRecording  # a complete north recording, 3 segments
    actors: dict[str, str]

    def __repr__(self) -> str:
        return f"Env(data_dir={self.services.settings.data_dir})"

    @property
    def services(self) -> Services:
        services: Services = self.app.state.services
        return services

    def auth(self, role: str) -> dict[str, str]:
        tokens = {
            "device": self.world.device.token,
            "officer": self.world.officer,
            "other_officer": self.world.other_officer,
            "admin": self.world.admin,
            "auditor": self.world.auditor,
        }
        if role == "anonymous":
            return {}
        if role == "bad_token":
            return bearer("csu_this-token-was-never-issued")
        return bearer(tokens[role])

    def last_seq(self) -> int:
        with self.services.sessions() as session:
            return session.scalar(select(func.max(AccessLog.seq))) or 0

    def log_since(self, seq: int) -> list[AccessLog]:
        with self.services.sessions() as session:
            return list(session.scalars(select(AccessLog).where(AccessLog.seq > seq).order_by(AccessLog.seq)))

    def recording(self, recording_id: uuid.UUID) -> Recording | None:
        with self.services.sessions() as session:
            return session.get(Recording, str(recording_id))

    def open_recording(self, segments: int = 1) -> SimRecording:
        """A fresh recording of the north device, opened on the server, segments built but not uploaded."""
        rec = self.world.device.new_recording()
        self.world.device.add_segments(rec, segments)
        reply = self.client.post("/v1/recordings", json=rec.create_body(), headers=self.world.device.auth)
        assert reply.status_code == 201, reply.text
        return rec

    def upload(self, rec: SimRecording) -> None:
        for seg in rec.segments:
            reply = self.client.put(
                f"/v1/recordings/{rec.id}/segments/{seg.index}",
                content=seg.envelope,
                headers=self.world.device.segment_headers(seg),
            )
            assert reply.status_code == 201, reply.text


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    data: Path = tmp_path_factory.mktemp("authz") / "server"
    backend = BACKENDS.allocate()  # its own database: it outlives each test's
    settings = Settings(data_dir=data, env="development", **backend.settings)
    init = init_data_dir(settings)
    app = create_app(settings)
    with TestClient(app) as client:
        world = build_world(client, init.admin_token)
        services: Services = app.state.services
        with services.sessions() as session:

            def user_actor(token: str) -> str:
                user = session.scalar(select(User).where(User.token_hash == token_hash(token)))
                assert user is not None
                return f"user:{user.id}"

            actors = {
                "anonymous": "anonymous",
                "bad_token": "anonymous",
                "device": f"device:{world.device.id}",
                "officer": user_actor(world.officer),
                "other_officer": user_actor(world.other_officer),
                "admin": user_actor(world.admin),
                "auditor": user_actor(world.auditor),
            }
        partial = Env(app, client, world, evidence=None, actors=actors)  # type: ignore[arg-type]
        partial.evidence = partial.open_recording(3)
        partial.upload(partial.evidence)
        yield partial
    BACKENDS.release(backend)


# --------------------------------------------------------------------------- the table


@dataclass
class Call:
    """One request to make as some role, and how to check what it did."""

    url: str
    json: Any = None
    content: bytes | None = None
    params: dict[str, str] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    check_ok: Callable[[httpx.Response, str], None] = lambda _reply, _role: None
    check_unchanged: Callable[[], None] = lambda: None


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str  # the route template, exactly as in app.routes
    allowed: frozenset[str]
    prepare: Callable[[Env], Call]
    ok_status: int = 200
    site_scoped: bool = False  # officers of another site are refused, not just other roles
    scope_status: int = 404  # ...answered like a missing id (403 where the site is named in the body)

    def out_of_scope(self, role: str) -> bool:
        return self.site_scoped and role in AUTHENTICATED and "officer" in role and role not in self.allowed

    def expected(self, role: str) -> int:
        if role in self.allowed:
            return self.ok_status
        if self.out_of_scope(role):
            return self.scope_status
        return 401 if role in ("anonymous", "bad_token") else 403

    def answer(self, role: str) -> str:
        """What the caller is told (the log keeps denial_reason)."""
        if self.out_of_scope(role) and self.scope_status == 404:
            return "no such"
        return self.denial_reason(role)

    def denial_reason(self, role: str) -> str:
        if role == "anonymous":
            return "bearer token is required"
        if role == "bad_token":
            return "unknown or revoked token"
        if self.site_scoped and role in AUTHENTICATED and "officer" in role:
            return "outside your scope"
        return f"role {role.removeprefix('other_')} may not do this"


def validate(shape: Any, reply: httpx.Response) -> Any:
    return TypeAdapter(shape).validate_python(reply.json())


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def post_site(env: Env) -> Call:
    site = _unique("site")

    def ok(reply: httpx.Response, _role: str) -> None:
        assert validate(SitePublic, reply) == SitePublic(id=site, name=site)

    def unchanged() -> None:
        assert site not in [s["id"] for s in env.client.get("/v1/sites", headers=env.auth("admin")).json()]

    return Call("/v1/sites", json={"id": site}, check_ok=ok, check_unchanged=unchanged)


def get_sites(_env: Env) -> Call:
    def ok(reply: httpx.Response, _role: str) -> None:
        assert {"north", "south"} <= {s.id for s in validate(list[SitePublic], reply)}

    return Call("/v1/sites", check_ok=ok)


def post_user(env: Env) -> Call:
    name = _unique("user")

    def ok(reply: httpx.Response, _role: str) -> None:
        created = validate(UserCreated, reply)
        assert (created.name, created.role, created.sites) == (name, "officer", ["north"])
        assert created.token.startswith("csu_") and created.pending_approval  # a second person must approve

    def unchanged() -> None:
        assert name not in [u["name"] for u in env.client.get("/v1/users", headers=env.auth("admin")).json()]

    body = {"name": name, "role": "officer", "sites": ["north"]}
    return Call("/v1/users", json=body, check_ok=ok, check_unchanged=unchanged)


def get_users(_env: Env) -> Call:
    def ok(reply: httpx.Response, _role: str) -> None:
        users = validate(list[UserPublic], reply)
        assert {"admin", "olivia", "oscar", "audrey"} <= {u.name for u in users}
        assert "token" not in reply.text  # neither tokens nor their hashes leave

    return Call("/v1/users", check_ok=ok)


def post_device(env: Env) -> Call:
    name = _unique("counter")

    def ok(reply: httpx.Response, _role: str) -> None:
        created = validate(DeviceCreated, reply)
        assert (created.name, created.site, created.enrolled) == (name, "north", False)
        assert created.enrolment_code

    def unchanged() -> None:
        assert name not in [d["name"] for d in env.client.get("/v1/devices", headers=env.auth("admin")).json()]

    return Call("/v1/devices", json={"name": name, "site": "north"}, check_ok=ok, check_unchanged=unchanged)


def get_devices(env: Env) -> Call:
    def ok(reply: httpx.Response, _role: str) -> None:
        devices = {d.id: d for d in validate(list[DevicePublic], reply)}
        assert devices[env.world.device.id].enrolled and devices[env.world.device.id].site == "north"

    return Call("/v1/devices", check_ok=ok)


def _fresh_user(env: Env) -> str:
    reply = env.client.post("/v1/users", json={"name": _unique("user"), "role": "auditor"}, headers=env.auth("admin"))
    assert reply.status_code == 201, reply.text
    user_id: str = reply.json()["id"]
    return user_id


def _fresh_device(env: Env) -> str:
    reply = env.client.post(
        "/v1/devices", json={"name": _unique("counter"), "site": "north"}, headers=env.auth("admin")
    )
    assert reply.status_code == 201, reply.text
    device_id: str = reply.json()["id"]
    return device_id


def _disabled(env: Env, kind: str, ident: str) -> bool:
    listed = env.client.get(f"/v1/{kind}s", headers=env.auth("admin")).json()
    return bool(next(row for row in listed if row["id"] == ident)["disabled"])


def access_change(kind: str, action: str) -> Callable[[Env], Call]:
    """Disable (or enable, after disabling by hand) a fresh user or device: never the world's own."""

    def prepare(env: Env) -> Call:
        ident = _fresh_user(env) if kind == "user" else _fresh_device(env)
        if action == "enable":
            reason = {"reason": "set up for the enable test"}
            assert env.client.post(f"/v1/{kind}s/{ident}/disable", json=reason, headers=env.auth("admin")).is_success
        before = _disabled(env, kind, ident)

        def ok(reply: httpx.Response, _role: str) -> None:
            assert reply.json()["disabled"] is (action == "disable") and _disabled(env, kind, ident) is (
                action == "disable"
            )

        def unchanged() -> None:
            assert _disabled(env, kind, ident) is before

        body = {"reason": f"{action} check for the role table"}
        return Call(f"/v1/{kind}s/{ident}/{action}", json=body, check_ok=ok, check_unchanged=unchanged)

    return prepare


def _pending_officer(env: Env) -> tuple[str, str]:
    reply = env.client.post(
        "/v1/users", json={"name": _unique("user"), "role": "officer", "sites": ["north"]}, headers=env.auth("admin")
    )
    assert reply.status_code == 201 and reply.json()["pending_approval"], reply.text
    return reply.json()["id"], reply.json()["token"]


def approve_user_grant(env: Env) -> Call:
    user_id, token = _pending_officer(env)

    def ok(reply: httpx.Response, role: str) -> None:
        approved = validate(UserPublic, reply)
        assert not approved.pending_approval and approved.approved_by == env.actors[role]
        assert env.client.get("/v1/evidence", headers=bearer(token)).status_code == 200

    def unchanged() -> None:
        assert env.client.get("/v1/evidence", headers=bearer(token)).status_code == 403

    return Call(f"/v1/users/{user_id}/approve", check_ok=ok, check_unchanged=unchanged)


def list_grants(env: Env) -> Call:
    _pending_officer(env)

    def ok(reply: httpx.Response, role: str) -> None:
        pending = validate(list[UserPublic], reply)
        assert all(u.pending_approval for u in pending)
        if role == "other_officer":  # south's officer hears of no north grant
            assert all("north" not in u.sites for u in pending)
        else:
            assert any(u.sites == ["north"] for u in pending)

    return Call("/v1/grants", check_ok=ok)


def rotate_token(env: Env) -> Call:
    def ok(reply: httpx.Response, role: str) -> None:
        new = reply.json()["token"]
        assert env.client.get("/v1/keys", headers=bearer(new)).status_code == 200
        assert env.client.get("/v1/keys", headers=env.auth(role)).status_code == 401  # the old token is gone
        # Put the world's token back, straight into the database, for the cells that follow.
        kind, ident = env.actors[role].split(":", 1)
        old = env.auth(role)["Authorization"].removeprefix("Bearer ")
        with env.services.sessions() as session, session.begin():
            row = session.get(Device, ident) if kind == "device" else session.get(User, ident)
            assert row is not None
            row.token_hash = token_hash(old)

    return Call("/v1/token", check_ok=ok)


def get_notices(_env: Env) -> Call:
    def ok(reply: httpx.Response, _role: str) -> None:
        notices = validate(list[NoticePublic], reply)
        assert {n.language for n in notices} >= {"en", "ja"}

    return Call("/v1/notices", check_ok=ok)


def _fresh_notice(env: Env, reading: bool = False) -> str:
    """A notice of its own (version 1, ja), made by the admin; with a reading if asked."""
    notice_id = _unique("notice")
    body = {"id": notice_id, "language": "ja", "title": "t", "text": f"告知 {notice_id}"}
    made = env.client.post("/v1/notices", json=body, headers=env.auth("admin"))
    assert made.status_code == 201, made.text
    if reading:
        reply = env.client.put(_notice_audio_url(notice_id), content=_tone_wav(), headers=env.auth("admin"))
        assert reply.status_code == 200, reply.text
    return notice_id


def _notice_audio_url(notice_id: str) -> str:
    return f"/v1/notices/{notice_id}/versions/1/ja/audio"


def _tone_wav() -> bytes:
    out = io.BytesIO()
    sf.write(out, np.zeros(1600, dtype=np.int16), 16000, format="WAV", subtype="PCM_16")
    return out.getvalue()


def _audio_of(env: Env, notice_id: str) -> NoticeAudio | None:
    with env.services.sessions() as session:
        return session.get(NoticeAudio, (notice_id, 1, "ja"))


def post_notice(env: Env) -> Call:
    notice_id = _unique("notice")

    def ok(reply: httpx.Response, _role: str) -> None:
        made = validate(NoticePublic, reply)
        assert (made.id, made.version, made.audio) == (notice_id, 1, False)

    def unchanged() -> None:
        with env.services.sessions() as session:
            assert session.get(NoticeRow, (notice_id, 1, "ja")) is None

    body = {"id": notice_id, "language": "ja", "title": "t", "text": "告知文"}
    return Call("/v1/notices", json=body, check_ok=ok, check_unchanged=unchanged)


def notice_audio_change(generate: bool) -> Callable[[Env], Call]:
    def prepare(env: Env) -> Call:
        notice_id = _fresh_notice(env)

        def ok(reply: httpx.Response, _role: str) -> None:
            meta = validate(NoticeAudioPublic, reply)
            assert (meta.notice_id, meta.source) == (notice_id, "espeak-ng" if generate else "upload")

        def unchanged() -> None:
            assert _audio_of(env, notice_id) is None

        url = _notice_audio_url(notice_id)
        if generate:
            return Call(url + "/generate", check_ok=ok, check_unchanged=unchanged)
        return Call(url, content=_tone_wav(), check_ok=ok, check_unchanged=unchanged)

    return prepare


def get_notice_audio(env: Env) -> Call:
    notice_id = _fresh_notice(env, reading=True)

    def ok(reply: httpx.Response, _role: str) -> None:
        assert reply.headers["content-type"] == "audio/wav" and reply.content[:4] == b"RIFF"

    return Call(_notice_audio_url(notice_id), check_ok=ok)


def get_keys(env: Env) -> Call:
    def ok(reply: httpx.Response, _role: str) -> None:
        keys = validate(list[EvidenceKeyPublic], reply)
        assert {k.key_id: bytes.fromhex(k.public_key) for k in keys} == env.world.device.evidence_keys

    return Call("/v1/keys", check_ok=ok)


def post_enrol(env: Env) -> Call:
    """Enrolment is authenticated by its one-time code, not by a bearer token: every caller with a code may."""
    created = env.client.post(
        "/v1/devices", json={"name": _unique("enrol"), "site": "south"}, headers=env.auth("admin")
    )
    assert created.status_code == 201, created.text
    device_id = created.json()["id"]
    key = bytes(nacl.signing.SigningKey.generate().verify_key).hex()

    def ok(reply: httpx.Response, _role: str) -> None:
        enrolled = validate(EnrolResponse, reply)
        assert (enrolled.device_id, enrolled.site) == (device_id, "south")
        assert enrolled.token and enrolled.evidence_keys and enrolled.notices

    return Call("/v1/enrol", json={"code": created.json()["enrolment_code"], "public_key": key}, check_ok=ok)


def get_health(_env: Env) -> Call:
    def ok(reply: httpx.Response, _role: str) -> None:
        assert reply.json() == {"status": "ok"}

    return Call("/healthz", check_ok=ok)


def get_openapi(_env: Env) -> Call:
    def ok(reply: httpx.Response, _role: str) -> None:
        spec = reply.json()
        assert spec["info"]["title"] == "Countersign" and "/v1/evidence/{recording_id}/audio" in spec["paths"]

    return Call("/openapi.json", check_ok=ok)


def html_page(url: str, marker: str) -> Callable[[Env], Call]:
    def prepare(_env: Env) -> Call:
        def ok(reply: httpx.Response, _role: str) -> None:
            assert reply.headers["content-type"].startswith("text/html") and marker in reply.text.lower()

        return Call(url, check_ok=ok)

    return prepare


def static_file(url: str, content_type: str) -> Callable[[Env], Call]:
    def prepare(_env: Env) -> Call:
        def ok(reply: httpx.Response, _role: str) -> None:
            assert reply.headers["content-type"].startswith(content_type) and reply.content

        return Call(url, check_ok=ok)

    return prepare


def post_recording(env: Env) -> Call:
    rec = env.world.device.new_recording()

    def ok(reply: httpx.Response, _role: str) -> None:
        assert reply.json() == {"id": str(rec.id), "status": "open"}
        assert env.recording(rec.id) is not None

    def unchanged() -> None:
        assert env.recording(rec.id) is None

    return Call("/v1/recordings", json=rec.create_body(), check_ok=ok, check_unchanged=unchanged)


def put_segment(env: Env) -> Call:
    rec = env.open_recording(2)
    seg = rec.segments[0]

    def stored() -> tuple[int, bool, bool]:
        recording = env.recording(rec.id)
        assert recording is not None
        with env.services.sessions() as session:
            row = session.get(Segment, (str(rec.id), 0))
        return recording.segment_count, row is not None, env.services.store.exists(segment_key(str(rec.id), 0))

    def ok(reply: httpx.Response, _role: str) -> None:
        assert reply.content == b""
        assert stored() == (1, True, True)

    def unchanged() -> None:
        assert stored() == (0, False, False)

    headers = {"Content-Type": "application/octet-stream", **seg.headers}
    url = f"/v1/recordings/{rec.id}/segments/0"
    return Call(url, content=seg.envelope, headers=headers, check_ok=ok, check_unchanged=unchanged)


def post_interrupt(env: Env) -> Call:
    rec = env.open_recording()

    def status() -> str:
        recording = env.recording(rec.id)
        assert recording is not None
        return recording.status

    def ok(reply: httpx.Response, _role: str) -> None:
        assert reply.json() == {"id": str(rec.id), "status": "interrupted"}
        assert status() == "interrupted"

    def unchanged() -> None:
        assert status() == "open"

    return Call(f"/v1/recordings/{rec.id}/interrupt", check_ok=ok, check_unchanged=unchanged)


def post_incident(env: Env) -> Call:
    rec = env.open_recording()

    def category() -> str | None:
        recording = env.recording(rec.id)
        assert recording is not None
        return recording.incident_category

    def ok(reply: httpx.Response, _role: str) -> None:
        assert reply.json() == {"id": str(rec.id), "incident_category": "verbal-abuse"}
        assert category() == "verbal-abuse"

    def unchanged() -> None:
        assert category() is None

    url = f"/v1/recordings/{rec.id}/incident"
    return Call(url, json={"category": "verbal-abuse"}, check_ok=ok, check_unchanged=unchanged)


def list_evidence(env: Env) -> Call:
    def ok(reply: httpx.Response, role: str) -> None:
        listed = validate(list[RecordingPublic], reply)
        if role == "officer":
            assert str(env.evidence.id) in {r.id for r in listed}
        assert all(r.site == ("north" if role == "officer" else "south") for r in listed)

    return Call("/v1/evidence", check_ok=ok)


def show_evidence(env: Env) -> Call:
    def ok(reply: httpx.Response, _role: str) -> None:
        shown = validate(RecordingDetail, reply)
        assert (shown.id, shown.status, shown.segment_count) == (str(env.evidence.id), "complete", 3)
        assert [s.index for s in shown.segments] == [0, 1, 2]

    return Call(f"/v1/evidence/{env.evidence.id}", check_ok=ok)


def get_audio(env: Env) -> Call:
    def ok(reply: httpx.Response, role: str) -> None:
        assert reply.headers["content-type"].startswith("audio/flac") and reply.content[:4] == b"fLaC"
        assert int(reply.headers["X-Countersign-Frames"]) == 3 * env.world.device.rate
        [read] = [e for e in env.log_since(0) if e.seq == int(reply.headers["X-Countersign-Access-Log"])]
        assert (read.actor, read.action, read.purpose) == (env.actors[role], "api:evidence:read", PURPOSE)

    return Call(f"/v1/evidence/{env.evidence.id}/audio", json={"purpose": PURPOSE}, check_ok=ok)


OFFLINE_KEY = OfflineKey.generate()  # the organisation's offline key, for POST .../sealed


def get_sealed(env: Env) -> Call:
    """A read as ciphertext needs a recording sealed to an offline key: the first call registers
    one (as `countersign keys add-offline`) and the device seals to it too from then on, as a real
    device does after GET /v1/keys; then a fresh recording is read and opened with that key."""
    with env.services.sessions() as session:
        registered = session.get(EvidenceKey, OFFLINE_KEY.key_id) is not None
    if not registered:
        public = env.services.settings.data_dir.parent / "offline.public.json"
        public.write_text(json.dumps(OFFLINE_KEY.public_document()))
        add_offline(Custody(env.services.settings, env.services.keys, env.services.sessions), public)
        env.world.device.evidence_keys[OFFLINE_KEY.key_id] = OFFLINE_KEY.public_key
    rec = env.open_recording(2)
    env.upload(rec)

    def ok(reply: httpx.Response, role: str) -> None:
        document = reply.json()
        opened = open_document(document, OFFLINE_KEY)
        for got, sent in zip(opened.segments, rec.segments, strict=True):
            pcm, _ = sf.read(io.BytesIO(got.plaintext), dtype="int16", always_2d=True)
            np.testing.assert_array_equal(pcm, sent.pcm)
        [read] = [e for e in env.log_since(0) if e.seq == document["access_log"]]
        assert (read.actor, read.action, read.purpose) == (env.actors[role], "api:evidence:read-sealed", PURPOSE)

    return Call(f"/v1/evidence/{rec.id}/sealed", json={"purpose": PURPOSE}, check_ok=ok)


def export_bundle(env: Env) -> Call:
    def ok(reply: httpx.Response, role: str) -> None:
        assert reply.headers["content-type"] == "application/zip" and reply.content[:2] == b"PK"
        [export] = [e for e in env.log_since(0) if e.seq == int(reply.headers["X-Countersign-Access-Log"])]
        assert (export.actor, export.action, export.purpose) == (env.actors[role], "api:evidence:export", PURPOSE)

    body = {"purpose": PURPOSE, "case_ref": "AUTHZ-1", "recipient_public_key": "11" * 32}
    return Call(f"/v1/evidence/{env.evidence.id}/export", json=body, check_ok=ok)


def export_sealed(env: Env) -> Call:
    """An export the officer's client finishes needs a recording sealed to an offline key (get_sealed registers one)."""
    get_sealed(env)  # registers the offline key once
    rec = env.open_recording(1)
    env.upload(rec)

    def ok(reply: httpx.Response, role: str) -> None:
        document = reply.json()
        finished = completion.finish(document, OFFLINE_KEY)  # verifies as the recipient will
        assert sum(name.endswith(".flac") for name in finished) == 1
        [export] = [e for e in env.log_since(0) if e.seq == document["access_log"]]
        assert (export.actor, export.action, export.purpose) == (env.actors[role], "api:evidence:export", PURPOSE)

    body = {"purpose": PURPOSE, "case_ref": "AUTHZ-2", "recipient_public_key": "11" * 32}
    return Call(f"/v1/evidence/{rec.id}/export/sealed", json=body, check_ok=ok)


def get_audit(env: Env) -> Call:
    def ok(reply: httpx.Response, _role: str) -> None:
        entries = validate(list[AccessLogPublic], reply)
        assert entries and [e.seq for e in entries] == sorted(e.seq for e in entries)
        assert any(e.action == "api:recording:create" and e.actor == env.actors["device"] for e in entries)

    return Call("/v1/audit", params={"limit": "10000"}, check_ok=ok)


def audit_checkpoints(_env: Env) -> Call:
    def ok(reply: httpx.Response, _role: str) -> None:
        validate(list[CheckpointPublic], reply)

    return Call("/v1/audit/checkpoints", check_ok=ok)


def audit_public_key(env: Env) -> Call:
    def ok(reply: httpx.Response, _role: str) -> None:
        assert reply.json()["algorithm"] == "ed25519" and len(bytes.fromhex(reply.json()["public_key"])) == 32

    return Call("/v1/audit/public-key", check_ok=ok)


def _signed_sizes(env: Env) -> tuple[int, int]:
    """Two signed tree heads, an entry apart (the service signs every 1,000 entries on its own)."""
    sizes = []
    for _ in range(2):
        with env.services.sessions() as session, session.begin():
            record_event(session, actor="system", action=Action.AUDIT_READ, detail={"authz": "tree heads"})
            sizes.append(checkpoint_now(session))
    return sizes[0], sizes[1]


def audit_tree_heads(env: Env) -> Call:
    _signed_sizes(env)

    def ok(reply: httpx.Response, _role: str) -> None:
        assert validate(list[TreeHeadPublic], reply)

    return Call("/v1/audit/tree-heads", check_ok=ok)


def audit_tree_head(env: Env) -> Call:
    _, size = _signed_sizes(env)

    def ok(reply: httpx.Response, _role: str) -> None:
        assert validate(TreeHeadPublic, reply).size == size

    return Call("/v1/audit/tree-head", params={"size": str(size)}, check_ok=ok)


def audit_consistency(env: Env) -> Call:
    old, new = _signed_sizes(env)

    def ok(reply: httpx.Response, _role: str) -> None:
        proof = validate(ConsistencyProofPublic, reply)
        assert (proof.old.size, proof.new.size) == (old, new)

    return Call("/v1/audit/consistency", params={"old": str(old), "new": str(new)}, check_ok=ok)


def audit_proof(env: Env) -> Call:
    def ok(reply: httpx.Response, _role: str) -> None:
        proof = validate(InclusionProofPublic, reply)
        assert proof.leaf_index == 0 and proof.tree_size >= 1

    return Call("/v1/audit/proof/1", check_ok=ok)


def audit_export(_env: Env) -> Call:
    def ok(reply: httpx.Response, _role: str) -> None:
        assert reply.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(line) for line in reply.text.splitlines()]
        assert lines[0]["type"] == "header" and any(line["type"] == "entry" for line in lines)

    return Call("/v1/audit/export", check_ok=ok)


def audit_custody(env: Env) -> Call:
    def ok(reply: httpx.Response, _role: str) -> None:
        entries = validate(list[AccessLogPublic], reply)
        assert entries and {e.target for e in entries} == {f"recording:{env.evidence.id}"}
        assert "api:recording:create" in {e.action for e in entries}

    return Call(f"/v1/audit/custody/{env.evidence.id}", check_ok=ok)


# --- retention: legal holds (officers, own sites), policies (admins), lifecycle actions (officers, own sites)

REASON = "authorization matrix: a reason long enough to log"
_policy_days = itertools.count(1000)


def _hold(env: Env, rec: SimRecording) -> str:
    """A fresh north hold over one explicit recording (never a scope: that would hold every north recording)."""
    body = {"case_ref": _unique("CASE"), "reason": REASON, "recordings": [str(rec.id)]}
    created = env.client.post("/v1/holds", json=body, headers=env.auth("officer"))
    assert created.status_code == 201, created.text
    hold_id: str = created.json()["id"]
    return hold_id


def _hold_row(env: Env, hold_id: str) -> Hold | None:
    with env.services.sessions() as session:
        return session.get(Hold, hold_id)


def post_hold(env: Env) -> Call:
    rec = env.open_recording()
    case = _unique("CASE")

    def holds() -> list[Hold]:
        with env.services.sessions() as session:
            return list(session.scalars(select(Hold).where(Hold.case_ref == case)))

    def ok(reply: httpx.Response, _role: str) -> None:
        hold = validate(HoldPublic, reply)
        assert (hold.case_ref, hold.site, hold.recordings, hold.active) == (case, "north", [str(rec.id)], True)
        assert len(holds()) == 1

    def unchanged() -> None:
        assert holds() == []

    body = {"case_ref": case, "reason": REASON, "recordings": [str(rec.id)]}
    return Call("/v1/holds", json=body, check_ok=ok, check_unchanged=unchanged)


def list_holds(env: Env) -> Call:
    hold_id = _hold(env, env.open_recording())

    def ok(reply: httpx.Response, role: str) -> None:
        listed = validate(list[HoldPublic], reply)
        assert all(h.site == ("north" if role == "officer" else "south") for h in listed)
        assert (hold_id in {h.id for h in listed}) == (role == "officer")

    return Call("/v1/holds", check_ok=ok)


def show_hold(env: Env) -> Call:
    hold_id = _hold(env, env.open_recording())

    def ok(reply: httpx.Response, _role: str) -> None:
        hold = validate(HoldPublic, reply)
        assert (hold.id, hold.active, hold.covers) == (hold_id, True, 1)

    return Call(f"/v1/holds/{hold_id}", check_ok=ok)


def release_hold(env: Env) -> Call:
    hold_id = _hold(env, env.open_recording())

    def released() -> bool:
        hold = _hold_row(env, hold_id)
        assert hold is not None
        return hold.released_at is not None

    def ok(reply: httpx.Response, role: str) -> None:
        hold = validate(HoldPublic, reply)
        assert (hold.active, hold.released_by, hold.release_reason) == (False, env.actors[role], REASON)
        assert released()

    def unchanged() -> None:
        assert not released()

    url = f"/v1/holds/{hold_id}/release"
    return Call(url, json={"reason": REASON}, check_ok=ok, check_unchanged=unchanged)


def _stored_policy(env: Env, site: str, category: str) -> RetentionPolicy | None:
    with env.services.sessions() as session:
        return session.get(RetentionPolicy, (site, category))


def get_policies(_env: Env) -> Call:
    def ok(reply: httpx.Response, _role: str) -> None:
        rules = validate(list[PolicyPublic], reply)
        assert {"routine", "incident", "objection", "interrupted"} <= {r.category for r in rules if r.site is None}

    return Call("/v1/policies", check_ok=ok)


def put_policy(env: Env) -> Call:
    days = next(_policy_days)

    def ok(reply: httpx.Response, _role: str) -> None:
        change = validate(PolicyChange, reply)
        assert change.rule is not None and (change.rule.site, change.rule.retain_days) == ("south", days)

    def unchanged() -> None:
        row = _stored_policy(env, "south", "interrupted")
        assert row is None or row.retain_days != days

    body = {"category": "interrupted", "site": "south", "retain_days": days}
    return Call("/v1/policies", json=body, check_ok=ok, check_unchanged=unchanged)


def delete_policy(env: Env) -> Call:
    body = {"category": "objection", "site": "south", "retain_days": next(_policy_days)}
    assert env.client.put("/v1/policies", json=body, headers=env.auth("admin")).status_code == 200

    def ok(reply: httpx.Response, _role: str) -> None:
        validate(PolicyChange, reply)
        assert _stored_policy(env, "south", "objection") is None

    def unchanged() -> None:
        assert _stored_policy(env, "south", "objection") is not None

    params = {"category": "objection", "site": "south"}
    return Call("/v1/policies", params=params, check_ok=ok, check_unchanged=unchanged)


def flag_evidence(env: Env) -> Call:
    rec = env.open_recording()

    def ok(reply: httpx.Response, _role: str) -> None:
        change = validate(RetentionChange, reply)
        assert (change.id, change.incident_category) == (str(rec.id), "complaint")

    def unchanged() -> None:
        row = env.recording(rec.id)
        assert row is not None and row.incident_category is None

    url = f"/v1/evidence/{rec.id}/flag"
    return Call(url, json={"category": "complaint"}, check_ok=ok, check_unchanged=unchanged)


def extend_evidence(env: Env) -> Call:
    rec = env.open_recording()
    until = (datetime.now(UTC) + timedelta(days=400)).replace(microsecond=0)

    def ok(reply: httpx.Response, _role: str) -> None:
        change = validate(RetentionChange, reply)
        assert change.retain_extended_until == until

    def unchanged() -> None:
        row = env.recording(rec.id)
        assert row is not None and row.retain_extended_until is None

    body = {"until": until.isoformat(), "reason": REASON}
    return Call(f"/v1/evidence/{rec.id}/extend", json=body, check_ok=ok, check_unchanged=unchanged)


def _deletion_state(env: Env, request_id: str) -> str:
    with env.services.sessions() as session:
        row = session.get(DeletionRequest, request_id)
        assert row is not None
        return deletion_state(row)


def _requested_by_second_officer(env: Env) -> tuple[SimRecording, str]:
    """A fresh uploaded recording whose early deletion the other north officer asked for."""
    rec = env.open_recording(1)
    env.upload(rec)
    asked = request_deletion(env.client, env.world.second_officer, rec.id, REASON)
    assert asked.status_code == 202, asked.text
    return rec, asked.json()["id"]


def request_evidence_deletion(env: Env) -> Call:
    rec = env.open_recording(1)
    env.upload(rec)

    def pending(session_rec: SimRecording) -> list[DeletionRequest]:
        with env.services.sessions() as session:
            return list(session.scalars(select(DeletionRequest).where(DeletionRequest.recording_id == str(rec.id))))

    def ok(reply: httpx.Response, _role: str) -> None:
        asked = validate(DeletionRequestPublic, reply)
        assert (asked.recording_id, asked.state, asked.site) == (str(rec.id), "pending", "north")
        row = env.recording(rec.id)
        assert row is not None and row.purge_state is None  # asked, not done: one officer alone deletes nothing

    def unchanged() -> None:
        assert pending(rec) == []
        assert env.services.store.exists(segment_key(str(rec.id), 0))

    return Call(f"/v1/evidence/{rec.id}/deletion", json={"reason": REASON}, check_ok=ok, check_unchanged=unchanged)


def list_deletions(env: Env) -> Call:
    _, request_id = _requested_by_second_officer(env)

    def ok(reply: httpx.Response, role: str) -> None:
        listed = {r.id: r for r in validate(list[DeletionRequestPublic], reply)}
        assert (request_id in listed) is (role == "officer")  # south's officer sees none of north's
        assert all(r.site == ("north" if role == "officer" else "south") for r in listed.values())

    return Call("/v1/deletions", check_ok=ok)


def approve_deletion(env: Env) -> Call:
    rec, request_id = _requested_by_second_officer(env)

    def ok(reply: httpx.Response, _role: str) -> None:
        done = validate(DeletionDone, reply)
        assert done.recording_id == str(rec.id) and done.state in ("purged", "shredding")
        row = env.recording(rec.id)
        assert row is not None and row.purge_state is not None

    def unchanged() -> None:
        row = env.recording(rec.id)
        assert row is not None and row.purge_state is None
        assert _deletion_state(env, request_id) == "pending"

    return Call(f"/v1/deletions/{request_id}/approve", check_ok=ok, check_unchanged=unchanged)


def cancel_deletion(env: Env) -> Call:
    _, request_id = _requested_by_second_officer(env)

    def ok(reply: httpx.Response, _role: str) -> None:
        assert validate(DeletionRequestPublic, reply).state == "cancelled"
        assert _deletion_state(env, request_id) == "cancelled"

    def unchanged() -> None:
        assert _deletion_state(env, request_id) == "pending"

    body = {"reason": "the data subject withdrew the request"}
    return Call(f"/v1/deletions/{request_id}/cancel", json=body, check_ok=ok, check_unchanged=unchanged)


def get_tombstone(env: Env) -> Call:
    rec = env.open_recording(1)
    env.upload(rec)
    deleted = delete_early(env.client, env.world, rec.id, REASON)
    assert deleted.status_code == 200, deleted.text

    def ok(reply: httpx.Response, _role: str) -> None:
        tomb = validate(TombstonePublic, reply)
        assert (tomb.recording_id, tomb.site) == (str(rec.id), "north")

    return Call(f"/v1/evidence/{rec.id}/tombstone", check_ok=ok)


# Help alerts (api/routes/alerts.py): raised by the north device, answered by north's officers, set up by admins.
_zones = itertools.count(1)


def _alert_state(env: Env, alert_id: str) -> str | None:
    with env.services.sessions() as session:
        alert = session.get(Alert, alert_id)
        return alert.state if alert is not None else None


def _raised(env: Env) -> str:
    rec = env.open_recording()
    reply = env.client.post(
        "/v1/alerts", json={"kind": "help", "recording_id": str(rec.id)}, headers=env.auth("device")
    )
    assert reply.status_code == 201, reply.text
    alert_id: str = reply.json()["id"]
    return alert_id


def post_alert(env: Env) -> Call:
    rec = env.open_recording()

    def alerts() -> list[Alert]:
        with env.services.sessions() as session:
            return list(session.scalars(select(Alert).where(Alert.recording_id == str(rec.id))))

    def ok(reply: httpx.Response, _role: str) -> None:
        assert reply.json()["state"] == "open" and [a.id for a in alerts()] == [reply.json()["id"]]

    def unchanged() -> None:
        assert alerts() == []

    body = {"kind": "help", "recording_id": str(rec.id)}
    return Call("/v1/alerts", json=body, check_ok=ok, check_unchanged=unchanged)


def list_alerts(env: Env) -> Call:
    alert_id = _raised(env)

    def ok(reply: httpx.Response, role: str) -> None:
        listed = [a["id"] for a in reply.json()]
        assert (alert_id in listed) is (role == "officer")

    return Call("/v1/alerts", check_ok=ok)


def alert_stream(env: Env) -> Call:
    alert_id = _raised(env)

    def ok(reply: httpx.Response, role: str) -> None:
        assert reply.headers["content-type"].startswith("text/event-stream")
        assert (alert_id in reply.text) is (role == "officer")

    return Call("/v1/alerts/stream", params={"timeout": "0"}, check_ok=ok)


def show_alert(env: Env) -> Call:
    alert_id = _raised(env)

    def ok(reply: httpx.Response, _role: str) -> None:
        assert reply.json()["id"] == alert_id and reply.json()["device_name"] == "counter-n1"

    return Call(f"/v1/alerts/{alert_id}", check_ok=ok)


def ack_alert(env: Env) -> Call:
    alert_id = _raised(env)

    def ok(reply: httpx.Response, _role: str) -> None:
        assert reply.json()["message"] == "Sato is coming" and _alert_state(env, alert_id) == "acknowledged"

    def unchanged() -> None:
        assert _alert_state(env, alert_id) != "acknowledged"

    return Call(
        f"/v1/alerts/{alert_id}/ack", json={"message": "Sato is coming"}, check_ok=ok, check_unchanged=unchanged
    )


def post_heartbeat(env: Env) -> Call:
    body = {"clock": datetime.now(UTC).isoformat(), "spool_used_bytes": 0, "spool_max_bytes": 10, "unsent_segments": 0}

    def ok(reply: httpx.Response, _role: str) -> None:
        assert abs(reply.json()["skew_seconds"]) < 60

    return Call("/v1/device/heartbeat", json=body, check_ok=ok)


def device_settings(_env: Env) -> Call:
    def ok(reply: httpx.Response, _role: str) -> None:
        assert reply.json()["site"] == "north" and reply.json()["incident_categories"]

    return Call("/v1/device/settings", check_ok=ok)


def _alerting(env: Env, site: str) -> dict[str, Any]:
    shown: dict[str, Any] = env.client.get(f"/v1/sites/{site}/alerting", headers=env.auth("admin")).json()
    return shown


def show_alerting(_env: Env) -> Call:
    def ok(reply: httpx.Response, _role: str) -> None:
        assert reply.json()["site"] == "south" and "secret" not in reply.text

    return Call("/v1/sites/south/alerting", check_ok=ok)


def put_alerting(env: Env) -> Call:
    zone = f"Etc/GMT-{next(_zones) % 12 + 1}"
    before = _alerting(env, "south")["timezone"]

    def ok(reply: httpx.Response, _role: str) -> None:
        assert reply.json()["timezone"] == zone == _alerting(env, "south")["timezone"]

    def unchanged() -> None:
        assert _alerting(env, "south")["timezone"] == before

    return Call("/v1/sites/south/alerting", json={"timezone": zone}, check_ok=ok, check_unchanged=unchanged)


def _contact_ids(env: Env) -> list[str]:
    return [c["id"] for c in _alerting(env, "south")["contacts"]]


def post_contact(env: Env) -> Call:
    address = f"{_unique('sup')}@example.org"

    def targets() -> list[str]:
        return [c["target"] for c in _alerting(env, "south")["contacts"]]

    def ok(reply: httpx.Response, _role: str) -> None:
        assert reply.json()["target"] == address and address in targets()

    def unchanged() -> None:
        assert address not in targets()

    return Call(
        "/v1/sites/south/alert-contacts", json={"tier": 1, "email": address}, check_ok=ok, check_unchanged=unchanged
    )


def delete_contact(env: Env) -> Call:
    reply = env.client.post(
        "/v1/sites/south/alert-contacts", json={"tier": 1, "email": "gone@example.org"}, headers=env.auth("admin")
    )
    contact_id = reply.json()["id"]

    def ok(_reply: httpx.Response, _role: str) -> None:
        assert contact_id not in _contact_ids(env)

    def unchanged() -> None:
        assert contact_id in _contact_ids(env)

    return Call(f"/v1/sites/south/alert-contacts/{contact_id}", check_ok=ok, check_unchanged=unchanged)


OFFICERS = frozenset({"officer", "other_officer"})
NORTH_OFFICER = frozenset({"officer"})
ADMIN = frozenset({"admin"})

ENDPOINTS = (
    Endpoint("POST", "/v1/sites", frozenset({"admin"}), post_site, ok_status=201),
    Endpoint("GET", "/v1/sites", frozenset({"admin"}), get_sites),
    Endpoint("POST", "/v1/users", frozenset({"admin"}), post_user, ok_status=201),
    Endpoint("GET", "/v1/users", frozenset({"admin"}), get_users),
    Endpoint("POST", "/v1/devices", frozenset({"admin"}), post_device, ok_status=201),
    Endpoint("GET", "/v1/devices", frozenset({"admin"}), get_devices),
    Endpoint("POST", "/v1/users/{user_id}/disable", ADMIN, access_change("user", "disable")),
    Endpoint("POST", "/v1/users/{user_id}/enable", ADMIN, access_change("user", "enable")),
    Endpoint("POST", "/v1/devices/{device_id}/disable", ADMIN, access_change("device", "disable")),
    Endpoint("POST", "/v1/devices/{device_id}/enable", ADMIN, access_change("device", "enable")),
    Endpoint("POST", "/v1/token", AUTHENTICATED, rotate_token),
    Endpoint("GET", "/v1/grants", frozenset({"officer", "other_officer", "auditor"}), list_grants),
    # A north officer's grant: an auditor or a north officer approves; south's officer is out of scope (403).
    Endpoint(
        "POST",
        "/v1/users/{user_id}/approve",
        frozenset({"officer", "auditor"}),
        approve_user_grant,
        site_scoped=True,
        scope_status=403,
    ),
    Endpoint("GET", "/v1/notices", AUTHENTICATED, get_notices),
    Endpoint("GET", "/v1/keys", AUTHENTICATED, get_keys),
    Endpoint("POST", "/v1/notices", ADMIN, post_notice, ok_status=201),
    Endpoint("PUT", "/v1/notices/{notice_id}/versions/{version}/{language}/audio", ADMIN, notice_audio_change(False)),
    Endpoint(
        "POST", "/v1/notices/{notice_id}/versions/{version}/{language}/audio/generate", ADMIN, notice_audio_change(True)
    ),
    Endpoint(
        "GET",
        "/v1/notices/{notice_id}/versions/{version}/{language}/audio",
        frozenset({"device", "admin"}),
        get_notice_audio,
    ),
    Endpoint("POST", "/v1/enrol", PUBLIC, post_enrol),
    Endpoint("POST", "/v1/recordings", frozenset({"device"}), post_recording, ok_status=201),
    Endpoint("PUT", "/v1/recordings/{recording_id}/segments/{index}", frozenset({"device"}), put_segment, 201),
    Endpoint("POST", "/v1/recordings/{recording_id}/interrupt", frozenset({"device"}), post_interrupt),
    Endpoint("POST", "/v1/recordings/{recording_id}/incident", frozenset({"device"}), post_incident),
    Endpoint("GET", "/v1/evidence", OFFICERS, list_evidence),
    Endpoint("GET", "/v1/evidence/{recording_id}", frozenset({"officer"}), show_evidence, site_scoped=True),
    Endpoint("POST", "/v1/evidence/{recording_id}/audio", frozenset({"officer"}), get_audio, site_scoped=True),
    Endpoint("POST", "/v1/evidence/{recording_id}/sealed", frozenset({"officer"}), get_sealed, site_scoped=True),
    Endpoint("POST", "/v1/evidence/{recording_id}/export", frozenset({"officer"}), export_bundle, site_scoped=True),
    Endpoint(
        "POST", "/v1/evidence/{recording_id}/export/sealed", frozenset({"officer"}), export_sealed, site_scoped=True
    ),
    Endpoint("GET", "/v1/audit", frozenset({"auditor"}), get_audit),
    Endpoint("POST", "/v1/holds", NORTH_OFFICER, post_hold, ok_status=201, site_scoped=True),
    Endpoint("GET", "/v1/holds", OFFICERS, list_holds),
    Endpoint("GET", "/v1/holds/{hold_id}", NORTH_OFFICER, show_hold, site_scoped=True),
    Endpoint("POST", "/v1/holds/{hold_id}/release", NORTH_OFFICER, release_hold, site_scoped=True),
    Endpoint("GET", "/v1/policies", ADMIN, get_policies),
    Endpoint("PUT", "/v1/policies", ADMIN, put_policy),
    Endpoint("DELETE", "/v1/policies", ADMIN, delete_policy),
    Endpoint("POST", "/v1/evidence/{recording_id}/flag", NORTH_OFFICER, flag_evidence, site_scoped=True),
    Endpoint("POST", "/v1/evidence/{recording_id}/extend", NORTH_OFFICER, extend_evidence, site_scoped=True),
    Endpoint(
        "POST", "/v1/evidence/{recording_id}/deletion", NORTH_OFFICER, request_evidence_deletion, 202, site_scoped=True
    ),
    Endpoint("GET", "/v1/deletions", OFFICERS, list_deletions),
    Endpoint("POST", "/v1/deletions/{request_id}/approve", NORTH_OFFICER, approve_deletion, site_scoped=True),
    Endpoint("POST", "/v1/deletions/{request_id}/cancel", NORTH_OFFICER, cancel_deletion, site_scoped=True),
    Endpoint("GET", "/v1/evidence/{recording_id}/tombstone", NORTH_OFFICER, get_tombstone, site_scoped=True),
    Endpoint("GET", "/v1/audit/export", frozenset({"auditor"}), audit_export),
    Endpoint("GET", "/v1/audit/proof/{seq}", frozenset({"auditor"}), audit_proof),
    Endpoint(
        "GET", "/v1/audit/custody/{recording_id}", frozenset({"officer", "auditor"}), audit_custody, site_scoped=True
    ),
    Endpoint("POST", "/v1/alerts", frozenset({"device"}), post_alert, ok_status=201),
    Endpoint("GET", "/v1/alerts", OFFICERS, list_alerts),
    Endpoint("GET", "/v1/alerts/stream", OFFICERS, alert_stream),
    Endpoint("GET", "/v1/alerts/{alert_id}", frozenset({"device", "officer"}), show_alert, site_scoped=True),
    Endpoint("POST", "/v1/alerts/{alert_id}/ack", NORTH_OFFICER, ack_alert, site_scoped=True),
    Endpoint("POST", "/v1/device/heartbeat", frozenset({"device"}), post_heartbeat),
    Endpoint("GET", "/v1/device/settings", frozenset({"device"}), device_settings),
    Endpoint("GET", "/v1/sites/{site_id}/alerting", ADMIN, show_alerting),
    Endpoint("PUT", "/v1/sites/{site_id}/alerting", ADMIN, put_alerting),
    Endpoint("POST", "/v1/sites/{site_id}/alert-contacts", ADMIN, post_contact, ok_status=201),
    Endpoint("DELETE", "/v1/sites/{site_id}/alert-contacts/{contact_id}", ADMIN, delete_contact),
    # Unauthenticated by design: liveness, the API description, and what outsiders need to check the log.
    Endpoint("GET", "/healthz", PUBLIC, get_health),
    Endpoint("GET", "/v1/audit/checkpoints", PUBLIC, audit_checkpoints),
    Endpoint("GET", "/v1/audit/public-key", PUBLIC, audit_public_key),
    Endpoint("GET", "/v1/audit/tree-heads", PUBLIC, audit_tree_heads),
    Endpoint("GET", "/v1/audit/tree-head", PUBLIC, audit_tree_head),
    Endpoint("GET", "/v1/audit/consistency", PUBLIC, audit_consistency),
    Endpoint("GET", "/openapi.json", PUBLIC, get_openapi),
    Endpoint("GET", "/docs", PUBLIC, html_page("/docs", "swagger")),
    Endpoint("GET", "/docs/assets/init.js", PUBLIC, static_file("/docs/assets/init.js", "text/javascript")),
    Endpoint("GET", "/docs/assets/{name}", PUBLIC, static_file("/docs/assets/swagger-ui.css", "text/css")),
)

CELLS = [
    pytest.param(ep, role, id=f"{ep.method} {ep.path} as {role} -> {ep.expected(role)}")
    for ep in ENDPOINTS
    for role in ROLES
]


@pytest.mark.parametrize(("endpoint", "role"), CELLS)
def test_cell(env: Env, endpoint: Endpoint, role: str) -> None:
    call = endpoint.prepare(env)
    before = env.last_seq()
    reply = env.client.request(
        endpoint.method,
        call.url,
        json=call.json,
        content=call.content,
        params=call.params,
        headers={**call.headers, **env.auth(role)},
    )
    expected = endpoint.expected(role)
    assert reply.status_code == expected, reply.text
    denied = [e for e in env.log_since(before) if e.outcome == "denied"]
    if 200 <= expected < 300:
        call.check_ok(reply, role)
        assert denied == []
        return

    assert endpoint.answer(role) in reply.json()["detail"]
    if expected == 401:
        assert reply.headers["WWW-Authenticate"] == "Bearer"
    call.check_unchanged()
    [entry] = denied
    assert (entry.actor, entry.action) == (env.actors[role], "api:access:denied")
    assert denied_request(entry) == f"{endpoint.method} {httpx.URL(call.url).path}"
    assert entry.detail["status"] == expected and endpoint.denial_reason(role) in entry.detail["reason"]


RECORDING_IN_PATH = re.compile(r"/([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})(?:/|$)")


def denied_request(entry: AccessLog | AccessLogPublic) -> str:
    """The "METHOD /path" a denial names: its target, or (when the target names the recording
    in the path, for its chain of custody) detail["request"]."""
    request = str(entry.detail.get("request", entry.target))
    if entry.target != request:
        about = RECORDING_IN_PATH.search(request)
        assert about is not None and entry.target == f"recording:{about.group(1)}", (entry.target, request)
    return request


def served_routes(app: FastAPI) -> set[tuple[str, str]]:
    """(method, path) of every route the app serves, included routers flattened.

    FastAPI >= 0.16x keeps included routers as lazy entries in app.routes;
    fastapi.routing.iter_route_contexts flattens them (older versions are flat already).
    """
    flatten = getattr(fastapi.routing, "iter_route_contexts", None)
    served: set[tuple[str, str]] = set()
    for route in flatten(app.routes) if flatten else app.routes:
        methods = getattr(route, "methods", None)
        path = getattr(route, "path", None) or repr(route)
        if not methods:
            served.add(("*", path))  # websocket, mount: not in the table, so it fails loudly
        served.update((m, path) for m in methods or () if m not in ("HEAD", "OPTIONS"))
    return served


# Routes no user token opens, so the role matrix does not apply: their own tests cover who gets in.
OUTSIDE_THE_TABLE = {
    ("GET", "/metrics"): "loopback clients or the metrics token only (tests/api/test_metrics.py)",
    # The web console authenticates by session cookie, not bearer token: its own role x route table
    # (anonymous, officer, other-site officer, admin, auditor) is tests/console/test_routes.py.
    **{
        (method, path): "console: cookie sessions (tests/console/test_routes.py)"
        for method, path in [
            ("GET", "/console"),
            ("GET", "/console/sign-in"),
            ("POST", "/console/sign-in"),
            ("POST", "/console/sign-out"),
            ("GET", "/console/search"),
            ("GET", "/console/recordings/{recording_id}"),
            ("POST", "/console/recordings/{recording_id}/listen"),
            ("GET", "/console/recordings/{recording_id}/player"),
            ("GET", "/console/recordings/{recording_id}/audio"),
            ("GET", "/console/recordings/{recording_id}/waveform.svg"),
            ("POST", "/console/recordings/{recording_id}/holds"),
            ("POST", "/console/holds/{hold_id}/release"),
            ("POST", "/console/recordings/{recording_id}/notes"),
            ("POST", "/console/recordings/{recording_id}/flag"),
            ("POST", "/console/recordings/{recording_id}/extend"),
            ("POST", "/console/recordings/{recording_id}/deletion"),
            ("GET", "/console/static/{name}"),
            ("GET", "/console/alerts"),
            ("GET", "/console/alerts/stream"),
            ("POST", "/console/alerts/{alert_id}/ack"),
            ("GET", "/console/audit"),
            ("GET", "/console/audit/export"),
            ("POST", "/console/audit/verify"),
            ("GET", "/console/deletions"),
            ("POST", "/console/deletions/{request_id}/approve"),
            ("POST", "/console/deletions/{request_id}/cancel"),
            ("POST", "/console/recordings/{recording_id}/export"),
            ("GET", "/console/admin/users"),
            ("POST", "/console/admin/users"),
            ("POST", "/console/admin/users/{user_id}/disable"),
            ("POST", "/console/admin/users/{user_id}/enable"),
            ("POST", "/console/admin/users/{user_id}/credentials"),
            ("GET", "/console/admin/devices"),
            ("POST", "/console/admin/devices"),
            ("POST", "/console/admin/devices/{device_id}/disable"),
            ("POST", "/console/admin/devices/{device_id}/enable"),
            ("GET", "/console/admin/sites"),
            ("POST", "/console/admin/sites"),
            ("GET", "/console/admin/policies"),
            ("POST", "/console/admin/policies"),
            ("POST", "/console/admin/policies/clear"),
            ("GET", "/console/admin/notices"),
            ("POST", "/console/admin/notices"),
            ("GET", "/console/admin/sites/{site_id}/categories"),
            ("POST", "/console/admin/sites/{site_id}/categories"),
            ("POST", "/console/admin/sites/{site_id}/categories/remove"),
        ]
    },
}


def test_every_route_is_in_the_table(env: Env) -> None:
    """A new route (or a mounted sub-application) fails here until it has a row in ENDPOINTS."""
    served = served_routes(env.app) - OUTSIDE_THE_TABLE.keys()
    table = {(ep.method, ep.path) for ep in ENDPOINTS}
    assert served - table == set(), "routes without a row in the authorization table"
    assert table - served == set(), "rows in the authorization table for routes that no longer exist"
    assert len(table) == len(ENDPOINTS), "an endpoint appears twice in the table"


# --------------------------------------------------------------------------- named cases, on a fresh service


def _upload(client: TestClient, world: World, rec: SimRecording) -> None:
    for seg in rec.segments:
        reply = client.put(
            f"/v1/recordings/{rec.id}/segments/{seg.index}",
            content=seg.envelope,
            headers=world.device.segment_headers(seg),
        )
        assert reply.status_code == 201, reply.text


def _denials(client: TestClient, world: World, after: int) -> list[AccessLogPublic]:
    reply = client.get("/v1/audit", params={"after": after}, headers=bearer(world.auditor))
    assert reply.status_code == 200, reply.text
    return [e for e in validate(list[AccessLogPublic], reply) if e.outcome == "denied"]


def _high_water(client: TestClient, world: World) -> int:
    entries = client.get("/v1/audit", headers=bearer(world.auditor), params={"limit": "10000"}).json()
    return max(int(e["seq"]) for e in entries)


def _actor(app: FastAPI, token: str) -> str:
    services: Services = app.state.services
    with services.sessions() as session:
        user = session.scalar(select(User).where(User.token_hash == token_hash(token)))
        assert user is not None
        return f"user:{user.id}"


def test_admin_cannot_read_evidence(app: FastAPI, client: TestClient, world: World) -> None:
    rec = world.device.new_recording()
    world.device.add_segments(rec, 1)
    assert client.post("/v1/recordings", json=rec.create_body(), headers=world.device.auth).status_code == 201
    _upload(client, world, rec)
    mark = _high_water(client, world)
    calls = [("GET", "/v1/evidence"), ("GET", f"/v1/evidence/{rec.id}"), ("POST", f"/v1/evidence/{rec.id}/audio")]
    for method, url in calls:
        reply = client.request(method, url, json={"purpose": "just curious really"}, headers=bearer(world.admin))
        assert reply.status_code == 403 and "role admin may not do this" in reply.json()["detail"]
        assert b"fLaC" not in reply.content
    denials = _denials(client, world, mark)
    assert [(e.actor, denied_request(e)) for e in denials] == [
        (_actor(app, world.admin), f"{method} {url}") for method, url in calls
    ]


def test_device_cannot_upload_to_another_devices_recording(client: TestClient, world: World, app: FastAPI) -> None:
    rec = world.device.new_recording()
    world.device.add_segments(rec, 2)
    assert client.post("/v1/recordings", json=rec.create_body(), headers=world.device.auth).status_code == 201
    # The south device builds a segment it signed itself for the north device's recording id.
    intruder = world.other_device
    seg = intruder.make_segment(
        rec, 0, False, rec.segments[0].pcm, bytes.fromhex(rec.segments[0].headers["X-Prev-Hash"])
    )
    for attempt in (seg, rec.segments[0]):  # its own signature, and a replay of the real device's bytes
        reply = client.put(
            f"/v1/recordings/{rec.id}/segments/0", content=attempt.envelope, headers=intruder.segment_headers(attempt)
        )
        assert reply.status_code == 404 and "no such recording" in reply.json()["detail"]
    for action in ("interrupt", "incident"):
        reply = client.post(f"/v1/recordings/{rec.id}/{action}", json={"category": "x"}, headers=intruder.auth)
        assert reply.status_code == 404
    services: Services = app.state.services
    with services.sessions() as session:
        stored = session.get(Recording, str(rec.id))
        assert stored is not None
        assert (stored.segment_count, stored.status, stored.incident_category) == (0, "open", None)
        assert session.scalars(select(Segment).where(Segment.recording_id == str(rec.id))).all() == []
    assert list(services.store.list(f"recordings/{rec.id}")) == []
    # Each attempt is in the log as a denial by the intruder, though it was answered like "absent".
    with services.sessions() as session:
        denied = session.scalars(
            select(AccessLog).where(AccessLog.target == f"recording:{rec.id}", AccessLog.outcome == "denied")
        ).all()
    assert [e.actor for e in denied] == [f"device:{intruder.id}"] * 4
    # The owner can still upload the real segments afterwards.
    _upload(client, world, rec)


def test_officer_of_another_site_cannot_read_a_north_recording(app: FastAPI, client: TestClient, world: World) -> None:
    rec = world.device.new_recording()
    world.device.add_segments(rec, 1)
    assert client.post("/v1/recordings", json=rec.create_body(), headers=world.device.auth).status_code == 201
    _upload(client, world, rec)
    mark = _high_water(client, world)
    south = bearer(world.other_officer)
    for method, url in (("GET", f"/v1/evidence/{rec.id}"), ("POST", f"/v1/evidence/{rec.id}/audio")):
        reply = client.request(method, url, json={"purpose": "reviewing a complaint"}, headers=south)
        assert reply.status_code == 404 and reply.json()["detail"] == "no such recording"  # as if absent
    # Listing is not refused, it is scoped: the north recording is simply not there, even when asked for.
    for params in ({}, {"site": "north"}):
        listed = client.get("/v1/evidence", params=params, headers=south)
        assert listed.status_code == 200 and str(rec.id) not in listed.text
    denials = _denials(client, world, mark)
    actor = _actor(app, world.other_officer)
    assert [(e.actor, denied_request(e), e.detail["status"]) for e in denials] == [
        (actor, f"GET /v1/evidence/{rec.id}", 404),
        (actor, f"POST /v1/evidence/{rec.id}/audio", 404),
    ]
    # No read was logged as allowed for that officer: nothing left the service.
    entries = client.get("/v1/audit", params={"after": mark}, headers=bearer(world.auditor)).json()
    assert not [e for e in entries if e["action"] == "api:evidence:read"]


def test_auditor_sees_denials_through_the_api(client: TestClient, world: World) -> None:
    mark = _high_water(client, world)
    assert client.get("/v1/users").status_code == 401
    assert client.get("/v1/users", headers={"Authorization": "Basic YWRtaW46YWRtaW4="}).status_code == 401
    assert client.get("/v1/users", headers=world.device.auth).status_code == 403
    denials = _denials(client, world, mark)
    assert [(e.actor, denied_request(e), e.detail["status"]) for e in denials] == [
        ("anonymous", "GET /v1/users", 401),
        ("anonymous", "GET /v1/users", 401),
        (f"device:{world.device.id}", "GET /v1/users", 403),
    ]
    only = client.get("/v1/audit", params={"after": mark, "target": "GET /v1/users"}, headers=bearer(world.auditor))
    assert len(only.json()) == 3
