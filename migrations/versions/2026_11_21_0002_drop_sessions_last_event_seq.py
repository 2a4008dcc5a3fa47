"""drop sessions.last_event_seq: read from the events' (session_id, seq) index instead

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21

The event log no longer updates the session row in every commit (one statement
fewer per write, measured in docs/BENCHMARKS.md, benchmark 4); the API reads a
session's newest seq with max(seq), a seek on uq_events_session_seq.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        # SQLite (3.35+) drops an unindexed column in place. Not batch mode: its table
        # rebuild drops `sessions`, which foreign keys forbid while rows refer to it.
        op.execute("ALTER TABLE sessions DROP COLUMN last_event_seq")
    else:
        op.drop_column("sessions", "last_event_seq")


def downgrade() -> None:
    op.add_column(
        "sessions",
        sa.Column("last_event_seq", sa.BigInteger(), nullable=False, server_default="0"),
    )
    op.execute(
        "UPDATE sessions SET last_event_seq = COALESCE("
        "(SELECT MAX(seq) FROM events WHERE events.session_id = sessions.id), 0)"
    )
