"""webhooks: a session's webhook, the durable outbox and every delivery attempt

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07

`sessions.webhook` is the session's `{"url", "events"}` (NULL: none named).
`webhook_deliveries` is the outbox (SPEC v2.3): one row per event to deliver,
written in the event's own transaction; its id is the `webhook-id` header,
stable across the attempts. A replica's delivery worker claims due rows
(`status = 'pending'` and `next_attempt_at` passed, through a partial index) with
row locks, and only a session's oldest pending event (a second partial index finds
it); `attempts` counts the claims.
`webhook_attempts` lists every attempt (status code or error, times) for
`GET /v1/sessions/{sid}/webhook-deliveries`, in id order per session.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON_TYPE = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
BIGINT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
PENDING = sa.text("status = 'pending'")


def upgrade() -> None:
    op.add_column("sessions", sa.Column("webhook", JSON_TYPE, nullable=True))
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("session_id", sa.String(length=40), nullable=False),
        sa.Column("event_seq", sa.BigInteger(), nullable=False),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column("tenant", sa.String(length=200), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["session_id"], ["sessions.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("session_id", "event_seq", name="uq_webhook_deliveries_session_seq"),
    )
    op.create_index(
        "ix_webhook_deliveries_due",
        "webhook_deliveries",
        ["next_attempt_at"],
        postgresql_where=PENDING,
        sqlite_where=PENDING,
    )
    op.create_index(
        "ix_webhook_deliveries_pending_session",
        "webhook_deliveries",
        ["session_id", "event_seq"],
        postgresql_where=PENDING,
        sqlite_where=PENDING,
    )
    op.create_table(
        "webhook_attempts",
        sa.Column("id", BIGINT_PK, autoincrement=True, nullable=False),
        sa.Column("delivery_id", sa.String(length=40), nullable=False),
        sa.Column("session_id", sa.String(length=40), nullable=False),
        sa.Column("event_seq", sa.BigInteger(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("replica", sa.String(length=80), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["delivery_id"], ["webhook_deliveries.id"]),
        sa.ForeignKeyConstraint(["session_id"], ["sessions.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("delivery_id", "attempt", name="uq_webhook_attempts_delivery_attempt"),
    )
    op.create_index("ix_webhook_attempts_session_id", "webhook_attempts", ["session_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_webhook_attempts_session_id", table_name="webhook_attempts")
    op.drop_table("webhook_attempts")
    op.drop_index("ix_webhook_deliveries_pending_session", table_name="webhook_deliveries")
    op.drop_index("ix_webhook_deliveries_due", table_name="webhook_deliveries")
    op.drop_table("webhook_deliveries")
    if op.get_bind().dialect.name == "sqlite":
        # In place (SQLite 3.35+), not batch mode: see 0002.
        op.execute("ALTER TABLE sessions DROP COLUMN webhook")
    else:
        op.drop_column("sessions", "webhook")
