"""The console's search narrows in SQL: every filter reaches past the newest 1,000 recordings, inside the
officer's sites, and the words typed are only ever text."""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import insert, literal_column, select, update

from api.core.models import AccessLog, Device, Recording, RecordingNote, User, utcnow
from api.search import contains_text
from evidence.audit_actions import Action
from tests.conftest import World, bearer
from tests.console.support import Login, services_of, signed_in
from tests.support.retention_support import age, upload

FILLERS = 1_100  # more than the old code's 1,000-row page
_COUNT = re.compile(r'<p id="count">(\d+) recordings?')


def fill(
    app: FastAPI, device_id: str, site: str, count: int, staff: str = "S-FILL", start: datetime | None = None
) -> None:
    """`count` bare recording rows, newest first from `start`, in one executemany (no uploads: only the
    search reads them). Complete, no segments, consent given, the staff code in the header."""
    start = start or utcnow()
    rows = [
        {
            "id": str(uuid.uuid4()),
            "device_id": device_id,
            "site_id": site,
            "started_at": start - timedelta(minutes=i),
            "status": "complete",
            "header": {"consent": {"staff_code": staff, "outcome": "given"}},
            "header_signature": b"\0" * 64,
            "consent_outcome": "given",
            "segment_count": 0,
            "head_hash": b"\0" * 32,
            "last_activity_at": start - timedelta(minutes=i),
            "created_at": start - timedelta(minutes=i),
        }
        for i in range(count)
    ]
    with services_of(app).sessions() as session, session.begin():
        session.execute(insert(Recording), rows)


def note(app: FastAPI, recording_id: str, text: str) -> None:
    with services_of(app).sessions() as session, session.begin():
        author = session.scalar(select(User.id).where(User.name == "olivia"))
        session.add(RecordingNote(id=str(uuid.uuid4()), recording_id=recording_id, author_id=author, text=text))


def found(officer: TestClient, **params: str) -> tuple[int, str]:
    page = officer.get("/console/search", params=params)
    assert page.status_code == 200, page.text
    match = _COUNT.search(page.text)
    assert match is not None, page.text
    return int(match.group(1)), page.text


@pytest.fixture
def old(client: TestClient, app: FastAPI, world: World, logins: dict[str, Login]) -> str:
    """One real recording (staff S-001, device counter-n1) ten days old, under 1,100 newer ones of
    another staff code at the same site and device, and 1,100 in "south" that match every filter."""
    rid = upload(client, world.device)
    age(services_of(app), rid, 10)
    fill(app, world.device.id, "north", FILLERS)
    fill(app, world.other_device.id, "south", FILLERS, staff="S-001")
    return rid


def test_a_match_older_than_the_newest_thousand_is_found(
    client: TestClient, app: FastAPI, world: World, logins: dict[str, Login], old: str
) -> None:
    officer = signed_in(app, logins["officer"])
    count, text = found(officer, staff="S-001")
    assert count == 1 and f"/console/recordings/{old}" in text  # the 1,100 south rows are not counted
    note(app, old, "Customer shouted at 15:02")
    count, text = found(officer, note="SHOUTED")
    assert count == 1 and f"/console/recordings/{old}" in text
    hold = {"case_ref": "CASE-1", "reason": "a court asked for it", "recordings": [old]}
    reply = client.post("/v1/holds", json=hold, headers=bearer(world.officer))
    assert reply.status_code == 201, reply.text
    count, text = found(officer, held="yes")
    assert count == 1 and f"/console/recordings/{old}" in text and "CASE-1" in text
    released = client.post(
        f"/v1/holds/{reply.json()['id']}/release",
        json={"reason": "the case is closed now"},
        headers=bearer(world.officer),
    )
    assert released.status_code == 200, released.text
    assert found(officer, held="yes")[0] == 0  # a released hold holds nothing
    assert found(officer, held="no", staff="S-001")[0] == 1


def test_each_filter_narrows(
    client: TestClient, app: FastAPI, world: World, logins: dict[str, Login], old: str
) -> None:
    officer = signed_in(app, logins["officer"])
    everything, text = found(officer)
    assert everything == 100 and "more match" in text  # 1,101 in north: the page says there are more
    assert f"/console/recordings/{old}" not in text  # too old for the first page
    # A second device at north: by name (substring, any case) or by exact id.
    with services_of(app).sessions() as session, session.begin():
        session.add(Device(id=str(uuid.uuid4()), name="Back-Office-7", site_id="north"))
        back = session.scalar(select(Device.id).where(Device.name == "Back-Office-7"))
    assert back is not None
    fill(app, back, "north", 3, start=utcnow() - timedelta(days=20))
    assert found(officer, device="office-7")[0] == 3
    assert found(officer, device=back)[0] == 3
    assert found(officer, device="counter-n1", staff="S-001")[0] == 1
    assert found(officer, device="counter-s1")[0] == 0  # south's device: out of scope, not counted
    # Date range and incident, combined with the others in the same statement.
    day = (utcnow() - timedelta(days=10)).strftime("%Y-%m-%d")
    assert found(officer, staff="S-001", **{"from": "2000-01-01", "to": "2000-01-02"})[0] == 0
    assert found(officer, staff="S-001", incident="yes")[0] == 0
    assert found(officer, staff="S-001", incident="no")[0] == 1
    assert found(officer, device="office-7", **{"to": day})[0] == 3
    # Status as shown: an open upload silent past the timeout is "interrupted", not "open".
    with services_of(app).sessions() as session, session.begin():
        session.execute(
            update(Recording)
            .where(Recording.id == old)
            .values(status="open", last_activity_at=utcnow() - timedelta(days=10))
        )
    assert found(officer, status="open")[0] == 0
    count, text = found(officer, status="interrupted")
    assert count == 1 and f"/console/recordings/{old}" in text
    assert found(officer, status="objected")[0] == 0
    assert found(officer, status="complete")[0] == 100  # the fillers, first page
    # Held: a scoped hold (device and time range) covers the old one alone; "not held" is the rest.
    started = utcnow() - timedelta(days=11)
    scope = {"site": "north", "device": world.device.id, "started_from": started.isoformat(),
             "started_to": (started + timedelta(days=2)).isoformat()}  # fmt: skip
    reply = client.post(
        "/v1/holds",
        json={"case_ref": "CASE-9", "reason": "scoped, for the test", **scope},
        headers=bearer(world.officer),
    )
    assert reply.status_code == 201, reply.text
    assert found(officer, held="yes")[0] == 1
    assert found(officer, held="no", device="office-7")[0] == 3
    assert found(officer, held="yes", device="office-7")[0] == 0
    # The search is logged with the filters' names, never their values.
    found(officer, note="secret words", staff="S-001")
    with services_of(app).sessions() as session:
        entry = session.scalars(
            select(AccessLog).where(AccessLog.action == Action.EVIDENCE_LIST).order_by(AccessLog.seq.desc())
        ).first()
    assert entry is not None and entry.detail["narrowed_by"] == ["staff", "note"]
    assert "secret words" not in str(entry.detail)


def test_other_sites_never_appear_nor_count(app: FastAPI, world: World, logins: dict[str, Login], old: str) -> None:
    other = signed_in(app, logins["other_officer"])  # oscar, south only
    count, text = found(other, staff="S-001")
    assert count == 100 and old not in text and "counter-n1" not in text
    assert found(other, site="north")[0] == 0
    note(app, old, "north only")
    assert found(other, note="north only")[0] == 0
    assert found(other, device=world.device.id)[0] == 0  # the exact id of another site's device


def test_like_wildcards_and_sql_are_just_text(app: FastAPI, world: World, logins: dict[str, Login], old: str) -> None:
    officer = signed_in(app, logins["officer"])
    note(app, old, "refund of 100% promised to customer_a")
    assert found(officer, note="100%")[0] == 1
    assert found(officer, note="customer_a")[0] == 1
    assert found(officer, note="%")[0] == 1  # a literal percent sign: only this note has one
    assert found(officer, note="_")[0] == 1
    assert found(officer, note="100_")[0] == 0  # "_" is not "any character"
    assert found(officer, note="re%nd")[0] == 0
    assert found(officer, note="\\")[0] == 0
    for hostile in ("' OR 1=1 --", "x'); DROP TABLE recordings; --", '" OR ""="'):
        for name in ("device", "staff", "note"):
            assert found(officer, **{name: hostile})[0] == 0
    assert found(officer, staff="S-001")[0] == 1  # the tables are all still there
    assert found(officer, device="%")[0] == 0 and found(officer, device="_")[0] == 0


def test_bad_choices_are_clear_refusals(app: FastAPI, world: World, logins: dict[str, Login]) -> None:
    officer = signed_in(app, logins["officer"])
    for params, words in (
        ({"status": "' OR 1=1 --"}, "status: one of"),
        ({"held": "maybe"}, "held: yes or no"),
        ({"note": "x" * 201}, "at most 200"),
        ({"from": "yesterday"}, "a date such as"),
    ):
        page = officer.get("/console/search", params=params)
        assert page.status_code == 422 and words in page.text, params


def test_contains_text_escapes_like_wildcards() -> None:
    sql = str(contains_text(literal_column("t"), "a%b_c\\").compile(compile_kwargs={"literal_binds": True}))
    assert "a\\%b\\_c\\\\" in sql and "ESCAPE" in sql


def test_the_count_says_more_only_when_there_are_more(app: FastAPI, world: World, logins: dict[str, Login]) -> None:
    officer = signed_in(app, logins["officer"])
    fill(app, world.device.id, "north", 100)
    count, text = found(officer, staff="S-FILL")
    assert count == 100 and "more match" not in text  # exactly a page: nothing is hidden
    fill(app, world.device.id, "north", 1, start=utcnow() - timedelta(days=3))
    count, text = found(officer, staff="S-FILL")
    assert count == 100 and "the newest 100 shown, more match" in text
