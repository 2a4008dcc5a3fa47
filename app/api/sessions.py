"""Sessions: create (optionally with run 1), list, read, close."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, status
from sqlalchemy.ext.asyncio import AsyncSession

from app.api import schemas
from app.api.errors import Problem
from app.api.schemas import ID_PATTERN
from app.api.views import public_computer, session_view, sessions_view
from app.db import repositories as repo
from app.db.models import RunRow, SessionRow, utcnow
from app.deps import (
    AcceptingRuns,
    CurrentTenant,
    DbSession,
    OwnedSession,
    ServicesDep,
    SessionOr404,
)
from app.ids import new_id
from app.retention import purge_session
from app.webhooks.service import WebhookRefused

router = APIRouter(prefix="/v1/sessions", tags=["sessions"])


def _invalid(field: str, message: str) -> Problem:
    return Problem(422, f"{field}: {message}", errors=[{"field": field, "message": message}])


def _check_create(body: schemas.SessionCreate, services: ServicesDep) -> None:
    settings = services.settings
    if not services.loops.supports(body.provider):
        raise _invalid(
            "provider", f"provider {body.provider!r} is not available on this service yet"
        )
    version = body.options.tool_version
    if version is not None:
        allowed = (
            schemas.ANTHROPIC_TOOL_VERSIONS
            if body.provider == "anthropic"
            else schemas.OPENAI_TOOL_VERSIONS
        )
        if version not in allowed:
            raise _invalid(
                "options.tool_version", f"{version!r} is not a {body.provider} tool version"
            )
    if body.output_schema is not None and body.task is None:
        raise _invalid(
            "output_schema",
            "output_schema applies to the run that `task` starts: give a task, or give the "
            "schema with a follow-up run (POST /v1/sessions/{sid}/runs)",
        )
    if body.options.turn_retention is not None and body.provider != "anthropic":
        raise _invalid(
            "options.turn_retention",
            "turn_retention applies to anthropic sessions (OpenAI keeps the conversation "
            "server-side and truncates it itself)",
        )
    kind = body.computer.type
    if kind == "fake" and not settings.enable_fake_computer:
        raise _invalid("computer.type", "the fake computer is disabled (ENABLE_FAKE_COMPUTER)")
    if kind == "kernel" and not settings.kernel_api_key:
        raise _invalid("computer.type", "the kernel computer needs KERNEL_API_KEY on this service")
    if kind == "cdp" and body.computer.cdp_url is None:
        raise _invalid("computer.cdp_url", "a cdp computer needs cdp_url (its DevTools URL)")
    if body.computer.cdp_url is not None and kind != "cdp":
        raise _invalid("computer.cdp_url", "only a cdp computer takes cdp_url")
    if kind == "kernel":
        # Kernel's Computer Controls cannot report the page's URL: a domain policy
        # could not be enforced, and a policy that silently does nothing is worse.
        for name in ("allowed_domains", "blocked_domains"):
            if getattr(body.safety, name):
                raise _invalid(f"safety.{name}", "not enforceable on a kernel computer")


async def _check_webhook(
    body: schemas.SessionCreate, tenant: str, services: ServicesDep
) -> dict[str, Any] | None:
    """The webhook to store: the tenant can sign, and its host is an allowed address."""
    if body.webhook is None or services.webhooks is None:
        return None
    try:
        await services.webhooks.check(tenant, body.webhook.url)
    except WebhookRefused as exc:
        raise _invalid(exc.field, exc.message) from exc
    return body.webhook.model_dump()


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=schemas.Session,
    dependencies=[AcceptingRuns],
    summary="Create a session; with `task` it also starts run 1",
)
async def create_session(
    body: schemas.SessionCreate, tenant: CurrentTenant, services: ServicesDep
) -> schemas.Session:
    _check_create(body, services)
    webhook = await _check_webhook(body, tenant, services)
    session_id = new_id("ses")
    run_id = new_id("run") if body.task else None
    computer = body.computer.model_dump(exclude_none=True)
    options = body.options.model_dump(exclude_none=True)
    safety = body.safety.model_dump(exclude_none=True)
    model = body.model or services.loops.default_model(body.provider)

    async def insert(db: AsyncSession) -> tuple[SessionRow, RunRow | None]:
        now = utcnow()
        session = SessionRow(
            id=session_id,
            tenant=tenant,
            status="running" if run_id else "idle",
            provider=body.provider,
            model=model,
            system_prompt=body.system_prompt,
            computer=computer,
            options=options,
            safety=safety,
            metadata_=body.metadata,
            webhook=webhook,
            active_run_id=run_id,
            last_run_id=run_id,
            usage={},
            agent_state={},
            created_at=now,
            updated_at=now,
        )
        db.add(session)
        run = None
        if run_id is not None:
            await db.flush()
            run = RunRow(
                id=run_id,
                session_id=session_id,
                status="queued",
                input=body.task,
                output_schema=body.output_schema,
                usage={},
                turns=0,
                created_at=now,
            )
            db.add(run)
            await services.runner.queued(db)
        return session, run

    events: list[tuple[str, dict[str, Any]]] = [
        (
            "session.created",
            {
                "provider": body.provider,
                "model": model,
                "computer": public_computer(computer),
                "metadata": body.metadata,
            },
        ),
    ]
    if run_id is not None:
        events.append(("run.queued", {"run_id": run_id, "input": body.task}))
    if services.webhooks is not None:  # known here: the event log need not read it back
        services.webhooks.outbox.remember(session_id, tenant, webhook)
    stored, (session, run) = await services.log.transact(session_id, run_id, events, insert)
    if run_id is not None:
        services.runner.wake()
    return session_view(session, run, stored[-1].seq)


@router.get("", response_model=schemas.Page[schemas.Session], summary="List sessions, newest first")
async def list_sessions(
    request: Request,
    tenant: CurrentTenant,
    db: DbSession,
    status_: Annotated[schemas.SessionStatus | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    after: Annotated[str | None, Query(max_length=64, pattern=ID_PATTERN)] = None,
) -> schemas.Page[schemas.Session]:
    """Also `?metadata.KEY=VALUE` (repeatable, all must match): sessions whose
    `metadata[KEY]`, as a string, is exactly VALUE (a string itself; a number or a
    boolean its JSON spelling, `5`, `true`; null, arrays and objects never match)."""
    metadata = _metadata_filters(request)
    rows = await repo.list_sessions(db, tenant, status_, after, limit + 1, metadata)
    page = rows[:limit]
    return schemas.Page[schemas.Session](
        data=await sessions_view(db, page),
        next_after=page[-1].id if len(rows) > limit else None,
        has_more=len(rows) > limit,
    )


@router.get("/{sid}", response_model=schemas.Session, summary="Get a session")
async def get_session(session: SessionOr404, db: DbSession) -> schemas.Session:
    return (await sessions_view(db, [session]))[0]


@router.delete(
    "/{sid}",
    response_model=schemas.Session,
    summary="Cancel the active run, release the computer, close the session",
)
async def close_session(
    session: OwnedSession,
    services: ServicesDep,
    db: DbSession,
    purge: Annotated[
        bool,
        Query(
            description="Also delete the session at once with everything it owns (events, "
            "runs, turns, screenshots, safety checks, tokens); then it is 404. The answer is "
            "the session as it was when closed."
        ),
    ] = False,
) -> schemas.Session:
    session_id = session.id
    cancelled: set[str] = set()
    run_id = session.active_run_id
    while session.status != "closed":
        if run_id is not None:
            await services.runner.cancel(session_id, run_id)
            cancelled.add(run_id)
        await services.computers.release(session_id)

        async def close(db_: AsyncSession) -> tuple[bool, str | None]:
            row = await db_.get(SessionRow, session_id, with_for_update=True)
            if row is None or row.status == "closed":
                return False, None
            if row.active_run_id is not None and row.active_run_id not in cancelled:
                # A run was created after `session` was read (POST /runs racing this
                # DELETE): closing now would leave it running, holding a computer
                # nobody releases. Cancel it first. Once closed, create_run refuses.
                return False, row.active_run_id
            row.status = "closed"
            row.updated_at = utcnow()
            # Nothing is left to control; read tokens still show the finished session.
            await repo.revoke_session_tokens(db_, session_id, row.updated_at, scope="control")
            return True, None

        _, (_, run_id) = await services.log.transact(
            session_id, None, lambda result: [("session.closed", {})] if result[0] else [], close
        )
        if run_id is None:
            break
    await services.runner.announce(f"release {session_id}")  # its computer elsewhere
    async with services.sessionmaker() as fresh:
        row = await repo.get_session(fresh, session_id)
        if row is None:  # purged meanwhile (another DELETE ?purge=true)
            raise Problem(404, f"Session {session_id} not found.")
        closed = (await sessions_view(fresh, [row]))[0]
    if purge:
        await purge_session(services.log, session_id)
    return closed


METADATA_FILTER = "metadata."
MAX_METADATA_FILTERS = 20
MAX_METADATA_FILTER_CHARS = 1000


def _metadata_filters(request: Request) -> list[tuple[str, str]]:
    """The `?metadata.KEY=VALUE` pairs of a list request."""
    pairs: list[tuple[str, str]] = []
    for name, value in request.query_params.multi_items():
        if not name.startswith(METADATA_FILTER):
            continue
        key = name[len(METADATA_FILTER) :]
        if not key:
            raise _invalid(name, "name a metadata key: metadata.KEY=VALUE")
        if len(key) > MAX_METADATA_FILTER_CHARS or len(value) > MAX_METADATA_FILTER_CHARS:
            raise _invalid(name, f"at most {MAX_METADATA_FILTER_CHARS} characters")
        pairs.append((key, value))
    if len(pairs) > MAX_METADATA_FILTERS:
        raise _invalid("metadata", f"at most {MAX_METADATA_FILTERS} metadata filters")
    return pairs
