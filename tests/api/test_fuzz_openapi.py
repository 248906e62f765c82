"""Schemathesis fuzzes every operation of the OpenAPI document, in-process, with each role's token.

Whatever it sends, the service must never answer 5xx, and every answer must be one the
document lists (status code, content type, body schema): clients and auditors read the
document as the contract. A second pass fuzzes as an officer, DELETE and holds included,
and then checks that nobody's recordings were destroyed.

Bounded for CI: a few examples per operation and mode (positive and negative data), no
example database, derandomized, so a run is reproducible and takes well under a minute
or two. Nothing is skipped: /docs, its assets and /openapi.json are not operations of the
document (FastAPI leaves them out of it), so schemathesis never sees them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import hypothesis
import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import select

from api.core.models import Recording, User
from retention.models import DeletionRequest, Hold
from tests.conftest import World, bearer
from tests.support.retention_support import services_of, upload

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


MAX_EXAMPLES = 12  # per operation and generation mode (positive, negative)
MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
PURPOSE = "fuzz test: read back the stranger's audio"


def _label(operation: Any) -> str:
    return f"{operation.method.upper()} {operation.path}"


def _operations(app: FastAPI) -> list[Any]:
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), f"the document does not load: {result.err()}"
        operations.append(result.ok())
    # Creating first, then reading, then what ends or destroys: so ids made by earlier operations
    # (holds, deletion requests) are there for the later ones to be fuzzed with.
    order = {"post": 0, "put": 1, "get": 2, "delete": 3}
    return sorted(operations, key=lambda op: ("approve" in op.path, order.get(op.method.lower(), 9), op.path))


@dataclass
class Caller:
    """A token that follows its own rotation (POST /v1/token), so later operations stay authenticated."""

    token: str | None

    def headers(self) -> dict[str, str]:
        return bearer(self.token) if self.token else {}

    def saw(self, label: str, status: int, body: Callable[[], Any]) -> None:
        if label == "POST /v1/token" and status == 200 and self.token:
            self.token = body()["token"]


@dataclass
class Known:
    """Real ids to put in paths besides random ones: most answers come from a real object, not a 404.

    Read from the database before each operation (tokens may have been rotated by then), so holds
    and deletion requests the fuzzer made earlier are fuzzed with too.
    """

    client: TestClient
    world: World
    recordings: list[str] = field(default_factory=list)

    def values(self, name: str) -> list[Any]:
        tables: dict[str, Any] = {"user_id": User.id, "hold_id": Hold.id, "request_id": DeletionRequest.id}
        if name == "recording_id":
            return list(self.recordings)
        if name == "device_id":
            return [self.world.device.id, self.world.other_device.id]
        if name == "index":
            return [0, 1, 2]
        if name in tables:
            with services_of(self.client).sessions() as session:
                return list(session.scalars(select(tables[name])))
        return []


def _strategy(operation: Any, known: Known) -> st.SearchStrategy[Any]:
    names = [p.name for p in operation.path_parameters]
    choices: list[dict[str, Any]] = [{}]
    for name in names:
        choices += [{name: value} for value in known.values(name)]
    return st.one_of([operation.as_strategy(mode, path_parameters=fixed) for mode in MODES for fixed in choices])


def _fuzzer(operation: Any, caller: Caller, known: Known) -> Callable[[], None]:
    """A Hypothesis test sending examples of `operation` as `caller` and checking every answer."""
    label = _label(operation)
    checks = CHECKS

    @hypothesis.settings(
        max_examples=MAX_EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        # Each example is a real request with real work behind it (audit writes, FLAC): slow is normal.
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
    )
    @given(case=_strategy(operation, known))
    def run(case: Any) -> None:
        headers = caller.headers()
        response = case.call(headers=headers)
        case.validate_response(response, checks=checks, headers=headers)
        caller.saw(label, response.status_code, response.json)

    return run


def fuzz(app: FastAPI, caller: Caller, known: Known) -> list[str]:
    """Fuzz every operation as `caller`; return a description of each failure (all operations run)."""
    failures: list[str] = []
    for operation in _operations(app):
        try:
            _fuzzer(operation, caller, known)()
        except (Exception, BaseExceptionGroup) as exc:  # schemathesis reports a BaseExceptionGroup
            failures.append(f"{_label(operation)}:\n{exc}")
    return failures


ROLES: dict[str, Callable[[World], str | None]] = {
    "device": lambda w: w.device.token,
    "officer": lambda w: w.officer,
    "other-site-officer": lambda w: w.other_officer,
    "admin": lambda w: w.admin,
    "auditor": lambda w: w.auditor,
    "none": lambda w: None,
}


def _stranger_recordings(client: TestClient, world: World) -> dict[str, str]:
    """Recordings by both sites' devices, some of them held: {id: the site's officer token}."""
    made = {
        upload(client, world.device): world.officer,
        upload(client, world.device, segments=1): world.officer,
        upload(client, world.device, final=False): world.officer,  # still open
        upload(client, world.other_device): world.other_officer,
        upload(client, world.other_device, segments=3): world.other_officer,
    }
    ids = list(made)
    for rid, officer in ((ids[0], world.officer), (ids[3], world.other_officer)):
        hold = {"case_ref": f"CASE-{rid[:8]}", "reason": "fuzz test: kept for a case", "recordings": [rid]}
        assert client.post("/v1/holds", json=hold, headers=bearer(officer)).status_code == 201
    return made


def _audio(client: TestClient, rid: str, officer: str) -> bytes:
    reply = client.post(f"/v1/evidence/{rid}/audio", json={"purpose": PURPOSE}, headers=bearer(officer))
    assert reply.status_code == 200, reply.text
    return reply.content


@pytest.mark.parametrize("role", list(ROLES))
def test_every_operation_answers_as_documented(role: str, app: FastAPI, client: TestClient, world: World) -> None:
    known = Known(client, world, recordings=list(_stranger_recordings(client, world)))
    failures = fuzz(app, Caller(ROLES[role](world)), known)
    assert not failures, f"{len(failures)} operation(s) answered outside the document as {role}:\n\n" + "\n\n".join(
        failures
    )


def test_an_officer_fuzzing_everything_destroys_nothing(app: FastAPI, client: TestClient, world: World) -> None:
    strangers = _stranger_recordings(client, world)
    before = {rid: _audio(client, rid, officer) for rid, officer in strangers.items()}
    known = Known(client, world, recordings=list(strangers))
    north = Caller(world.officer)

    fuzz(app, north, known)  # answers are the other test's business; this one is about damage
    # Then what random data rarely gets right: well-formed requests to release, delete and approve.
    hostile = bearer(north.token or "")
    why = {"reason": "fuzz test: an officer trying to destroy evidence"}
    for hold_id in known.values("hold_id"):
        client.post(f"/v1/holds/{hold_id}/release", json=why, headers=hostile)
    for rid in strangers:
        client.post(f"/v1/evidence/{rid}/deletion", json=why, headers=hostile)
    for request_id in known.values("request_id"):
        client.post(f"/v1/deletions/{request_id}/approve", headers=hostile)

    # The fuzzer may have rotated north's token (POST /v1/token); read back with the current one.
    readers = {world.officer: north.token or world.officer, world.other_officer: world.other_officer}

    with services_of(client).sessions() as session:
        rows = {r.id: r for r in session.scalars(select(Recording).where(Recording.id.in_(list(strangers))))}
    for rid, officer in strangers.items():
        assert rid in rows, f"recording {rid} is gone"
        assert rows[rid].purge_state is None, f"recording {rid} was purged ({rows[rid].purge_state})"
        assert _audio(client, rid, readers[officer]) == before[rid], f"recording {rid} no longer reads back the same"
