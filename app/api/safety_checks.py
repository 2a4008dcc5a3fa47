"""Safety checks: list them, and acknowledge or reject one (each decision is final)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Path, Query
from sqlalchemy.ext.asyncio import AsyncSession

from app.agents.safety import check_event_data
from app.api import schemas
from app.api.errors import Problem
from app.api.schemas import ID_PATTERN
from app.api.views import safety_check_view
from app.db import repositories as repo
from app.db.models import SafetyCheckRow, utcnow
from app.deps import ControlledSession, CurrentPrincipal, DbSession, ServicesDep, SessionOr404

router = APIRouter(prefix="/v1/sessions/{sid}/safety-checks", tags=["safety-checks"])
CheckId = Annotated[str, Path(max_length=64, pattern=ID_PATTERN)]
CheckStatus = Literal["pending", "acknowledged", "rejected", "expired"]


@router.get("", response_model=schemas.Page[schemas.SafetyCheck], summary="List safety checks")
async def list_safety_checks(
    session: SessionOr404,
    db: DbSession,
    status: CheckStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    after: Annotated[str | None, Query(max_length=64, pattern=ID_PATTERN)] = None,
) -> schemas.Page[schemas.SafetyCheck]:
    rows = await repo.list_safety_checks(db, session.id, status, after, limit + 1)
    page = rows[:limit]
    return schemas.Page[schemas.SafetyCheck](
        data=[safety_check_view(r) for r in page],
        next_after=page[-1].id if len(rows) > limit else None,
        has_more=len(rows) > limit,
    )


async def _decide(
    services: ServicesDep,
    session_id: str,
    check_id: str,
    verdict: str,
    reason: str | None,
    decided_by: str,
) -> schemas.SafetyCheck:
    now = utcnow()

    async def decide(db: AsyncSession) -> tuple[str, Any]:
        row = await repo.get_safety_check(db, session_id, check_id, for_update=True)
        if row is None:
            return "missing", None
        if row.status == "pending" and row.expires_at is not None and row.expires_at <= now:
            # Past its deadline but not yet expired by the run: expire it now.
            row.status, row.decided_at = "expired", now
            return "expired", row
        if row.status != "pending":
            return "decided", row
        row.status, row.decided_at, row.reason = verdict, now, reason
        row.decided_by = decided_by
        return "decided_now", row

    def announce(found: tuple[str, SafetyCheckRow | None]) -> list[tuple[str, dict[str, Any]]]:
        outcome, row = found
        if row is None or outcome == "decided":
            return []
        kind = "safety_check.expired" if outcome == "expired" else f"safety_check.{verdict}"
        return [(kind, check_event_data(row))]

    async with services.sessionmaker() as db:
        existing = await repo.get_safety_check(db, session_id, check_id)
    if existing is None:
        raise Problem(404, f"Safety check {check_id} not found.")
    # The decision and its event commit together, on the check's run.
    _, (outcome, row) = await services.log.transact(session_id, existing.run_id, announce, decide)
    if row is None:
        raise Problem(404, f"Safety check {check_id} not found.")
    # The waiting run reads the decision from the database; this only wakes it, here
    # or on the replica that runs it.
    services.runner.safety_gate.notify(row.run_id)
    await services.runner.announce(f"decided {row.run_id}")
    if outcome == "expired":
        raise Problem(409, f"Safety check {check_id} expired at {row.expires_at}.")
    if outcome == "decided":
        raise Problem(409, f"Safety check {check_id} was already {row.status}.")
    return safety_check_view(row)


@router.post(
    "/{cid}/acknowledge",
    response_model=schemas.SafetyCheck,
    responses={409: {"model": schemas.Problem}},
    summary="Acknowledge a pending check: the blocked action may proceed",
)
async def acknowledge_safety_check(
    cid: CheckId,
    session: ControlledSession,
    principal: CurrentPrincipal,
    services: ServicesDep,
    body: Annotated[schemas.AcknowledgeBody | None, Body()] = None,
) -> schemas.SafetyCheck:
    note = body.note if body else None
    return await _decide(services, session.id, cid, "acknowledged", note, principal.decided_by)


@router.post(
    "/{cid}/reject",
    response_model=schemas.SafetyCheck,
    responses={409: {"model": schemas.Problem}},
    summary="Reject a pending check: the action never runs and the run ends cancelled",
)
async def reject_safety_check(
    cid: CheckId,
    session: ControlledSession,
    principal: CurrentPrincipal,
    services: ServicesDep,
    body: schemas.RejectBody,
) -> schemas.SafetyCheck:
    return await _decide(services, session.id, cid, "rejected", body.reason, principal.decided_by)
