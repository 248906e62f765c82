"""The answers a route can give besides its success, for the OpenAPI document (`responses=` on each route).

Every refusal is `{"detail": "<a sentence>"}`; a 422 is either FastAPI's list of field
errors or such a sentence (a route's own check). Routes combine the blocks here, e.g.
`responses=answers(AUTHED, BODY, {404: "no such site", 409: "the site exists"})`, and
tests/api/test_fuzz_openapi.py holds every answer the service gives to what is listed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import StreamingResponse


class Problem(BaseModel):
    """Why a request was refused."""

    detail: str = Field(description="What went wrong, in a sentence.")


class FieldError(BaseModel):
    """One invalid field (as FastAPI reports it)."""

    model_config = ConfigDict(extra="allow")
    loc: list[str | int]
    msg: str
    type: str


class ValidationProblem(BaseModel):
    """Invalid input: FastAPI's field errors, or the route's own sentence."""

    detail: str | list[FieldError]


class NDJSONResponse(StreamingResponse):
    """A streamed JSON Lines answer (so the document says application/x-ndjson, not JSON)."""

    media_type = "application/x-ndjson"


Responses = dict[int | str, dict[str, Any]]

# Descriptions shared by every route that can give the answer.
UNAUTHENTICATED = "No bearer token, or an unknown, revoked or disabled one."
TOO_MANY = "Too many failed attempts from this address; retry after Retry-After seconds."
WRONG_ROLE = "The caller's role may not do this."
TOO_LARGE = "The request body is over the service's limit."
NOT_JSON = "The body is not JSON, or its Content-Length is malformed."
INVALID = "Invalid input: field errors, or a sentence saying what is wrong."
STORAGE_FULL = "The service's storage is full; nothing was done, try again later."


def answers(*blocks: Mapping[Any, Any]) -> Responses:
    """Merge blocks of answers; a plain description becomes a `Problem` answer (later blocks win)."""
    merged: Responses = {}
    for block in blocks:
        for status, answer in block.items():
            merged[status] = {"description": answer, "model": Problem} if isinstance(answer, str) else answer
    return merged


# Any authenticated route: refused callers are logged (so even a refusal can meet a full disk).
AUTHENTICATED: Responses = answers({401: UNAUTHENTICATED, 429: TOO_MANY, 507: STORAGE_FULL})
# ...and limited to some roles.
AUTHED: Responses = answers(AUTHENTICATED, {403: WRONG_ROLE})
# Any route with parameters or a body (replaces FastAPI's 422, which knows only field errors).
INPUT: Responses = {422: {"description": INVALID, "model": ValidationProblem}}
# Any route with a JSON body: the body is read, up to a limit, before anything else.
BODY: Responses = answers(INPUT, {400: NOT_JSON, 413: TOO_LARGE})


def json_refusals(block: Responses) -> Responses:
    """The same answers for a route whose success is not JSON (FastAPI would label them with its type)."""
    out: Responses = {}
    for status, answer in block.items():
        schema = {"$ref": f"#/components/schemas/{answer['model'].__name__}"}
        out[status] = {"description": answer["description"], "content": {"application/json": {"schema": schema}}}
    return out
