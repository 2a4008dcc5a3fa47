"""Annotated dependency aliases, so route signatures read like prose: the services, a
database session, and who may call (an API key, a session token of a given scope)."""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.security import APIKeyQuery, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from app.api.errors import Problem
from app.api.schemas import ID_PATTERN
from app.auth import Principal, TokenScope, hash_matches, token_id_of
from app.db import repositories as repo
from app.db.models import SessionRow, utcnow
from app.lifespan import Services
from app.observability.logging import bind_tenant
from app.tenant_limits import RETRY_AFTER_S

NO_AUTH_TENANT = "default"


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_db(services: ServicesDep) -> AsyncIterator[AsyncSession]:
    async with services.sessionmaker() as db:
        yield db


DbSession = Annotated[AsyncSession, Depends(get_db)]


_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="Bearer",
    description="An API key (API_KEYS), or a session token.",
)
_access_token = APIKeyQuery(
    name="access_token",
    auto_error=False,
    scheme_name="AccessToken",
    description="A session token (POST /v1/sessions/{sid}/tokens), for clients that cannot "
    "send a header (EventSource, a link).",
)


def _unauthorized(detail: str, error: str | None = None) -> Problem:
    challenge = f'Bearer error="{error}"' if error else "Bearer"
    return Problem(401, detail, headers={"WWW-Authenticate": challenge})


async def _token_principal(services: Services, token: str) -> Principal:
    token_id = token_id_of(token)
    found = None
    if token_id is not None:
        async with services.sessionmaker() as db:
            found = await repo.get_session_token(db, token_id)
    if found is None or not hash_matches(token, found[0].token_sha256):
        raise _unauthorized("The session token is not valid.", "invalid_token")
    row, tenant = found
    if row.revoked_at is not None:
        raise _unauthorized("The session token was revoked.", "invalid_token")
    if row.expires_at <= utcnow():
        raise _unauthorized("The session token has expired.", "invalid_token")
    scope: TokenScope = "control" if row.scope == "control" else "read"
    return Principal(
        tenant, scope, token_id=row.id, session_id=row.session_id, expires_at=row.expires_at
    )


async def get_principal(
    services: ServicesDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    access_token: Annotated[str | None, Depends(_access_token)],
) -> Principal:
    """The caller: an API key in the Bearer header, else a session token (Bearer or
    `?access_token=`); with no API_KEYS and no token, everyone (the "default" tenant).
    Each request counts against its tenant's TENANT_REQUESTS_PER_S: 429 beyond it."""
    principal = await _identify(services, bearer, access_token)
    bind_tenant(principal.tenant)  # on this request's log lines (its access line too)
    limiter = services.tenant_requests
    if limiter is not None and not await limiter.admit(principal.tenant):
        raise Problem(
            429,
            f"Over this tenant's limit of {limiter.per_second} requests per second; "
            "retry after the time Retry-After gives.",
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )
    return principal


async def _identify(
    services: Services,
    bearer: HTTPAuthorizationCredentials | None,
    access_token: str | None,
) -> Principal:
    keys = services.settings.tenant_keys
    if bearer is not None:
        credential = bearer.credentials
        for key, tenant in keys.items():
            if hmac.compare_digest(key.encode(), credential.encode()):
                return Principal(tenant, "key")
        if token_id_of(credential) is not None:
            return await _token_principal(services, credential)
        if keys:
            raise _unauthorized("The API key is not valid.")
        # No API_KEYS: a header that is not a token is ignored, as it always was.
    if access_token:
        return await _token_principal(services, access_token)
    if keys:
        raise _unauthorized("Send an API key: Authorization: Bearer <key>.")
    return Principal(NO_AUTH_TENANT, None)


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]


def get_tenant(principal: CurrentPrincipal) -> str:
    if principal.is_token:
        raise Problem(403, "A session token cannot create or list sessions: use an API key.")
    return principal.tenant


CurrentTenant = Annotated[str, Depends(get_tenant)]
"""The API key's tenant (or "default" with no API_KEYS); a session token gets 403."""
SessionId = Annotated[str, Path(max_length=64, pattern=ID_PATTERN)]


async def get_session_or_404(
    sid: SessionId, principal: CurrentPrincipal, services: ServicesDep
) -> SessionRow:
    # A token never reaches another session: 404, as for another tenant's session.
    if principal.is_token and principal.session_id != sid:
        raise Problem(404, f"Session {sid} not found.")
    # A short-lived session of its own: a long SSE stream must not pin a pooled connection.
    async with services.sessionmaker() as db:
        row = await repo.get_session(db, sid, principal.tenant)
    if row is None:
        # Another tenant's session is indistinguishable from a missing one.
        raise Problem(404, f"Session {sid} not found.")
    return row


SessionOr404 = Annotated[SessionRow, Depends(get_session_or_404)]
"""The session, to read: an API key of its tenant, or a read or control token of it."""


def get_controlled_session(session: SessionOr404, principal: CurrentPrincipal) -> SessionRow:
    if not principal.can_control:
        raise Problem(
            403, "This session token may only read: acting on the session needs a control token."
        )
    return session


ControlledSession = Annotated[SessionRow, Depends(get_controlled_session)]
"""The session, to act on (cancel, decide, follow up): an API key, or a control token."""


def get_owned_session(session: SessionOr404, principal: CurrentPrincipal) -> SessionRow:
    if principal.is_token:
        raise Problem(403, "A session token cannot do this: use an API key.")
    return session


OwnedSession = Annotated[SessionRow, Depends(get_owned_session)]
"""The session, for what only its owner may do (close it, issue or revoke tokens):
an API key of its tenant; a session token gets 403."""


def get_viewer_access(
    session: SessionOr404, principal: CurrentPrincipal
) -> tuple[SessionRow, Principal]:
    return session, principal


ViewerAccess = Annotated[tuple[SessionRow, Principal], Depends(get_viewer_access)]
"""(session row, principal) for the viewer page `GET /viewer/sessions/{sid}`, authorized
like any read: `?access_token=` (what a link carries), a Bearer API key or token, or
nothing when the service has no API_KEYS. `principal.scope` is "read" or "control" for
a token (show controls only for "control"), "key" for an API key, None without auth.
Errors: 401 (no, invalid, expired or revoked credential), 404 (another session)."""


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
