"""SQLAlchemy 2 models: sessions, runs, turns, events, screenshots, safety checks,
session tokens, webhook deliveries and attempts, idempotency keys, per-tenant request
counts.

The Alembic migrations (migrations/versions) create exactly these tables; a
test compares the two so they cannot drift.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    func,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, column_property, mapped_column
from sqlalchemy.types import TypeDecorator

JSONType = JSON().with_variant(JSONB(), "postgresql")
# SQLite has no BIGINT autoincrement: INTEGER PRIMARY KEY is its 64-bit rowid.
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend (SQLite hands back naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSONType, list[Any]: JSONType}


class EventRow(Base):
    __tablename__ = "events"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id"))
    seq: Mapped[int] = mapped_column(BigInteger)
    run_id: Mapped[str | None] = mapped_column(String(40))
    type: Mapped[str] = mapped_column(String(64))
    data: Mapped[dict[str, Any]] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    __table_args__ = (UniqueConstraint("session_id", "seq", name="uq_events_session_seq"),)


class SessionRow(Base):
    __tablename__ = "sessions"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(200), index=True)
    status: Mapped[str] = mapped_column(String(32))
    provider: Mapped[str] = mapped_column(String(32))
    model: Mapped[str] = mapped_column(String(200))
    system_prompt: Mapped[str | None] = mapped_column(Text)
    computer: Mapped[dict[str, Any]] = mapped_column(JSONType)
    options: Mapped[dict[str, Any]] = mapped_column(JSONType)
    safety: Mapped[dict[str, Any]] = mapped_column(JSONType)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSONType)
    active_run_id: Mapped[str | None] = mapped_column(String(40))
    last_run_id: Mapped[str | None] = mapped_column(String(40))
    usage: Mapped[dict[str, Any]] = mapped_column(JSONType)
    # The provider loop's resumable state (transcript with screenshots by reference,
    # in-flight action, response ids). Written only at step boundaries.
    agent_state: Mapped[dict[str, Any]] = mapped_column(JSONType)
    # Not stored (migration 0002): read with the row, in the same statement, so a
    # session's status and its newest seq come from one snapshot. Deferred: only the
    # API's reads ask for it (repositories.get_session / list_sessions).
    last_event_seq: Mapped[int] = column_property(
        select(func.coalesce(func.max(EventRow.seq), 0))
        .where(EventRow.session_id == id)
        .correlate_except(EventRow)
        .scalar_subquery(),
        deferred=True,
    )
    page_url: Mapped[str | None] = mapped_column(Text)
    # The session's webhook (migration 0006): {"url", "events"}, or None.
    webhook: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    __table_args__ = (Index("ix_sessions_tenant_created", "tenant", "created_at", "id"),)


# Keep in step with repositories.UNFINISHED_RUN_STATUSES and migration 0004.
_UNFINISHED_SQL = "status IN ('queued', 'running', 'awaiting_safety_check')"


class RunRow(Base):
    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id"), index=True)
    status: Mapped[str] = mapped_column(String(32))
    input: Mapped[str] = mapped_column(Text)
    output: Mapped[str | None] = mapped_column(Text)
    stop_reason: Mapped[str | None] = mapped_column(String(40))
    error: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    turns: Mapped[int] = mapped_column(Integer, default=0)
    usage: Mapped[dict[str, Any]] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The lease (migration 0003): the replica executing the run, the epoch of its
    # claim (grows with every claim), and its expiry by the database's clock.
    lease_owner: Mapped[str | None] = mapped_column(String(80))
    lease_epoch: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # A cancel committed by a replica that does not own the run: its reason.
    cancel_requested: Mapped[str | None] = mapped_column(String(40))
    # Structured output (migration 0008): the JSON Schema the answer must satisfy, and
    # the answer parsed from the model's final text, once valid (None reads back as
    # None whether it was stored as SQL NULL or JSON null).
    output_schema: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    output_json: Mapped[Any] = mapped_column(JSONType, nullable=True)

    __table_args__ = (
        Index("ix_runs_status_created", "status", "created_at"),
        # At most one unfinished run per session (migration 0004).
        Index(
            "uq_runs_one_unfinished_per_session",
            "session_id",
            unique=True,
            postgresql_where=text(_UNFINISHED_SQL),
            sqlite_where=text(_UNFINISHED_SQL),
        ),
    )


class TurnRow(Base):
    __tablename__ = "turns"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id"), index=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), index=True)
    index: Mapped[int] = mapped_column(Integer)
    request: Mapped[dict[str, Any]] = mapped_column(JSONType)
    response: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    actions: Mapped[list[Any]] = mapped_column(JSONType)
    results: Mapped[list[Any]] = mapped_column(JSONType)
    usage: Mapped[dict[str, Any]] = mapped_column(JSONType)
    latency_ms: Mapped[int | None] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (UniqueConstraint("run_id", "index", name="uq_turns_run_index"),)


class ScreenshotRow(Base):
    """One image, stored once per session by content hash; events carry only its id."""

    __tablename__ = "screenshots"

    id: Mapped[str] = mapped_column(String(80), primary_key=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id"), index=True)
    sha256: Mapped[str] = mapped_column(String(64))
    media_type: Mapped[str] = mapped_column(String(40))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    __table_args__ = (UniqueConstraint("session_id", "sha256", name="uq_screenshots_session_hash"),)


class SafetyCheckRow(Base):
    __tablename__ = "safety_checks"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id"), index=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), index=True)
    provider_check_id: Mapped[str | None] = mapped_column(String(200))
    code: Mapped[str] = mapped_column(String(80))
    message: Mapped[str] = mapped_column(Text)
    call_id: Mapped[str] = mapped_column(String(200))
    action: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    status: Mapped[str] = mapped_column(String(32))
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    reason: Mapped[str | None] = mapped_column(Text)
    # Who decided it (migration 0005): an API key's tenant, or "token:<token id>".
    decided_by: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class SessionTokenRow(Base):
    """A bearer token for one session (migration 0005). Only the SHA-256 of the token is
    stored; the token itself is shown once, in the response that creates it."""

    __tablename__ = "session_tokens"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id"), index=True)
    scope: Mapped[str] = mapped_column(String(16))
    token_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class IdempotencyKeyRow(Base):
    """A POST's Idempotency-Key (migration 0007): per caller (`tenant`, and `caller`,
    the token id for a session token, "" for an API key), the SHA-256 of the request
    (method, path, body; never the body) and, once the first request has answered, its
    status and body. `status_code` NULL: the first request is still in progress. The
    primary key is what makes one request win across replicas and concurrent requests."""

    __tablename__ = "idempotency_keys"

    tenant: Mapped[str] = mapped_column(String(200), primary_key=True)
    caller: Mapped[str] = mapped_column(String(40), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_sha256: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int | None] = mapped_column(Integer)
    content_type: Mapped[str | None] = mapped_column(String(200))
    body: Mapped[bytes | None] = mapped_column(LargeBinary)
    # The session the answer is about (no foreign key: a key may outlive it), so that
    # purging a session also purges the answers that describe it.
    session_id: Mapped[str | None] = mapped_column(String(40), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class WebhookDeliveryRow(Base):
    """The webhook outbox (migration 0006): one event to deliver to one URL. Written in
    the event's own transaction; its id is the `webhook-id` header of every attempt."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id"))
    event_seq: Mapped[int] = mapped_column(BigInteger)
    event_type: Mapped[str] = mapped_column(String(64))
    tenant: Mapped[str] = mapped_column(String(200))
    url: Mapped[str] = mapped_column(Text)
    # pending -> delivered | failed (given up)
    status: Mapped[str] = mapped_column(String(16))
    # Claims so far; the next attempt's number is attempts + 1.
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # When it is next due; a claim moves it past the attempt's timeout, so an
    # attempt whose replica died is taken again by another.
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        UniqueConstraint("session_id", "event_seq", name="uq_webhook_deliveries_session_seq"),
        Index(
            "ix_webhook_deliveries_due",
            "next_attempt_at",
            postgresql_where=text("status = 'pending'"),
            sqlite_where=text("status = 'pending'"),
        ),
        # A session's oldest pending delivery, which alone may be sent (seq order).
        Index(
            "ix_webhook_deliveries_pending_session",
            "session_id",
            "event_seq",
            postgresql_where=text("status = 'pending'"),
            sqlite_where=text("status = 'pending'"),
        ),
    )


class WebhookAttemptRow(Base):
    """One attempt to deliver an outbox row (migration 0006)."""

    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    delivery_id: Mapped[str] = mapped_column(ForeignKey("webhook_deliveries.id"))
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id"))
    event_seq: Mapped[int] = mapped_column(BigInteger)
    attempt: Mapped[int] = mapped_column(Integer)
    replica: Mapped[str] = mapped_column(String(80))
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        UniqueConstraint("delivery_id", "attempt", name="uq_webhook_attempts_delivery_attempt"),
        Index("ix_webhook_attempts_session_id", "session_id", "id"),
    )


class TenantRequestCountRow(Base):
    """Requests of one tenant in its current one-second window (migration 0008): what
    TENANT_REQUESTS_PER_S counts in on Postgres, shared by every replica."""

    __tablename__ = "tenant_request_counts"

    tenant: Mapped[str] = mapped_column(String(200), primary_key=True)
    # The window: whole seconds since the epoch, by the database's clock.
    window_start: Mapped[int] = mapped_column(BigInteger)
    count: Mapped[int] = mapped_column(Integer)
