"""run leases: the replica that executes a run, the epoch of its claim, its expiry

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04

A run is executed only by the replica holding its lease (SPEC v2.1). Every write
of the run's state or events proves `lease_owner` and `lease_epoch` in its own
transaction; `lease_expires_at` is judged by the database's clock. A replica
claims queued runs and runs whose lease lapsed oldest first, through the
(status, created_at) index. `cancel_requested` is a cancel committed by a
replica that does not own the run, for the owner to act on.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("runs", sa.Column("lease_owner", sa.String(80), nullable=True))
    op.add_column(
        "runs", sa.Column("lease_epoch", sa.BigInteger(), nullable=False, server_default="0")
    )
    op.add_column("runs", sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("runs", sa.Column("cancel_requested", sa.String(40), nullable=True))
    op.create_index("ix_runs_status_created", "runs", ["status", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_runs_status_created", table_name="runs")
    if op.get_bind().dialect.name == "sqlite":
        for column in ("cancel_requested", "lease_expires_at", "lease_epoch", "lease_owner"):
            op.execute(f"ALTER TABLE runs DROP COLUMN {column}")
    else:
        for column in ("cancel_requested", "lease_expires_at", "lease_epoch", "lease_owner"):
            op.drop_column("runs", column)
