"""The SQL of the webhook outbox (SPEC v2.3), beside repositories.py and like it: the
caller owns the transaction.

A delivery is claimed in a short transaction of its own: the due row is locked (FOR
UPDATE SKIP LOCKED on Postgres, so two replicas never take one row; SQLite has one
process), its `attempts` grows by one (that number is the attempt's, and only one
claim gets it) and `next_attempt_at` moves past the attempt's timeout, so a replica
that dies mid-attempt leaves the row to be claimed again then. The outcome is written
only while the row still carries that attempt number (a fence against a late writer).
Only a session's oldest pending delivery is due: the next waits for its success or
give-up (seq order).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, cast

from sqlalchemy import ColumnElement, Table, func, literal, literal_column, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import (
    EventRow,
    SessionRow,
    UTCDateTime,
    WebhookAttemptRow,
    WebhookDeliveryRow,
    utcnow,
)
from app.events.types import StoredEvent

DELIVERIES = cast(Table, WebhookDeliveryRow.__table__)
ATTEMPTS = cast(Table, WebhookAttemptRow.__table__)
EVENTS = cast(Table, EventRow.__table__)

# A literal, not a bound parameter: a partial index (WHERE status = 'pending') serves a
# query only when the planner can see the value (Postgres's generic plans cannot).
PENDING: ColumnElement[str] = literal_column("'pending'")
INTERRUPTED = "interrupted: the replica sending it stopped before an answer"

Final = Literal["delivered", "failed"]


def _at(db: AsyncSession, offset_s: float = 0.0) -> ColumnElement[datetime]:
    """Now plus `offset_s`, by the database's clock on Postgres (replicas on several
    machines share it), by this process's on SQLite (one process)."""
    if db.get_bind().dialect.name == "postgresql":
        return func.now() + timedelta(seconds=offset_s)
    return literal(utcnow() + timedelta(seconds=offset_s), UTCDateTime())


async def session_webhook(db: AsyncSession, session_id: str) -> tuple[str, Any] | None:
    """(tenant, webhook column) of a session, or None when there is no such session."""
    row = (
        await db.execute(
            select(SessionRow.tenant, SessionRow.webhook).where(SessionRow.id == session_id)
        )
    ).first()
    return None if row is None else (row[0], row[1])


async def insert_deliveries(db: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Outbox rows, in the transaction that inserts their events."""
    await db.execute(DELIVERIES.insert(), list(rows))


@dataclass(frozen=True)
class Claim:
    """One attempt, claimed by this replica (its number: `attempt`), with its event."""

    delivery_id: str
    tenant: str
    url: str
    attempt: int
    event: StoredEvent | None  # None: gone (cannot normally happen; the row is not stuck)

    @property
    def session_id(self) -> str:
        return self.event.session_id if self.event is not None else ""


async def claim_due(db: AsyncSession, replica: str, limit: int, hold_s: float) -> list[Claim]:
    """Claim up to `limit` due deliveries, oldest due first, each the oldest pending one
    of its session, with their events; record their attempts as started. Core
    statements: this and finish_attempt run for every attempt."""
    d, e = DELIVERIES.c, EVENTS.c
    # The session's oldest pending seq, per row: a scalar subquery with an aggregate,
    # which Postgres keeps as a probe of the pending (session_id, event_seq) index per
    # row scanned (a NOT EXISTS became an anti join whose plan, on a table the
    # statistics thought empty, read every pending row per row: 0.4 s a claim at 2,000).
    oldest = DELIVERIES.alias("oldest")
    head = (
        select(func.min(oldest.c.event_seq))
        .where(oldest.c.session_id == d.session_id, oldest.c.status == PENDING)
        .scalar_subquery()
    )
    picked = (
        await db.execute(
            select(
                d.id,
                d.attempts,
                d.tenant,
                d.url,
                d.session_id,
                d.event_seq,
                e.session_id,
                e.seq,
                e.run_id,
                e.type,
                e.data,
                e.created_at,
            )
            .select_from(
                DELIVERIES.outerjoin(
                    EVENTS, (e.session_id == d.session_id) & (e.seq == d.event_seq)
                )
            )
            .where(d.status == PENDING, d.next_attempt_at <= _at(db), d.event_seq == head)
            # The due index's order alone: the scan stops at `limit` rows, no sort.
            .order_by(d.next_attempt_at)
            .limit(limit)
            .with_for_update(skip_locked=True, of=DELIVERIES)
        )
    ).all()
    if not picked:
        return []
    ids = [row[0] for row in picked]
    now = utcnow()
    reclaimed = [row[0] for row in picked if row[1] > 0]
    if reclaimed:  # an attempt left open by a replica that stopped mid-way: closed, with why
        await db.execute(
            ATTEMPTS.update()
            .where(ATTEMPTS.c.delivery_id.in_(reclaimed), ATTEMPTS.c.ended_at.is_(None))
            .values(error=INTERRUPTED, ended_at=now)
        )
    # The rows are locked (or, on SQLite, this process is the only writer): attempts + 1
    # is the number this claim gives each attempt.
    await db.execute(
        DELIVERIES.update()
        .where(d.id.in_(ids))
        .values(attempts=d.attempts + 1, next_attempt_at=_at(db, hold_s))
    )
    claims = [
        Claim(
            row[0],
            row[2],
            row[3],
            row[1] + 1,
            StoredEvent(row[6], row[7], row[8], row[9], row[10], row[11])
            if row[6] is not None
            else None,
        )
        for row in picked
    ]
    await db.execute(
        ATTEMPTS.insert(),
        [
            {
                "delivery_id": claim.delivery_id,
                "session_id": session_id,
                "event_seq": seq,
                "attempt": claim.attempt,
                "replica": replica,
                "started_at": now,
            }
            for claim, (_, _, _, _, session_id, seq, *_) in zip(claims, picked, strict=True)
        ],
    )
    return claims


def _attempt_of(claim: Claim) -> ColumnElement[bool]:
    return (ATTEMPTS.c.delivery_id == claim.delivery_id) & (ATTEMPTS.c.attempt == claim.attempt)


def _still_claimed(claim: Claim) -> ColumnElement[bool]:
    d = DELIVERIES.c
    return (d.id == claim.delivery_id) & (d.attempts == claim.attempt) & (d.status == "pending")


async def finish_attempt(
    db: AsyncSession,
    claim: Claim,
    *,
    status_code: int | None,
    error: str | None,
    final: Final | None,
    retry_in_s: float = 0.0,
) -> bool:
    """Record the attempt's answer; end the delivery (`final`) or schedule it again in
    `retry_in_s`. False when another claim has taken the delivery since (the attempt
    is still recorded)."""
    now = utcnow()
    await db.execute(
        ATTEMPTS.update()
        .where(_attempt_of(claim))
        .values(status_code=status_code, error=error, ended_at=now)
    )
    values: dict[str, Any] = (
        {"status": final, "ended_at": now}
        if final is not None
        else {"next_attempt_at": _at(db, retry_in_s)}
    )
    result = await db.execute(DELIVERIES.update().where(_still_claimed(claim)).values(**values))
    return bool(getattr(result, "rowcount", 0))


async def release_claim(db: AsyncSession, claim: Claim, error: str) -> None:
    """An attempt abandoned at shutdown: closed with `error`, the delivery due again now
    (another replica, or this one restarted, takes it without waiting for the hold)."""
    await db.execute(
        ATTEMPTS.update()
        .where(_attempt_of(claim), ATTEMPTS.c.ended_at.is_(None))
        .values(error=error, ended_at=utcnow())
    )
    await db.execute(
        DELIVERIES.update().where(_still_claimed(claim)).values(next_attempt_at=_at(db))
    )


async def list_attempts(
    db: AsyncSession,
    session_id: str,
    after: int | None,
    limit: int,
    event_seq: int | None = None,
) -> list[tuple[WebhookAttemptRow, str, str, int]]:
    """A session's attempts, oldest first, each with its event's type, its delivery's
    status and number of attempts so far."""
    query = (
        select(
            WebhookAttemptRow,
            WebhookDeliveryRow.event_type,
            WebhookDeliveryRow.status,
            WebhookDeliveryRow.attempts,
        )
        .join(WebhookDeliveryRow, WebhookDeliveryRow.id == WebhookAttemptRow.delivery_id)
        .where(WebhookAttemptRow.session_id == session_id)
        .order_by(WebhookAttemptRow.id)
        .limit(limit)
    )
    if after is not None:
        query = query.where(WebhookAttemptRow.id > after)
    if event_seq is not None:
        query = query.where(WebhookAttemptRow.event_seq == event_seq)
    return [(row[0], row[1], row[2], row[3]) for row in (await db.execute(query)).all()]


async def delivery_counts(db: AsyncSession) -> dict[str, int]:
    """Deliveries by status (tests and benchmarks)."""
    rows = await db.execute(
        select(WebhookDeliveryRow.status, func.count()).group_by(WebhookDeliveryRow.status)
    )
    return {status: int(count) for status, count in rows.all()}
