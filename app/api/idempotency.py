"""Idempotency keys (SPEC v2.3): a POST sent again with the same `Idempotency-Key`
gets the first answer back, marked `Idempotent-Replayed: true`, and has no other effect.

An ASGI middleware, so that every POST route has it without knowing, and streams and
other methods pass through untouched. For a POST under /v1/ that carries the header
(except `POST .../tokens`, whose answer holds a secret and is never stored):

1. The key must be 1..255 visible ASCII characters, else 400 naming the header.
2. The caller is identified as the routes identify it (`deps._identify`); a request
   that fails authentication passes through and gets its 401, nothing stored. Keys
   are scoped by tenant, and by token id for a session token.
3. The key is claimed: a row "in progress" with the SHA-256 of (method, path and
   query, body; a JSON body canonicalized, so key order and spacing do not matter)
   is inserted (SQLite: through the event log's writer; Postgres: one statement in
   autocommit). The primary key (tenant, caller, key) decides between concurrent
   requests on any replica: one inserts, the others find its row.
4. Found a row: another request's hash is a 422 (`...idempotency-key-reused`); a
   stored answer is replayed; a row still in progress is re-read (10 ms, doubling
   to 100 ms) for up to `IDEMPOTENCY_WAIT_S`, then replayed once answered, else 409.
   So concurrent duplicates all get the same answer when the first is quick. An
   answer given here counts against the tenant's `TENANT_REQUESTS_PER_S` (429 beyond
   it); a request that goes on to its route is counted there.
5. Claimed: the request runs with its answer buffered. A 429 or 5xx answer, or an
   exception, deletes the row (a retry runs again); any other answer is stored on the
   row, committed, and only then sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar
from urllib.parse import parse_qs

from fastapi.security import HTTPAuthorizationCredentials
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.errors import Problem, problem_response
from app.db import repositories as repo
from app.db.models import utcnow
from app.deps import _identify as identify_caller
from app.lifespan import Services
from app.tenant_limits import RETRY_AFTER_S

log = logging.getLogger(__name__)
T = TypeVar("T")

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
REUSED_TYPE = "urn:agent-sessions:problem:idempotency-key-reused"
IN_PROGRESS_TYPE = "urn:agent-sessions:problem:idempotency-key-in-progress"
MAX_KEY_LENGTH = 255
KEY_PATTERN = r"^[!-~]{1,255}$"  # visible ASCII, no space

_HEADER_BYTES = HEADER.lower().encode()
# The token endpoint ignores the header: its answer carries a secret shown once.
_NOT_STORED = re.compile(r"^/v1/sessions/[^/]+/tokens/?$")
_SESSION_IN_PATH = re.compile(r"^/v1/sessions/([^/]+)")
POLL_FIRST_S = 0.01
POLL_MAX_S = 0.1


def applies_to(method: str, path: str) -> bool:
    """Whether a request with the header is subject to idempotency."""
    return method == "POST" and path.startswith("/v1/") and not _NOT_STORED.match(path)


def valid_key(raw: bytes) -> bool:
    return 1 <= len(raw) <= MAX_KEY_LENGTH and all(0x21 <= byte <= 0x7E for byte in raw)


def request_hash(method: str, path: str, query: bytes, body: bytes) -> str:
    """SHA-256 of what makes two requests the same. A JSON body counts by its value."""
    try:
        value = json.loads(body) if body else None
    except ValueError:
        canonical = body
    else:
        canonical = json.dumps(value, sort_keys=True, separators=(",", ":")).encode()
    digest = hashlib.sha256()
    for part in (method.encode(), path.encode(), query, canonical):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


@dataclass(frozen=True)
class _Key:
    tenant: str
    caller: str
    key: str


class IdempotencyKeys:
    """The middleware (see the module's docstring)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not applies_to(scope["method"], scope["path"]):
            await self.app(scope, receive, send)
            return
        raw = [value for name, value in scope["headers"] if name == _HEADER_BYTES]
        if not raw:
            await self.app(scope, receive, send)
            return
        if len(raw) > 1 or not valid_key(raw[0]):
            message = "must be one value of 1 to 255 visible ASCII characters"
            await problem_response(
                400,
                f"{HEADER}: {message}.",
                errors=[{"field": HEADER, "message": message}],
            )(scope, receive, send)
            return
        try:
            body = await _read_body(receive)
        except StarletteHTTPException as exc:  # BodySizeLimit: over 1 MiB
            await problem_response(exc.status_code, str(exc.detail))(scope, receive, send)
            return
        if body is None:
            return  # the client went away before sending its body
        replay_receive = _replaying(body, receive)
        services: Services = scope["app"].state.services
        key = await _key_of(services, scope, raw[0].decode("ascii"))
        if key is None:  # not authenticated: the route answers 401, nothing is stored
            await self.app(scope, replay_receive, send)
            return
        fingerprint = request_hash(
            scope["method"], scope["path"], scope.get("query_string", b""), body
        )
        answer = await _claim_or_wait(services, key, fingerprint)
        if answer is not None:  # a replay, 409 or 422: it counts as the tenant's request
            limiter = services.tenant_requests
            if limiter is not None and not await limiter.admit(key.tenant):
                answer = _over_limit(limiter.per_second)
            await answer(scope, receive, send)
            return
        await _run_claimed(self.app, services, key, scope, replay_receive, send)


def _over_limit(per_second: int | None) -> Response:
    return problem_response(
        429,
        f"Over this tenant's limit of {per_second} requests per second; "
        "retry after the time Retry-After gives.",
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


async def _read_body(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replaying(body: bytes, receive: Receive) -> Receive:
    """A `receive` that hands the buffered body to the app, then the client's messages."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _key_of(services: Services, scope: Scope, key: str) -> _Key | None:
    """The key scoped by caller, or None when the request does not authenticate."""
    bearer = None
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, credentials = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and credentials:
                bearer = HTTPAuthorizationCredentials(scheme=scheme, credentials=credentials)
            break
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    access_token = (query.get("access_token") or [None])[0]
    try:
        # Not deps.get_principal: that counts the request against TENANT_REQUESTS_PER_S,
        # which its route does if it gets there; one answered here is counted here.
        principal = await identify_caller(services, bearer, access_token)
    except Problem:
        return None
    return _Key(principal.tenant, principal.token_id or "", key)


async def _claim_or_wait(services: Services, key: _Key, fingerprint: str) -> Response | None:
    """None when this request holds the key now; else the answer to send instead."""
    settings = services.settings
    deadline = time.monotonic() + settings.idempotency_wait_s
    delay = POLL_FIRST_S
    found = await _claim(services, key, fingerprint)
    while found is not None:
        if found.request_sha256 != fingerprint:
            return problem_response(
                422,
                f"This {HEADER} was used with a different request (method, path or body); "
                "use a new key for a new request.",
                type_=REUSED_TYPE,
                errors=[{"field": HEADER, "message": "already used for another request"}],
            )
        if found.status_code is not None:
            headers = {REPLAYED_HEADER: "true"}
            if found.content_type:
                headers["content-type"] = found.content_type
            return Response(found.body or b"", status_code=found.status_code, headers=headers)
        left = deadline - time.monotonic()
        if left <= 0:
            return problem_response(
                409,
                f"A request with this {HEADER} is still in progress; retry later.",
                type_=IN_PROGRESS_TYPE,
                headers={"Retry-After": "1"},
            )
        await asyncio.sleep(min(delay, left))
        delay = min(delay * 2, POLL_MAX_S)
        async with services.sessionmaker() as db:
            found = await repo.get_idempotency_key(db, key.tenant, key.caller, key.key, utcnow())
        if found is None:  # the first request failed and let go: claim it for this one
            found = await _claim(services, key, fingerprint)
    return None


async def _claim(services: Services, key: _Key, fingerprint: str) -> repo.IdempotencyRecord | None:
    ttl = timedelta(seconds=services.settings.idempotency_ttl_s)

    async def claim(db: AsyncSession) -> repo.IdempotencyRecord | None:
        now = utcnow()
        return await repo.claim_idempotency_key(
            db, key.tenant, key.caller, key.key, fingerprint, now, now + ttl
        )

    found: repo.IdempotencyRecord | None = await _write(services, claim)
    return found


async def _write(services: Services, apply: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """One write of a key's row. SQLite: through the event log's writer, the one writer
    of the file (no events: no session to name). Postgres: each statement on its own in
    autocommit, one round trip, without waiting for the writer's batch (these rows need
    no seq, no fence and nothing else in the same transaction)."""
    if services.settings.is_sqlite:
        _, result = await services.log.transact("", None, (), apply)
        return result  # type: ignore[no-any-return]
    async with services.sessionmaker() as db:
        await db.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
        return await apply(db)


async def _run_claimed(
    app: ASGIApp, services: Services, key: _Key, scope: Scope, receive: Receive, send: Send
) -> None:
    start: Message | None = None
    chunks: list[bytes] = []

    async def capture(message: Message) -> None:
        nonlocal start
        if message["type"] == "http.response.start":
            start = message
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    try:
        await app(scope, receive, capture)
    except BaseException:
        with contextlib.suppress(Exception):
            await _release(services, key)
        raise
    if start is None:  # the app sent nothing (it cannot happen with FastAPI's routes)
        await _release(services, key)
        return
    status: int = start["status"]
    body = b"".join(chunks)
    if status == 429 or status >= 500:
        await _release(services, key)
    else:
        try:
            await _store(services, key, scope["path"], start, body)
        except Exception:
            # The effect happened; the key stays "in progress" until it expires, so a
            # retry gets 409 rather than running the request a second time.
            log.warning("could not store the answer of an idempotent request", exc_info=True)
    await send(start)
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _release(services: Services, key: _Key) -> None:
    async def release(db: AsyncSession) -> None:
        await repo.release_idempotency_key(db, key.tenant, key.caller, key.key)

    await _write(services, release)


async def _store(services: Services, key: _Key, path: str, start: Message, body: bytes) -> None:
    headers: list[tuple[bytes, bytes]] = start.get("headers", [])
    content_type = next(
        (value.decode("latin-1") for name, value in headers if name.lower() == b"content-type"),
        None,
    )
    session_id = _session_of(path, start["status"], body)

    async def store(db: AsyncSession) -> None:
        await repo.store_idempotent_answer(
            db, key.tenant, key.caller, key.key, start["status"], content_type, body, session_id
        )

    await _write(services, store)


def _session_of(path: str, status: int, body: bytes) -> str | None:
    """The session an answer is about: the one in the path, or the one just created."""
    match = _SESSION_IN_PATH.match(path)
    if match:
        return match.group(1)[:40]
    if status < 300:
        with contextlib.suppress(ValueError):
            value: Any = json.loads(body)
            if isinstance(value, dict) and isinstance(value.get("id"), str):
                return value["id"][:40]
    return None


def document(schema: dict[str, Any]) -> None:
    """Declare the header (and the 409 of a request still in progress) on every POST
    operation it applies to, in the generated OpenAPI document."""
    parameter = {
        "name": HEADER,
        "in": "header",
        "required": False,
        "description": "Makes the POST safe to retry: a repeat of the same request within "
        "IDEMPOTENCY_TTL_S (24 h) gets the first answer again, with "
        f"`{REPLAYED_HEADER}: true`, and has no other effect.",
        "schema": {"type": "string", "pattern": KEY_PATTERN},
    }
    for path, operations in schema.get("paths", {}).items():
        operation = operations.get("post")
        if operation is None or not applies_to("POST", path):
            continue
        operation.setdefault("parameters", []).append(parameter)
        operation.setdefault("responses", {}).setdefault(
            "409", {"description": "Conflict with the current state"}
        )
