"""The event log over SSE (default) or as JSON pages."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Annotated, Any, Literal, Self

import anyio
from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse, Response
from sse_starlette import EventSourceResponse, ServerSentEvent

from app.api import schemas
from app.api.errors import Problem
from app.api.schemas import ID_PATTERN, MAX_SEQ
from app.auth import Principal
from app.db import repositories as repo
from app.db.models import utcnow
from app.deps import CurrentPrincipal, ServicesDep, SessionOr404
from app.events.sse import StreamRequest, resolve, sse_frame, stream_batches
from app.events.types import StoredEvent
from app.lifespan import Services

router = APIRouter(prefix="/v1/sessions/{sid}", tags=["events"])

SSE_DESCRIPTION = (
    "`text/event-stream` (the default): `retry:` first, then every stored event after the "
    "cursor as `id: <seq>` / `event: <type>` / `data: <Event JSON>`, then live events; "
    "`: ping` comments keep idle streams open. Each `data:` line is one `Event` (see the "
    "`Event` schema: a union discriminated by `type`, one `data` shape per type). With "
    "`Accept: application/json` or `?format=json`: one EventPage."
)
# How long a stream may take to end by itself once the server shuts down, before
# sse-starlette cuts it: more than stream_batches' idle wake-up (1 s), and well under
# uvicorn's own graceful-shutdown timeout (SHUTDOWN_GRACE_S + 5 s).
STREAM_CLOSE_S = 2.0
IMAGE_PAGE_MAX = 50
# How often a stream opened with a session token re-reads whether it was revoked.
TOKEN_RECHECK_S = 5.0
# One SSE message, in the form FastAPI documents its own SSE routes (OpenAPI 3.2 itemSchema).
SSE_ITEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "description": "The event's seq"},
        "event": {"type": "string", "description": "The event's type"},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "contentSchema": {"$ref": "#/components/schemas/Event"},
        },
        "retry": {"type": "integer", "minimum": 0},
    },
}


def _cursor(after: int | None, last_event_id: str | None) -> int:
    if last_event_id is not None and last_event_id.strip():
        try:
            value = int(last_event_id.strip())
        except ValueError as exc:
            raise Problem(
                400,
                "Last-Event-ID must be an event seq (an integer).",
                errors=[{"field": "Last-Event-ID", "message": "not an integer"}],
            ) from exc
        if not 0 <= value <= MAX_SEQ:
            raise Problem(
                400,
                "Last-Event-ID is out of range.",
                errors=[{"field": "Last-Event-ID", "message": "out of range"}],
            )
        return value
    return after or 0


def _wants_json(request: Request, format_: str | None) -> bool:
    if format_ is not None:
        return format_ == "json"
    accept = request.headers.get("accept", "")
    return "application/json" in accept and "text/event-stream" not in accept


async def _inline_images(services: Services, session_id: str, event: StoredEvent) -> dict[str, Any]:
    payload = event.to_json()
    shot = payload["data"].get("screenshot") if isinstance(payload["data"], dict) else None
    if isinstance(shot, dict) and shot.get("id"):
        async with services.sessionmaker() as db:
            row = await repo.get_screenshot(db, session_id, str(shot["id"]))
        if row is not None:
            encoded = base64.b64encode(row.data).decode()
            payload["data"] = {
                **payload["data"],
                "screenshot": {**shot, "data_url": f"data:{row.media_type};base64,{encoded}"},
            }
    return payload


async def _image_frame(services: Services, session_id: str, event: StoredEvent) -> bytes:
    payload = await _inline_images(services, session_id, event)
    data = json.dumps(payload, separators=(",", ":"))
    return ServerSentEvent(data=data, event=event.type, id=str(event.seq)).encode()


async def _target_run(
    services: Services, session_id: str, run_id: str | None, active_run_id: str | None
) -> str | None:
    if run_id is not None:
        async with services.sessionmaker() as db:
            if await repo.get_run(db, session_id, run_id) is None:
                raise Problem(404, f"Run {run_id} not found.")
        return run_id
    if active_run_id is not None:
        return active_run_id
    async with services.sessionmaker() as db:
        latest = await repo.latest_run(db, session_id)
    return latest.id if latest is not None else None


@router.get(
    "/events",
    response_model=schemas.EventPage,
    responses={
        200: {
            "content": {"text/event-stream": {"itemSchema": SSE_ITEM_SCHEMA}},
            "description": SSE_DESCRIPTION,
        },
        204: {
            "description": "SSE only: the stream could never yield another event (the "
            "`until=run_end` target ended at or before the cursor, or the session is closed "
            "and the cursor is at its last event); EventSource stops reconnecting"
        },
    },
    summary="The session's event log: SSE, or a JSON page",
)
async def get_events(
    request: Request,
    session: SessionOr404,
    principal: CurrentPrincipal,
    services: ServicesDep,
    after: Annotated[int | None, Query(ge=0, le=MAX_SEQ)] = None,
    follow: bool = True,
    until: Literal["run_end"] | None = None,
    run_id: Annotated[str | None, Query(max_length=64, pattern=ID_PATTERN)] = None,
    format_: Annotated[Literal["json", "sse"] | None, Query(alias="format")] = None,
    include_images: bool = False,
    limit: Annotated[
        int,
        Query(
            ge=1,
            le=1000,
            description=f"JSON page size (at most {IMAGE_PAGE_MAX} with include_images)",
        ),
    ] = 100,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=32)] = None,
) -> Response:
    cursor = _cursor(after, last_event_id)
    session_id = session.id
    if _wants_json(request, format_):
        async with services.sessionmaker() as db:
            if include_images:
                limit = min(limit, IMAGE_PAGE_MAX)  # each event may carry a whole image
            rows = await repo.list_events(db, session_id, cursor, limit + 1)
        page = rows[:limit]
        data = [
            await _inline_images(services, session_id, e) if include_images else e.to_json()
            for e in page
        ]
        next_after = page[-1].seq if page else cursor
        return JSONResponse({"data": data, "next_after": next_after, "has_more": len(rows) > limit})

    target = None
    if until == "run_end":
        target = await _target_run(services, session_id, run_id, session.active_run_id)
        if target is None:
            follow = False  # nothing to wait for: replay and close
    stream_request = await resolve(
        services.sessionmaker,
        StreamRequest(session_id, cursor, follow=follow, until_run=target),
        session_closed=session.status == "closed",
        last_seq=session.last_event_seq,
        run_active=session.active_run_id is not None,
    )
    if stream_request is None:
        # Nothing can ever come: 204 tells EventSource to stop reconnecting.
        return Response(status_code=204, headers={"Cache-Control": "no-cache"})
    settings = services.settings
    # Set by sse-starlette when the server starts shutting down. The stream then ends
    # with a proper last chunk; cut off mid-response instead, clients see an error
    # ("incomplete chunked read", curl exit 18) and uvicorn logs one per open stream.
    shutting_down = anyio.Event()

    watch = TokenWatch(services, principal)

    def stop() -> bool:
        return shutting_down.is_set() or watch.ended()

    async def body() -> AsyncIterator[ServerSentEvent | bytes]:
        yield ServerSentEvent(retry=settings.sse_retry_ms)
        batches = stream_batches(services.sessionmaker, services.broker, stream_request, stop=stop)
        async with watch, aclosing(batches):  # a client gone: unsubscribe now, not at GC
            async for batch in batches:
                if include_images:
                    # One event at a time: each may carry a whole image.
                    for event in batch:
                        yield await _image_frame(services, session_id, event)
                    continue
                # One body chunk (one socket write) per batch: a replayed page, or all the
                # events queued for this client since its last write.
                yield b"".join([sse_frame(e) for e in batch])

    return EventSourceResponse(
        body(),
        ping=settings.sse_ping_seconds,
        ping_message_factory=lambda: ServerSentEvent(comment="ping"),
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        shutdown_event=shutting_down,
        shutdown_grace_period=STREAM_CLOSE_S,
    )


class TokenWatch:
    """Ends a stream opened with a session token once the token expires or is revoked
    (its reconnection then gets 401): the expiry is known, revocation is re-read from
    the database every TOKEN_RECHECK_S while the stream is open. Nothing for API keys."""

    def __init__(self, services: Services, principal: Principal) -> None:
        self._services = services
        self._principal = principal
        self._revoked = False
        self._task: asyncio.Task[None] | None = None

    def ended(self) -> bool:
        expires_at = self._principal.expires_at
        return self._revoked or (expires_at is not None and utcnow() >= expires_at)

    async def __aenter__(self) -> Self:
        if self._principal.token_id is not None:
            self._task = asyncio.create_task(self._watch(self._principal.token_id))
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _watch(self, token_id: str) -> None:
        while not self._revoked:
            await asyncio.sleep(TOKEN_RECHECK_S)
            try:
                async with self._services.sessionmaker() as db:
                    found = await repo.get_session_token(db, token_id)
            except Exception:  # the database is away: the stream's own reads fail too
                continue
            self._revoked = found is None or found[0].revoked_at is not None
