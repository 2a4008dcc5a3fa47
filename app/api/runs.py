"""Runs of a session (start, list, read, cancel) and their persisted turns."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, status

from app.agents.runner import RunConflict
from app.api import schemas
from app.api.errors import Problem
from app.api.schemas import ID_PATTERN
from app.api.views import run_view, turn_view
from app.db import repositories as repo
from app.deps import AcceptingRuns, ControlledSession, DbSession, ServicesDep, SessionOr404
from app.ids import new_id

router = APIRouter(prefix="/v1/sessions/{sid}", tags=["runs"])
RunId = Annotated[str, Path(max_length=64, pattern=ID_PATTERN)]


async def _load_run(services: ServicesDep, session_id: str, run_id: str) -> schemas.Run:
    async with services.sessionmaker() as db:
        run = await repo.get_run(db, session_id, run_id)
    if run is None:
        raise Problem(404, f"Run {run_id} not found.")
    return run_view(run)


@router.post(
    "/runs",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=schemas.Run,
    dependencies=[AcceptingRuns],
    responses={409: {"model": schemas.Problem}},
    summary="Start a follow-up run",
)
async def create_run(
    body: schemas.RunCreate, session: ControlledSession, services: ServicesDep
) -> schemas.Run:
    try:
        run = await services.runner.create_run(
            session.id, body.input, new_id("run"), output_schema=body.output_schema
        )
    except RunConflict as exc:
        raise Problem(409, str(exc)) from exc
    return run_view(run)


@router.get(
    "/runs",
    response_model=schemas.Page[schemas.Run],
    summary="List the session's runs, newest first",
)
async def list_runs(
    session: SessionOr404,
    db: DbSession,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    after: Annotated[str | None, Query(max_length=64, pattern=ID_PATTERN)] = None,
) -> schemas.Page[schemas.Run]:
    rows = await repo.list_runs(db, session.id, after, limit + 1)
    page = rows[:limit]
    return schemas.Page[schemas.Run](
        data=[run_view(r) for r in page],
        next_after=page[-1].id if len(rows) > limit else None,
        has_more=len(rows) > limit,
    )


@router.get("/runs/{rid}", response_model=schemas.Run, summary="Get a run")
async def get_run(rid: RunId, session: SessionOr404, services: ServicesDep) -> schemas.Run:
    return await _load_run(services, session.id, rid)


@router.post(
    "/runs/{rid}/cancel",
    response_model=schemas.Run,
    status_code=status.HTTP_202_ACCEPTED,
    responses={200: {"model": schemas.Run, "description": "The run had already ended"}},
    summary="Cancel a run (idempotent)",
)
async def cancel_run(
    rid: RunId, session: ControlledSession, services: ServicesDep, response: Response
) -> schemas.Run:
    run = await _load_run(services, session.id, rid)
    if run.status in repo.TERMINAL_RUN_STATUSES:
        response.status_code = status.HTTP_200_OK
        return run
    await services.runner.cancel(session.id, rid)
    return await _load_run(services, session.id, rid)


@router.post(
    "/cancel",
    response_model=schemas.Run,
    status_code=status.HTTP_202_ACCEPTED,
    responses={409: {"model": schemas.Problem}},
    summary="Cancel whatever run is active",
)
async def cancel_active_run(session: ControlledSession, services: ServicesDep) -> schemas.Run:
    if session.active_run_id is None:
        raise Problem(409, "The session has no active run.")
    await services.runner.cancel(session.id, session.active_run_id)
    return await _load_run(services, session.id, session.active_run_id)


@router.get("/turns", response_model=schemas.Page[schemas.Turn], summary="Persisted turns")
async def list_turns(
    session: SessionOr404,
    db: DbSession,
    run_id: Annotated[str | None, Query(max_length=64, pattern=ID_PATTERN)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    after: Annotated[str | None, Query(max_length=64, pattern=ID_PATTERN)] = None,
) -> schemas.Page[schemas.Turn]:
    rows = await repo.list_turns(db, session.id, run_id, after, limit + 1)
    page = rows[:limit]
    return schemas.Page[schemas.Turn](
        data=[turn_view(r) for r in page],
        next_after=page[-1].id if len(rows) > limit else None,
        has_more=len(rows) > limit,
    )
