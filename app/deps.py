"""Annotated dependency aliases, so route signatures read like prose."""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Path, Request
from sqlalchemy.ext.asyncio import AsyncSession

from app.api.errors import Problem
from app.api.schemas import ID_PATTERN
from app.db import repositories as repo
from app.db.models import SessionRow
from app.lifespan import Services

NO_AUTH_TENANT = "default"


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_db(services: ServicesDep) -> AsyncIterator[AsyncSession]:
    async with services.sessionmaker() as db:
        yield db


DbSession = Annotated[AsyncSession, Depends(get_db)]


def get_tenant(request: Request, services: ServicesDep) -> str:
    keys = services.settings.tenant_keys
    if not keys:
        return NO_AUTH_TENANT
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Problem(
            401,
            "Send an API key: Authorization: Bearer <key>.",
            headers={"WWW-Authenticate": "Bearer"},
        )
    for key, tenant in keys.items():
        if hmac.compare_digest(key.encode(), token.strip().encode()):
            return tenant
    raise Problem(401, "The API key is not valid.", headers={"WWW-Authenticate": "Bearer"})


CurrentTenant = Annotated[str, Depends(get_tenant)]
SessionId = Annotated[str, Path(max_length=64, pattern=ID_PATTERN)]


async def get_session_or_404(
    sid: SessionId, tenant: CurrentTenant, services: ServicesDep
) -> SessionRow:
    # A short-lived session of its own: a long SSE stream must not pin a pooled connection.
    async with services.sessionmaker() as db:
        row = await repo.get_session(db, sid, tenant)
    if row is None:
        # Another tenant's session is indistinguishable from a missing one.
        raise Problem(404, f"Session {sid} not found.")
    return row


SessionOr404 = Annotated[SessionRow, Depends(get_session_or_404)]


def require_accepting(services: ServicesDep) -> None:
    """A draining process refuses new runs on SQLite (it is the only one); on Postgres
    it queues them for the other replicas to claim."""
    if services.settings.is_sqlite and (services.shutting_down or services.runner.draining):
        raise Problem(
            503,
            "The service is shutting down; retry on another instance or later.",
            headers={"Retry-After": "5"},
        )


AcceptingRuns = Depends(require_accepting)
