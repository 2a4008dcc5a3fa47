"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from app.api import schemas
from app.db.engine import migrations_current
from app.deps import ServicesDep

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=schemas.Health, summary="Liveness")
async def healthz() -> schemas.Health:
    return schemas.Health(status="ok")


@router.get(
    "/readyz",
    response_model=schemas.Health,
    responses={503: {"model": schemas.Health}},
    summary="Readiness: database reachable and migrations applied",
)
async def readyz(services: ServicesDep) -> JSONResponse:
    replica = services.settings.replica_id

    def unavailable(detail: str) -> JSONResponse:
        body = {"status": "unavailable", "replica": replica, "detail": detail}
        return JSONResponse(body, status_code=503)

    if services.shutting_down:
        return unavailable("shutting down")
    try:
        async with services.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        current = await migrations_current(services.engine)
    except Exception as exc:
        return unavailable(f"database unreachable: {type(exc).__name__}")
    if not current:
        return unavailable("migrations not applied")
    if services.bridge is not None and not services.bridge.connected:
        return unavailable("LISTEN connection down")
    return JSONResponse({"status": "ok", "replica": replica, "detail": None})
