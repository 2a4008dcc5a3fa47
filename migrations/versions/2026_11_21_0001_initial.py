"""initial: sessions, runs, turns, events, screenshots, safety checks

Revision ID: 0001
Revises:
Create Date: 2026-11-21

Written out by hand from app/db/models.py (autogenerate, reviewed). It does not
import the models: a revision is a frozen picture of the schema at its date.
tests/db/test_migrations.py checks that upgrade head matches the models.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# JSONB on Postgres (indexable, compact), JSON text elsewhere.
JSON_TYPE = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
# SQLite autoincrements only INTEGER PRIMARY KEY (its 64-bit rowid).
BIGINT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "sessions",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("system_prompt", sa.Text(), nullable=True),
        sa.Column("computer", JSON_TYPE, nullable=False),
        sa.Column("options", JSON_TYPE, nullable=False),
        sa.Column("safety", JSON_TYPE, nullable=False),
        sa.Column("metadata", JSON_TYPE, nullable=False),
        sa.Column("active_run_id", sa.String(length=40), nullable=True),
        sa.Column("last_run_id", sa.String(length=40), nullable=True),
        sa.Column("last_event_seq", sa.BigInteger(), nullable=False),
        sa.Column("usage", JSON_TYPE, nullable=False),
        sa.Column("agent_state", JSON_TYPE, nullable=False),
        sa.Column("page_url", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_sessions_tenant"), "sessions", ["tenant"])
    op.create_index("ix_sessions_tenant_created", "sessions", ["tenant", "created_at", "id"])

    op.create_table(
        "runs",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("session_id", sa.String(length=40), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("input", sa.Text(), nullable=False),
        sa.Column("output", sa.Text(), nullable=True),
        sa.Column("stop_reason", sa.String(length=40), nullable=True),
        sa.Column("error", JSON_TYPE, nullable=True),
        sa.Column("turns", sa.Integer(), nullable=False),
        sa.Column("usage", JSON_TYPE, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["session_id"], ["sessions.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_runs_session_id"), "runs", ["session_id"])

    op.create_table(
        "turns",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("session_id", sa.String(length=40), nullable=False),
        sa.Column("run_id", sa.String(length=40), nullable=False),
        sa.Column("index", sa.Integer(), nullable=False),
        sa.Column("request", JSON_TYPE, nullable=False),
        sa.Column("response", JSON_TYPE, nullable=True),
        sa.Column("actions", JSON_TYPE, nullable=False),
        sa.Column("results", JSON_TYPE, nullable=False),
        sa.Column("usage", JSON_TYPE, nullable=False),
        sa.Column("latency_ms", sa.Integer(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"]),
        sa.ForeignKeyConstraint(["session_id"], ["sessions.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("run_id", "index", name="uq_turns_run_index"),
    )
    op.create_index(op.f("ix_turns_run_id"), "turns", ["run_id"])
    op.create_index(op.f("ix_turns_session_id"), "turns", ["session_id"])

    op.create_table(
        "events",
        sa.Column("id", BIGINT_PK, autoincrement=True, nullable=False),
        sa.Column("session_id", sa.String(length=40), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("run_id", sa.String(length=40), nullable=True),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("data", JSON_TYPE, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["session_id"], ["sessions.id"]),
        sa.PrimaryKeyConstraint("id"),
        # Also the index that replay (WHERE session_id = ? AND seq > ? ORDER BY seq) uses.
        sa.UniqueConstraint("session_id", "seq", name="uq_events_session_seq"),
    )

    op.create_table(
        "screenshots",
        sa.Column("id", sa.String(length=80), nullable=False),
        sa.Column("session_id", sa.String(length=40), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("media_type", sa.String(length=40), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["session_id"], ["sessions.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("session_id", "sha256", name="uq_screenshots_session_hash"),
    )
    op.create_index(op.f("ix_screenshots_session_id"), "screenshots", ["session_id"])

    op.create_table(
        "safety_checks",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("session_id", sa.String(length=40), nullable=False),
        sa.Column("run_id", sa.String(length=40), nullable=False),
        sa.Column("provider_check_id", sa.String(length=200), nullable=True),
        sa.Column("code", sa.String(length=80), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("call_id", sa.String(length=200), nullable=False),
        sa.Column("action", JSON_TYPE, nullable=True),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"]),
        sa.ForeignKeyConstraint(["session_id"], ["sessions.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_safety_checks_run_id"), "safety_checks", ["run_id"])
    op.create_index(op.f("ix_safety_checks_session_id"), "safety_checks", ["session_id"])


def downgrade() -> None:
    # Children first: every table below references sessions (and some runs).
    op.drop_index(op.f("ix_safety_checks_session_id"), table_name="safety_checks")
    op.drop_index(op.f("ix_safety_checks_run_id"), table_name="safety_checks")
    op.drop_table("safety_checks")
    op.drop_index(op.f("ix_screenshots_session_id"), table_name="screenshots")
    op.drop_table("screenshots")
    op.drop_table("events")
    op.drop_index(op.f("ix_turns_session_id"), table_name="turns")
    op.drop_index(op.f("ix_turns_run_id"), table_name="turns")
    op.drop_table("turns")
    op.drop_index(op.f("ix_runs_session_id"), table_name="runs")
    op.drop_table("runs")
    op.drop_index("ix_sessions_tenant_created", table_name="sessions")
    op.drop_index(op.f("ix_sessions_tenant"), table_name="sessions")
    op.drop_table("sessions")
