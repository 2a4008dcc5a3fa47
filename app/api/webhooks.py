"""The attempts to deliver a session's events to its webhook."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from app.api import schemas
from app.db import webhooks as db_webhooks
from app.db.models import WebhookAttemptRow
from app.deps import DbSession, SessionOr404

router = APIRouter(prefix="/v1/sessions/{sid}", tags=["webhooks"])


def attempt_view(
    row: WebhookAttemptRow, event_type: str, status: str, attempts: int
) -> schemas.WebhookAttempt:
    return schemas.WebhookAttempt(
        id=str(row.id),
        webhook_id=row.delivery_id,
        event_seq=row.event_seq,
        event_type=event_type,
        attempt=row.attempt,
        status_code=row.status_code,
        error=row.error,
        outcome=_outcome(row, status, attempts),
        started_at=row.started_at,
        ended_at=row.ended_at,
    )


def _outcome(
    row: WebhookAttemptRow, status: str, attempts: int
) -> Literal["in_flight", "delivered", "retrying", "failed", "interrupted"]:
    if row.ended_at is None:
        return "in_flight"
    if row.status_code is not None and 200 <= row.status_code < 300:
        return "delivered"
    if row.error is not None and row.error.startswith("interrupted"):
        return "interrupted"
    # Given up: the delivery failed for good, at its last attempt.
    return "failed" if status == "failed" and row.attempt == attempts else "retrying"


@router.get(
    "/webhook-deliveries",
    response_model=schemas.Page[schemas.WebhookAttempt],
    summary="Every attempt to deliver the session's events to its webhook, oldest first",
)
async def list_webhook_deliveries(
    session: SessionOr404,
    db: DbSession,
    event_seq: Annotated[int | None, Query(ge=1, le=schemas.MAX_SEQ)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    after: Annotated[int | None, Query(ge=0, le=schemas.MAX_SEQ)] = None,
) -> schemas.Page[schemas.WebhookAttempt]:
    """Each attempt: the event's seq and type, the attempt's number, the receiver's
    status code or the error, when it started and ended. `webhook_id` is the same for
    every attempt of one event (the `webhook-id` header)."""
    rows = await db_webhooks.list_attempts(db, session.id, after, limit + 1, event_seq)
    page = rows[:limit]
    return schemas.Page[schemas.WebhookAttempt](
        data=[attempt_view(*row) for row in page],
        next_after=str(page[-1][0].id) if len(rows) > limit else None,
        has_more=len(rows) > limit,
    )
