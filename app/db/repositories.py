"""Every SQL statement of the service. Functions take the caller's AsyncSession and
never commit: the caller (a request, or the event log's writer) owns the transaction."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    ARRAY,
    BigInteger,
    Column,
    ColumnElement,
    Select,
    String,
    Table,
    and_,
    case,
    delete,
    exists,
    func,
    literal,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy import cast as cast_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased, undefer

from app.db.models import (
    Base,
    EventRow,
    IdempotencyKeyRow,
    RunRow,
    SafetyCheckRow,
    ScreenshotRow,
    SessionRow,
    SessionTokenRow,
    TenantRequestCountRow,
    TurnRow,
    UTCDateTime,
    utcnow,
)
from app.events.types import TERMINAL_RUN_EVENTS, StoredEvent

# The tables behind the models, for the Core statements of the writer's hot path.
EVENTS = cast(Table, EventRow.__table__)
TURNS = cast(Table, TurnRow.__table__)
SCREENSHOTS = cast(Table, ScreenshotRow.__table__)

# A session read for the API carries its newest seq, from the same statement.
_WITH_SEQ = undefer(SessionRow.last_event_seq)

UNFINISHED_RUN_STATUSES = ("queued", "running", "awaiting_safety_check")
TERMINAL_RUN_STATUSES = ("completed", "failed", "cancelled")

# ---- events ---------------------------------------------------------------


async def max_event_seq(db: AsyncSession, session_id: str) -> int:
    value = await db.scalar(select(func.max(EventRow.seq)).where(EventRow.session_id == session_id))
    return int(value or 0)


async def insert_events(db: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """One Core executemany (not the ORM's bulk insert: events are never loaded as
    objects in the writer's session). Pending ORM changes go first: an event may
    belong to a session row added in the same transaction."""
    await db.flush()
    await db.execute(EVENTS.insert(), list(rows))


async def notify(db: AsyncSession, channel: str, payloads: Sequence[str]) -> None:
    """A NOTIFY on `channel` per payload (Postgres), delivered when the transaction
    commits; one statement whatever their number."""
    await db.execute(
        select(func.pg_notify(channel, func.unnest(literal(list(payloads), ARRAY(String)))))
    )


def _select_events() -> Select[tuple[str, int, str | None, str, dict[str, Any], datetime]]:
    # Exactly StoredEvent's fields, in its order.
    return select(
        EventRow.session_id,
        EventRow.seq,
        EventRow.run_id,
        EventRow.type,
        EventRow.data,
        EventRow.created_at,
    )


async def list_events(
    db: AsyncSession, session_id: str, after: int, limit: int
) -> list[StoredEvent]:
    rows = await db.execute(
        _select_events()
        .where(EventRow.session_id == session_id, EventRow.seq > after)
        .order_by(EventRow.seq)
        .limit(limit)
    )
    return [StoredEvent(*row) for row in rows]


async def list_events_of_sessions(
    db: AsyncSession, cursors: dict[str, int], limit: int
) -> list[StoredEvent]:
    """The events of several sessions after each one's cursor, by session then seq, in
    one statement (Postgres: the two arrays are unnested side by side)."""
    after = (
        select(
            func.unnest(literal(list(cursors), ARRAY(String))).label("session_id"),
            func.unnest(literal(list(cursors.values()), ARRAY(BigInteger))).label("seq"),
        )
    ).subquery("after")
    rows = await db.execute(
        _select_events()
        .join(after, (EventRow.session_id == after.c.session_id) & (EventRow.seq > after.c.seq))
        .order_by(EventRow.session_id, EventRow.seq)
        .limit(limit)
    )
    return [StoredEvent(*row) for row in rows]


async def list_run_events(
    db: AsyncSession, session_id: str, run_id: str, types: Sequence[str]
) -> list[StoredEvent]:
    rows = await db.execute(
        _select_events()
        .where(
            EventRow.session_id == session_id,
            EventRow.run_id == run_id,
            EventRow.type.in_(list(types)),
        )
        .order_by(EventRow.seq)
    )
    return [StoredEvent(*row) for row in rows]


async def terminal_event_seq(db: AsyncSession, session_id: str, run_id: str) -> int | None:
    return await db.scalar(
        select(EventRow.seq).where(
            EventRow.session_id == session_id,
            EventRow.run_id == run_id,
            EventRow.type.in_(TERMINAL_RUN_EVENTS),
        )
    )


# ---- sessions ---------------------------------------------------------------


async def get_session(
    db: AsyncSession, session_id: str, tenant: str | None = None
) -> SessionRow | None:
    stmt = select(SessionRow).where(SessionRow.id == session_id).options(_WITH_SEQ)
    if tenant is not None:
        stmt = stmt.where(SessionRow.tenant == tenant)
    return await db.scalar(stmt)


async def list_sessions(
    db: AsyncSession,
    tenant: str,
    status: str | None,
    after: str | None,
    limit: int,
    metadata: Sequence[tuple[str, str]] = (),
) -> list[SessionRow]:
    """Newest first; `metadata` pairs must all match (`metadata_matches`)."""
    stmt = select(SessionRow).where(SessionRow.tenant == tenant).options(_WITH_SEQ)
    if status is not None:
        stmt = stmt.where(SessionRow.status == status)
    for key, value in metadata:
        stmt = stmt.where(metadata_matches(db.get_bind().dialect.name, key, value))
    if after is not None:
        stmt = stmt.where(SessionRow.id < after)
    result = await db.scalars(stmt.order_by(SessionRow.id.desc()).limit(limit))
    return list(result)


# JSON types whose value, "as a string", is well defined: a string is itself, a number
# or a boolean its JSON spelling (5, 2.5, true). Null, arrays and objects never match.
_PG_MATCHABLE = ("string", "number", "boolean")
_SQLITE_MATCHABLE = ("text", "integer", "real", "true", "false")


def metadata_matches(dialect: str, key: str, value: str) -> ColumnElement[bool]:
    """The session's `metadata[key]`, as a string, equals `value`. Bound parameters only:
    any key (dots, quotes) is looked up as it is, never parsed as a JSON path."""
    if dialect == "postgresql":
        field = SessionRow.metadata_.op("->", return_type=postgresql.JSONB)(literal(key, String))
        text_of = SessionRow.metadata_.op("->>", return_type=String)(literal(key, String))
        return and_(func.jsonb_typeof(field).in_(_PG_MATCHABLE), text_of == value)
    entry = func.json_each(SessionRow.metadata_).table_valued("key", "value", "type")
    as_text = case(
        (entry.c.type == "true", literal("true")),
        (entry.c.type == "false", literal("false")),
        else_=cast_(entry.c.value, String),
    )
    return exists(
        select(1)
        .select_from(entry)
        .where(entry.c.key == key, entry.c.type.in_(_SQLITE_MATCHABLE), as_text == value)
    )


async def update_session(db: AsyncSession, session_id: str, **values: Any) -> None:
    values.setdefault("updated_at", utcnow())
    # Objects of this session already loaded are not refreshed: the writer's callers
    # never read back a column they update this way.
    await db.execute(
        update(SessionRow)
        .where(SessionRow.id == session_id)
        .values(**values)
        .execution_options(synchronize_session=False)
    )


def add_usage(total: dict[str, Any] | None, usage: dict[str, int]) -> dict[str, int]:
    merged = dict(total or {})
    for key, value in usage.items():
        merged[key] = int(merged.get(key, 0)) + int(value or 0)
    return merged


# ---- runs -------------------------------------------------------------------


async def get_run(db: AsyncSession, session_id: str, run_id: str) -> RunRow | None:
    return await db.scalar(
        select(RunRow).where(RunRow.id == run_id, RunRow.session_id == session_id)
    )


async def get_runs(db: AsyncSession, run_ids: Sequence[str]) -> list[RunRow]:
    return list(await db.scalars(select(RunRow).where(RunRow.id.in_(list(run_ids)))))


async def latest_run(db: AsyncSession, session_id: str) -> RunRow | None:
    return await db.scalar(
        select(RunRow).where(RunRow.session_id == session_id).order_by(RunRow.id.desc()).limit(1)
    )


async def list_runs(
    db: AsyncSession, session_id: str, after: str | None, limit: int
) -> list[RunRow]:
    stmt = select(RunRow).where(RunRow.session_id == session_id)
    if after is not None:
        stmt = stmt.where(RunRow.id < after)
    return list(await db.scalars(stmt.order_by(RunRow.id.desc()).limit(limit)))


async def list_unfinished_runs(db: AsyncSession) -> list[RunRow]:
    stmt = (
        select(RunRow)
        .where(RunRow.status.in_(UNFINISHED_RUN_STATUSES))
        .order_by(RunRow.created_at, RunRow.id)
    )
    return list(await db.scalars(stmt))


async def update_run(db: AsyncSession, run_id: str, **values: Any) -> None:
    await db.execute(update(RunRow).where(RunRow.id == run_id).values(**values))


# ---- run leases ---------------------------------------------------------------
# Expiry is judged by the database's clock on Postgres, where replicas on several
# machines share it; SQLite is one process (an OS lock makes sure), whose clock it is.


def db_now(db: AsyncSession) -> ColumnElement[datetime]:
    if db.get_bind().dialect.name == "postgresql":
        return func.now()
    return literal(utcnow(), UTCDateTime())


def lease_expiry(db: AsyncSession, ttl_s: float) -> ColumnElement[datetime]:
    if db.get_bind().dialect.name == "postgresql":
        return func.now() + timedelta(seconds=ttl_s)
    return literal(utcnow() + timedelta(seconds=ttl_s), UTCDateTime())


@dataclass(frozen=True)
class ClaimedRun:
    run_id: str
    session_id: str
    status: str
    epoch: int
    previous_owner: str | None


async def claim_runs(
    db: AsyncSession,
    owner: str,
    limit: int,
    ttl_s: float,
    *,
    own_past: bool = False,
    running_here: Sequence[str] = (),
    tenant_limit: int | None = None,
) -> list[ClaimedRun]:
    """Take up to `limit` runs, oldest first, at a new epoch: queued runs, runs whose
    lease was released (hand-off) or lapsed, and with `own_past` those a previous
    life of `owner` held (a restart under the same REPLICA_ID). Rows another replica
    is claiming at the same moment are skipped, not waited for. With `tenant_limit`
    (TENANT_MAX_ACTIVE_RUNS), a queued run is taken only while its tenant has fewer
    active runs than that, counting those taken by this same statement."""

    def candidate(run: Any) -> ColumnElement[bool]:
        claimable = or_(run.lease_owner.is_(None), run.lease_expires_at < db_now(db))
        if own_past:
            claimable = or_(claimable, run.lease_owner == owner)
        if db.get_bind().dialect.name != "postgresql":
            # One process per SQLite file: any other owner is a process that is gone.
            claimable = or_(claimable, run.lease_owner != owner)
        return and_(
            run.status.in_(UNFINISHED_RUN_STATUSES),
            claimable,
            # A run this process still executes (its lease lapsed while the database was
            # away) is not claimed again: it is fenced, stops, and is claimed afterwards.
            run.id.not_in(list(running_here)),
        )

    stmt = select(RunRow.id, RunRow.lease_owner).where(candidate(RunRow))
    if tenant_limit is not None:
        stmt = stmt.where(
            or_(RunRow.status != "queued", RunRow.id.in_(_queued_within(candidate, tenant_limit)))
        )
        if db.get_bind().dialect.name == "postgresql":
            # Claims on every replica take turns (until commit), so each counts what the
            # others claimed: together they cannot pass a tenant's limit. Only with the
            # limit set; SQLite has one claimer.
            await db.execute(select(func.pg_advisory_xact_lock(TENANT_CLAIM_LOCK_KEY)))
    picked = await db.execute(
        stmt.order_by(RunRow.created_at, RunRow.id).limit(limit).with_for_update(skip_locked=True)
    )
    previous: dict[str, str | None] = {run_id: owner for run_id, owner in picked.all()}
    if not previous:
        return []
    result = await db.execute(
        update(RunRow)
        .where(RunRow.id.in_(previous))
        .values(
            lease_owner=owner,
            lease_epoch=RunRow.lease_epoch + 1,
            lease_expires_at=lease_expiry(db, ttl_s),
        )
        .returning(RunRow.id, RunRow.session_id, RunRow.status, RunRow.lease_epoch)
        .execution_options(synchronize_session=False)
    )
    claimed = [ClaimedRun(*row, previous[row[0]]) for row in result.all()]
    # Oldest first, as picked (RETURNING keeps no order; ids sort by creation time).
    return sorted(claimed, key=lambda run: run.run_id)


# The Postgres advisory lock (transaction-level) that claims take when
# TENANT_MAX_ACTIVE_RUNS is set: the first 8 bytes of sha256(b"agent-sessions:tenant-claims").
TENANT_CLAIM_LOCK_KEY = -3674609159773311241


def _queued_within(
    candidate: Callable[[Any], ColumnElement[bool]], tenant_limit: int
) -> Select[tuple[str]]:
    """The ids of the claimable queued runs that fit their tenant's limit: the oldest
    first, as many as the tenant's active runs leave room for. Active: unfinished and
    not a claimable queued run (so running, waiting for a human, or queued but claimed
    by a live replica and starting), counted per tenant in the same statement."""
    active_run, queued_run = aliased(RunRow), aliased(RunRow)
    active = (
        select(SessionRow.tenant.label("tenant"), func.count().label("runs"))
        .join_from(active_run, SessionRow, SessionRow.id == active_run.session_id)
        .where(
            active_run.status.in_(UNFINISHED_RUN_STATUSES),
            ~and_(active_run.status == "queued", candidate(active_run)),
        )
        .group_by(SessionRow.tenant)
        .subquery("active")
    )
    ranked = (
        select(
            queued_run.id.label("id"),
            SessionRow.tenant.label("tenant"),
            func.row_number()
            .over(
                partition_by=SessionRow.tenant,
                order_by=(queued_run.created_at, queued_run.id),
            )
            .label("place"),
        )
        .join_from(queued_run, SessionRow, SessionRow.id == queued_run.session_id)
        .where(queued_run.status == "queued", candidate(queued_run))
        .subquery("ranked")
    )
    return (
        select(ranked.c.id)
        .outerjoin(active, active.c.tenant == ranked.c.tenant)
        .where(func.coalesce(active.c.runs, 0) + ranked.c.place <= tenant_limit)
    )


async def renew_leases(
    db: AsyncSession, owner: str, leases: Sequence[tuple[str, int]], ttl_s: float
) -> dict[str, str | None]:
    """Extend the leases `owner` still holds at those epochs; run id -> the cancel a
    replica requested for it (None when none). A run missing from the answer is lost."""
    if not leases:
        return {}
    result = await db.execute(
        update(RunRow)
        .where(RunRow.lease_owner == owner, tuple_(RunRow.id, RunRow.lease_epoch).in_(leases))
        .values(lease_expires_at=lease_expiry(db, ttl_s))
        .returning(RunRow.id, RunRow.cancel_requested)
        .execution_options(synchronize_session=False)
    )
    return {run_id: cancel for run_id, cancel in result.all()}


async def release_lease(db: AsyncSession, owner: str, run_id: str, epoch: int) -> bool:
    """Give the run up for another replica to claim at once (hand-off)."""
    result = await db.execute(
        update(RunRow)
        .where(RunRow.id == run_id, RunRow.lease_owner == owner, RunRow.lease_epoch == epoch)
        .values(lease_owner=None, lease_expires_at=None)
        .execution_options(synchronize_session=False)
    )
    return getattr(result, "rowcount", 0) == 1


async def take_unowned_run(db: AsyncSession, run_id: str, owner: str) -> bool:
    """Fence off any past owner of a run nobody holds (queued, released, lapsed) so
    this transaction may conclude it: a new epoch and no owner. False when a live
    replica holds it (or it ended)."""
    alive = or_(RunRow.lease_owner.is_(None), RunRow.lease_expires_at < db_now(db))
    if db.get_bind().dialect.name != "postgresql":
        alive = or_(alive, RunRow.lease_owner != owner)
    result = await db.execute(
        update(RunRow)
        .where(RunRow.id == run_id, RunRow.status.in_(UNFINISHED_RUN_STATUSES), alive)
        .values(lease_owner=None, lease_epoch=RunRow.lease_epoch + 1, lease_expires_at=None)
        .execution_options(synchronize_session=False)
    )
    return getattr(result, "rowcount", 0) == 1


async def run_lease_state(db: AsyncSession, run_id: str, owner: str) -> tuple[str, bool] | None:
    """(status, whether a replica's lease on it is live) of a run; None if no such run.
    On SQLite only `owner` (this process) can hold a live lease."""
    alive: ColumnElement[bool] = RunRow.lease_owner == owner
    if db.get_bind().dialect.name == "postgresql":
        alive = RunRow.lease_owner.is_not(None) & (RunRow.lease_expires_at >= db_now(db))
    row = (await db.execute(select(RunRow.status, alive).where(RunRow.id == run_id))).first()
    return None if row is None else (str(row[0]), bool(row[1]))


async def request_cancel(db: AsyncSession, run_id: str, reason: str) -> bool:
    """Record a cancel for the run's owner to carry out; False if the run ended."""
    result = await db.execute(
        update(RunRow)
        .where(RunRow.id == run_id, RunRow.status.in_(UNFINISHED_RUN_STATUSES))
        .values(cancel_requested=reason)
        .execution_options(synchronize_session=False)
    )
    return getattr(result, "rowcount", 0) == 1


# ---- turns ------------------------------------------------------------------


def _insert_ignoring_conflicts(db: AsyncSession, table: Table, values: dict[str, Any]) -> Any:
    """INSERT ... ON CONFLICT DO NOTHING, in the dialect of `db`."""
    dialect = db.get_bind().dialect.name
    insert_ = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return insert_(table).values(values).on_conflict_do_nothing()


async def insert_or_update_turn(db: AsyncSession, values: dict[str, Any]) -> bool:
    """Insert the turn, or update it when (run_id, index) exists; True when inserted."""
    result = await db.execute(_insert_ignoring_conflicts(db, TURNS, values))
    if getattr(result, "rowcount", 0) == 1:  # not -1 ("unknown"): usage counts once
        return True
    changed = {k: v for k, v in values.items() if k not in ("id", "started_at")}
    await _update_turn(db, values["run_id"], values["index"], changed)
    return False


async def update_turn_results(
    db: AsyncSession,
    run_id: str,
    index: int,
    actions: list[Any],
    results: list[Any],
    ended_at: datetime,
) -> bool:
    """A recorded turn's actions and results (the second write of a turn: its response
    and usage were recorded with the first); False when the row is not there."""
    values = {"actions": actions, "results": results, "ended_at": ended_at}
    return await _update_turn(db, run_id, index, values)


async def _update_turn(db: AsyncSession, run_id: str, index: int, values: dict[str, Any]) -> bool:
    result = await db.execute(
        TURNS.update().where(TURNS.c.run_id == run_id, TURNS.c.index == index).values(values)
    )
    return getattr(result, "rowcount", 0) == 1


async def list_turns(
    db: AsyncSession, session_id: str, run_id: str | None, after: str | None, limit: int
) -> list[TurnRow]:
    stmt = select(TurnRow).where(TurnRow.session_id == session_id)
    if run_id is not None:
        stmt = stmt.where(TurnRow.run_id == run_id)
    if after is not None:
        stmt = stmt.where(TurnRow.id > after)
    return list(await db.scalars(stmt.order_by(TurnRow.id).limit(limit)))


# ---- screenshots --------------------------------------------------------------


def screenshot_id(session_id: str, data: bytes) -> tuple[str, str]:
    """(id, sha256): the id is derived from the session and the content, so the same
    image is stored once per session and ids never collide across tenants."""
    digest = hashlib.sha256(data).hexdigest()
    return "shot_" + hashlib.sha256(f"{session_id}:{digest}".encode()).hexdigest()[:40], digest


async def store_screenshot(
    db: AsyncSession, session_id: str, data: bytes, media_type: str, width: int, height: int
) -> str:
    """Insert the image unless this session already stored the same bytes; return its id."""
    shot_id, digest = screenshot_id(session_id, data)
    values = {
        "id": shot_id,
        "session_id": session_id,
        "sha256": digest,
        "media_type": media_type,
        "width": width,
        "height": height,
        "data": data,
        "created_at": utcnow(),
    }
    # One statement, no ORM object: the same image twice in a session is stored once.
    await db.execute(_insert_ignoring_conflicts(db, SCREENSHOTS, values))
    return shot_id


async def get_screenshot(db: AsyncSession, session_id: str, shot_id: str) -> ScreenshotRow | None:
    return await db.scalar(
        select(ScreenshotRow).where(
            ScreenshotRow.id == shot_id, ScreenshotRow.session_id == session_id
        )
    )


# ---- safety checks ------------------------------------------------------------


async def list_safety_checks(
    db: AsyncSession, session_id: str, status: str | None, after: str | None, limit: int
) -> list[SafetyCheckRow]:
    stmt = select(SafetyCheckRow).where(SafetyCheckRow.session_id == session_id)
    if status is not None:
        stmt = stmt.where(SafetyCheckRow.status == status)
    if after is not None:
        stmt = stmt.where(SafetyCheckRow.id > after)
    return list(await db.scalars(stmt.order_by(SafetyCheckRow.id).limit(limit)))


async def safety_checks_for_call(
    db: AsyncSession, run_id: str, call_id: str
) -> list[SafetyCheckRow]:
    stmt = select(SafetyCheckRow).where(
        SafetyCheckRow.run_id == run_id, SafetyCheckRow.call_id == call_id
    )
    return list(await db.scalars(stmt.order_by(SafetyCheckRow.id)))


async def get_safety_check(
    db: AsyncSession, session_id: str, check_id: str, *, for_update: bool = False
) -> SafetyCheckRow | None:
    """The check; with `for_update`, locked until the transaction ends (a decision on one
    replica and the run's expiry on another must not both win)."""
    stmt = select(SafetyCheckRow).where(
        SafetyCheckRow.id == check_id, SafetyCheckRow.session_id == session_id
    )
    return await db.scalar(stmt.with_for_update() if for_update else stmt)


async def expire_pending_checks(
    db: AsyncSession, run_id: str, now: datetime, call_id: str | None = None
) -> list[SafetyCheckRow]:
    """Mark the run's (or one call's) pending checks expired; return them."""
    stmt = select(SafetyCheckRow).where(
        SafetyCheckRow.run_id == run_id, SafetyCheckRow.status == "pending"
    )
    if call_id is not None:
        stmt = stmt.where(SafetyCheckRow.call_id == call_id)
    rows = list(await db.scalars(stmt.with_for_update()))
    for row in rows:
        row.status = "expired"
        row.decided_at = now
    return rows


# ---- session tokens -----------------------------------------------------------


async def lock_session(db: AsyncSession, session_id: str) -> SessionRow | None:
    """The session row, locked until the transaction ends (Postgres; SQLite's writer
    lock serializes anyway)."""
    return await db.scalar(select(SessionRow).where(SessionRow.id == session_id).with_for_update())


async def add_session_token(db: AsyncSession, token: SessionTokenRow) -> None:
    db.add(token)
    await db.flush()


async def get_session_token(db: AsyncSession, token_id: str) -> tuple[SessionTokenRow, str] | None:
    """The token and its session's tenant, in one statement."""
    row = (
        await db.execute(
            select(SessionTokenRow, SessionRow.tenant)
            .join(SessionRow, SessionRow.id == SessionTokenRow.session_id)
            .where(SessionTokenRow.id == token_id)
        )
    ).first()
    return None if row is None else (row[0], row[1])


async def revoke_session_tokens(
    db: AsyncSession, session_id: str, now: datetime, scope: str | None = None
) -> int:
    """Revoke the session's live tokens (of one scope, or all); how many were."""
    stmt = update(SessionTokenRow).where(
        SessionTokenRow.session_id == session_id, SessionTokenRow.revoked_at.is_(None)
    )
    if scope is not None:
        stmt = stmt.where(SessionTokenRow.scope == scope)
    result = await db.execute(
        stmt.values(revoked_at=now).execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


# ---- idempotency keys -----------------------------------------------------------
# One row per (tenant, caller, key): its primary key decides which of several
# concurrent requests (on any replica) runs; the others find the row.


@dataclass(frozen=True)
class IdempotencyRecord:
    """What a key holds: the request's hash and, once answered, the answer (else None)."""

    request_sha256: str
    status_code: int | None
    content_type: str | None
    body: bytes | None


def _idempotency_key_is(tenant: str, caller: str, key: str) -> ColumnElement[bool]:
    return and_(
        IdempotencyKeyRow.tenant == tenant,
        IdempotencyKeyRow.caller == caller,
        IdempotencyKeyRow.key == key,
    )


async def claim_idempotency_key(
    db: AsyncSession,
    tenant: str,
    caller: str,
    key: str,
    request_sha256: str,
    now: datetime,
    expires_at: datetime,
) -> IdempotencyRecord | None:
    """Insert the key "in progress" unless it is live: None when this request claimed it,
    else what the key holds. One statement: an expired row of the key is overwritten in
    place (ON CONFLICT DO UPDATE ... WHERE expired), a live one is left alone. On
    Postgres a concurrent uncommitted claim of the same key makes it wait for that
    claim's outcome. Each statement may commit on its own (autocommit)."""
    table = cast(Table, IdempotencyKeyRow.__table__)
    fresh = {
        "request_sha256": request_sha256,
        "status_code": None,
        "content_type": None,
        "body": None,
        "session_id": None,
        "created_at": now,
        "expires_at": expires_at,
    }
    insert_ = postgresql.insert if db.get_bind().dialect.name == "postgresql" else sqlite.insert
    upsert = insert_(table).values(tenant=tenant, caller=caller, key=key, **fresh)
    claim = upsert.on_conflict_do_update(
        index_elements=[table.c.tenant, table.c.caller, table.c.key],
        set_=fresh,
        where=table.c.expires_at <= now,
    ).returning(table.c.key)
    for _ in range(3):
        if (await db.execute(claim)).first() is not None:
            return None
        found = await get_idempotency_key(db, tenant, caller, key, now)
        if found is not None:
            return found
        # Gone between the two statements (its request failed and let go): again.
    raise RuntimeError("an idempotency key kept vanishing while it was claimed")


async def get_idempotency_key(
    db: AsyncSession, tenant: str, caller: str, key: str, now: datetime
) -> IdempotencyRecord | None:
    """The live (unexpired) row of the key, or None."""
    row = (
        await db.execute(
            select(
                IdempotencyKeyRow.request_sha256,
                IdempotencyKeyRow.status_code,
                IdempotencyKeyRow.content_type,
                IdempotencyKeyRow.body,
            ).where(_idempotency_key_is(tenant, caller, key), IdempotencyKeyRow.expires_at > now)
        )
    ).first()
    return None if row is None else IdempotencyRecord(row[0], row[1], row[2], row[3])


async def store_idempotent_answer(
    db: AsyncSession,
    tenant: str,
    caller: str,
    key: str,
    status_code: int,
    content_type: str | None,
    body: bytes,
    session_id: str | None,
) -> None:
    await db.execute(
        update(IdempotencyKeyRow)
        .where(_idempotency_key_is(tenant, caller, key), IdempotencyKeyRow.status_code.is_(None))
        .values(
            status_code=status_code, content_type=content_type, body=body, session_id=session_id
        )
    )


async def release_idempotency_key(db: AsyncSession, tenant: str, caller: str, key: str) -> None:
    """Forget a key whose request is not to be kept (429, 5xx, an error), so a retry runs."""
    await db.execute(
        delete(IdempotencyKeyRow).where(
            _idempotency_key_is(tenant, caller, key), IdempotencyKeyRow.status_code.is_(None)
        )
    )


async def purge_expired_idempotency_keys(db: AsyncSession, now: datetime) -> int:
    result = await db.execute(delete(IdempotencyKeyRow).where(IdempotencyKeyRow.expires_at <= now))
    return int(getattr(result, "rowcount", 0) or 0)


# ---- retention --------------------------------------------------------------------
# Purging a session deletes every row that references it (found from the models'
# foreign keys, so a table added later is purged too), then the session.


def session_owned_tables() -> list[tuple[Table, Column[Any]]]:
    """(table, its column referencing sessions.id) for every such table, children
    before parents. Raises if a table refers to one of them without also naming the
    session (a purge by session id would then leave it dangling or fail)."""
    sessions = cast(Table, SessionRow.__table__)
    owned: list[tuple[Table, Column[Any]]] = []
    for table in reversed(Base.metadata.sorted_tables):
        for column in table.columns:
            if any(fk.column is sessions.c.id for fk in column.foreign_keys):
                owned.append((table, column))
                break
    purged = {table for table, _ in owned} | {sessions}
    for table in Base.metadata.sorted_tables:
        for fk in table.foreign_keys:
            if fk.column.table in purged and table not in purged:
                raise RuntimeError(
                    f"{table.name} references {fk.column.table.name} but not sessions"
                )
    return owned


async def lock_purgeable_sessions(
    db: AsyncSession, closed_before: datetime, limit: int
) -> list[str]:
    """Ids of closed sessions last changed before `closed_before`, oldest first, locked
    (other replicas purging at the same time skip them)."""
    stmt = (
        select(SessionRow.id)
        .where(SessionRow.status == "closed", SessionRow.updated_at < closed_before)
        .order_by(SessionRow.updated_at, SessionRow.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list(await db.scalars(stmt))


async def delete_sessions(db: AsyncSession, session_ids: Sequence[str]) -> None:
    """Delete the sessions and everything they own (events, runs, turns, screenshots,
    safety checks, tokens, webhook deliveries, the answers stored for idempotency keys)."""
    if not session_ids:
        return
    ids = list(session_ids)
    for table, column in session_owned_tables():
        await db.execute(delete(table).where(column.in_(ids)))
    await db.execute(delete(IdempotencyKeyRow).where(IdempotencyKeyRow.session_id.in_(ids)))
    await db.execute(delete(SessionRow).where(SessionRow.id.in_(ids)))


# ---- per-tenant request counts (TENANT_REQUESTS_PER_S, Postgres) -----------------


async def count_tenant_request(db: AsyncSession, tenant: str) -> int:
    """Count one request of `tenant` in the current one-second window, by the database's
    clock, and return how many it has made in that window (this one included). One
    upsert on the tenant's row: a new window starts the count again at 1; a request
    that reaches the row after the window moved on counts in the newer one. The
    transaction does not wait for its WAL flush: a count lost to a crash of the
    database costs nothing, and a flush would cost every request a disk write."""
    await db.execute(select(func.set_config("synchronous_commit", "off", True)))
    table = cast(Table, TenantRequestCountRow.__table__)
    window = cast_(func.floor(func.extract("epoch", func.clock_timestamp())), BigInteger)
    insert = postgresql.insert(table).values(tenant=tenant, window_start=window, count=1)
    newer = insert.excluded.window_start
    upsert = insert.on_conflict_do_update(
        index_elements=[table.c.tenant],
        set_={
            "count": case((newer > table.c.window_start, 1), else_=table.c.count + 1),
            "window_start": func.greatest(table.c.window_start, newer),
        },
    ).returning(table.c.count)
    return int((await db.execute(upsert)).scalar_one())
