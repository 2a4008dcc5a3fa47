"""Session tokens: issue one (read or control) for a session, or revoke them all."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Body, Response, status
from sqlalchemy.ext.asyncio import AsyncSession

from app.api import schemas
from app.api.errors import Problem
from app.auth import mint_token
from app.db import repositories as repo
from app.db.models import SessionTokenRow, utcnow
from app.deps import OwnedSession, ServicesDep

router = APIRouter(prefix="/v1/sessions/{sid}/tokens", tags=["tokens"])


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=schemas.SessionToken,
    responses={409: {"model": schemas.Problem}},
    summary="Issue a session token for a browser: events, viewer and (control) approvals",
)
async def create_token(
    session: OwnedSession,
    services: ServicesDep,
    body: Annotated[schemas.TokenCreate | None, Body()] = None,
) -> schemas.SessionToken:
    wanted = body or schemas.TokenCreate()
    token_id, token, digest = mint_token()
    now = utcnow()
    record = SessionTokenRow(
        id=token_id,
        session_id=session.id,
        scope=wanted.scope,
        token_sha256=digest,
        created_at=now,
        expires_at=now + timedelta(seconds=wanted.ttl_s),
    )

    async def insert(db: AsyncSession) -> bool:
        # Locked as a close locks it: a control token cannot slip in after the close
        # revoked them. Through the event log's writer, like every other command.
        row = await repo.lock_session(db, session.id)
        if row is None or (row.status == "closed" and wanted.scope == "control"):
            return False
        await repo.add_session_token(db, record)
        return True

    _, inserted = await services.log.transact(session.id, None, (), insert)
    if not inserted:
        raise Problem(409, "The session is closed: there is nothing left to control.")
    query = urlencode({"access_token": token})
    return schemas.SessionToken(
        token=token,
        scope=wanted.scope,
        expires_at=record.expires_at,
        events_url=f"/v1/sessions/{session.id}/events?{query}",
        viewer_url=f"/viewer/sessions/{session.id}?{query}",
    )


@router.delete(
    "",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Revoke every token of the session",
)
async def revoke_tokens(session: OwnedSession, services: ServicesDep) -> Response:
    async def revoke(db: AsyncSession) -> int:
        return await repo.revoke_session_tokens(db, session.id, utcnow())

    await services.log.transact(session.id, None, (), revoke)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
