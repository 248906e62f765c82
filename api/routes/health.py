from fastapi import APIRouter
from sqlalchemy import text

from api.core.deps import ServicesDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz(services: ServicesDep) -> dict[str, str]:
    with services.engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    return {"status": "ok"}
