"""A stranger with no token tries to poison the audit log; people type control characters into text fields.

The log must record what happened, never the attacker's bytes verbatim: request
paths are escaped and bounded, unauthenticated failures are rate-limited and
summarised, the export is plain ASCII so every reader splits it into the same
lines, and text fields refuse what cannot be seen.
"""

from __future__ import annotations

import urllib.parse
import uuid

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from api.app import create_app
from api.core.models import AccessLog
from api.core.services import Services
from api.core.settings import Settings
from evidence.audit_log import verify_export
from evidence.chain import sign_header
from evidence.text import check_text, forbidden, neutral, visible_length
from tests.conftest import World, bearer
from tests.support.factories import consent_record

HOSTILE = [
    "/v1/holds/\u2028line-separator",
    "/v1/holds/\u0085next-line",
    "/v1/holds/\x1b]0;pwned\x07\x1b[2J",  # OSC title change, then clear screen
    "/v1/holds/nul\x00byte",
    "/v1/holds/" + "A" * 400,
    "/v1/holds/\ud800-lone-surrogate-as-percent",
    "/v1/holds/zero\u200bwidth\u202eoverride",
]


def services_of(client: TestClient) -> Services:
    return client.app.state.services  # type: ignore[attr-defined,no-any-return]


def entries_after(client: TestClient, seq: int) -> list[AccessLog]:
    with services_of(client).sessions() as session:
        return list(session.scalars(select(AccessLog).where(AccessLog.seq > seq).order_by(AccessLog.seq)))


def last_seq(client: TestClient) -> int:
    with services_of(client).sessions() as session:
        return session.scalar(select(AccessLog.seq).order_by(AccessLog.seq.desc()).limit(1)) or 0


def hostile_url(path: str) -> str:
    return urllib.parse.quote(path, safe="/", errors="surrogatepass")


@pytest.mark.parametrize("path", HOSTILE, ids=range(len(HOSTILE)))
def test_a_hostile_path_is_logged_escaped_and_bounded(client: TestClient, world: World, path: str) -> None:
    before = last_seq(client)
    reply = client.get(hostile_url(path))
    assert reply.status_code == 401, reply.text  # never a 500, on SQLite and PostgreSQL alike
    [denial] = entries_after(client, before)
    for text in (denial.target or "", denial.detail["request"]):
        assert not any(forbidden(ch) for ch in text), repr(text)
        assert len(text) <= 200
    assert denial.detail["request"].startswith("GET /v1/holds/")


def test_the_export_is_ascii_and_verifies_however_it_is_split(client: TestClient, world: World) -> None:
    for path in HOSTILE:
        client.get(hostile_url(path))
    reply = client.get("/v1/audit/export", headers=bearer(world.auditor))
    assert reply.status_code == 200
    body = reply.content
    assert body.isascii(), "an export is plain ASCII: JSON escapes carry everything else"
    key = bytes.fromhex(client.get("/v1/audit/public-key").json()["public_key"])
    by_newline = body.decode().split("\n")
    by_any_line_break = body.decode().splitlines()  # what a careless reader does
    assert [line for line in by_newline if line] == by_any_line_break
    report = verify_export(by_any_line_break, key)
    assert report.ok, report.problems


def test_unauthenticated_failures_are_rate_limited_and_summarised(tmp_path, initialised) -> None:  # type: ignore[no-untyped-def]
    settings = Settings(data_dir=tmp_path / "server", env="development", auth_failures_per_minute=5)
    now = [1000.0]
    with TestClient(create_app(settings)) as client:
        services_of(client).failures.clock = lambda: now[0]
        before = last_seq(client)
        answers = [client.get("/v1/users", headers={"Authorization": f"Bearer guess-{i}"}) for i in range(8)]
        assert [a.status_code for a in answers] == [401] * 5 + [429] * 3
        assert all(int(a.headers["Retry-After"]) >= 1 for a in answers[5:])
        logged = entries_after(client, before)
        assert [e.action for e in logged] == ["api:access:denied"] * 5  # the 429s were counted, not written

        now[0] += 61  # the window closes; the next failure brings the count in as one entry
        assert client.get("/v1/users").status_code == 401
        summary, denial = entries_after(client, logged[-1].seq)
        assert summary.action == "api:access:denied-summary" and summary.detail["suppressed"] == 3
        assert denial.action == "api:access:denied"


def test_enrolment_codes_cannot_be_guessed_past_the_limit(tmp_path, initialised) -> None:  # type: ignore[no-untyped-def]
    settings = Settings(data_dir=tmp_path / "server", env="development", auth_failures_per_minute=3)
    now = [1000.0]
    with TestClient(create_app(settings)) as client:
        services_of(client).failures.clock = lambda: now[0]
        admin = bearer(initialised.admin_token)
        assert client.post("/v1/sites", json={"id": "north"}, headers=admin).status_code == 201
        code = client.post("/v1/devices", json={"name": "c1", "site": "north"}, headers=admin).json()["enrolment_code"]
        key = "ab" * 32
        guesses = [client.post("/v1/enrol", json={"code": f"WRONG-{i:04d}", "public_key": key}) for i in range(3)]
        assert [g.status_code for g in guesses] == [403, 403, 403]
        # Blocked before the guess is looked at, even the right code: guessing stops here.
        assert client.post("/v1/enrol", json={"code": code, "public_key": key}).status_code == 429
        now[0] += 61
        assert client.post("/v1/enrol", json={"code": code, "public_key": key}).status_code == 200


INVISIBLE_PURPOSES = [
    "\u200b" * 10,  # zero-width spaces
    "\x00" * 10,
    "\x1b[2J" * 3,
    "ok\u200b\u200b\u200b\u200b\u200b\u200b\u200b\u200b",  # two visible characters padded out
    "Complaint review\x1b]0;x\x07",
    "Complaint review\u2028second line",
    "Complaint \u202ereview 2026",
]


@pytest.mark.parametrize("purpose", INVISIBLE_PURPOSES, ids=range(len(INVISIBLE_PURPOSES)))
def test_purposes_must_be_visible_text(client: TestClient, world: World, purpose: str) -> None:
    rec = world.device.new_recording()
    world.device.add_segments(rec, 1)
    assert client.post("/v1/recordings", json=rec.create_body(), headers=world.device.auth).status_code == 201
    before = last_seq(client)
    reply = client.post(f"/v1/evidence/{rec.id}/audio", json={"purpose": purpose}, headers=bearer(world.officer))
    assert reply.status_code == 422, reply.text
    assert not [e for e in entries_after(client, before) if e.action == "api:evidence:read"]


@pytest.mark.parametrize(
    ("case_ref", "reason"),
    [
        ("CASE\x1b[31m-1", "a proper reason for holding this"),
        ("CASE-1\x00", "a proper reason for holding this"),
        ("CASE-1", " " * 12),
        ("CASE-1", "\u200b" * 12),
        ("CASE-1", "0000\x070000\x07"),
    ],
)
def test_hold_text_fields_refuse_invisible_characters(
    client: TestClient, world: World, case_ref: str, reason: str
) -> None:
    body = {"case_ref": case_ref, "reason": reason, "site": "north"}
    reply = client.post("/v1/holds", json=body, headers=bearer(world.officer))
    assert reply.status_code == 422, reply.text


@pytest.mark.parametrize("staff", ["S-1\x1b[2J", "S\x00", "\u200b", "S-1\u2028"])
def test_staff_codes_refuse_control_characters(client: TestClient, world: World, staff: str) -> None:
    rec = world.device.new_recording()
    rec.header["consent"] = {**consent_record().to_dict(), "staff_code": staff}
    body = {**rec.create_body(), "header_signature": sign_header(world.device.signing_key, rec.header).hex()}
    reply = client.post("/v1/recordings", json=body, headers=world.device.auth)
    assert reply.status_code == 422, reply.text
    assert "staff_code" in reply.text


def test_text_rules() -> None:
    assert visible_length("  a\u200bb  ") == 2
    assert check_text("  Complaint 118  ", name="purpose", min_visible=10) == "Complaint 118"
    with pytest.raises(ValueError, match="U\\+200B"):
        check_text("Complaint\u200b118", name="purpose")
    assert neutral("a\x1bb\u2028c\\") == "a\\x1bb\\u2028c\\x5c"
    long = neutral("x" * 500, 100)
    assert long.startswith("x" * 100) and long.endswith("…(+400)")
    plain = str(uuid.uuid4())
    assert neutral(plain) == plain  # ordinary text passes unchanged
