"""one unfinished run per session, held by the database

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07

A session has at most one queued, running or awaiting_safety_check run
(SPEC: a second run while one is active is a 409). Row locks make create_run
check this under concurrency, and this partial unique index makes the
database itself refuse a second unfinished run, whichever replica races.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UNFINISHED = sa.text("status IN ('queued', 'running', 'awaiting_safety_check')")


def upgrade() -> None:
    op.create_index(
        "uq_runs_one_unfinished_per_session",
        "runs",
        ["session_id"],
        unique=True,
        postgresql_where=UNFINISHED,
        sqlite_where=UNFINISHED,
    )


def downgrade() -> None:
    op.drop_index("uq_runs_one_unfinished_per_session", table_name="runs")
