"""Auditors read the access log; nobody else does."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy import select

from api.audit import record_committed
from api.deps import AuditorDep, ServicesDep, SessionDep
from api.models import AccessLog
from api.schemas import AccessLogPublic

router = APIRouter(prefix="/v1/audit", tags=["audit"])


@router.get("", response_model=list[AccessLogPublic])
def read_log(
    auditor: AuditorDep,
    session: SessionDep,
    services: ServicesDep,
    after: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=10000)] = 1000,
    target: str | None = None,
) -> list[AccessLogPublic]:
    query = select(AccessLog).where(AccessLog.seq > after)
    if target is not None:
        query = query.where(AccessLog.target == target)
    rows = session.scalars(query.order_by(AccessLog.seq).limit(limit))
    result = [AccessLogPublic.model_validate(r, from_attributes=True) for r in rows]
    record_committed(
        services.sessions, actor=auditor.actor, action="api:audit:read", detail={"after": after, "rows": len(result)}
    )
    return result
