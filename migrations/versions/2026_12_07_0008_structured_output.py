"""structured output, and per-tenant request counters

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07

Structured output (SPEC v2.3): `runs.output_schema` is the JSON Schema a run's
answer must satisfy (from `output_schema` on create or on a follow-up run), and
`runs.output_json` the answer, parsed and validated, once the run completed.

Per-tenant limits (SPEC v2.3): `tenant_request_counts` holds one row per tenant,
the fixed one-second window of `TENANT_REQUESTS_PER_S` that all replicas count in
(an upsert per request, by the database's clock; only on Postgres: a SQLite
deployment is one process and counts in memory). A tenant's row is overwritten
when its window moves on, so the table never grows beyond the tenants.
`TENANT_MAX_ACTIVE_RUNS` needs no column: the claim counts the runs themselves.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON_TYPE = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.add_column("runs", sa.Column("output_schema", JSON_TYPE, nullable=True))
    op.add_column("runs", sa.Column("output_json", JSON_TYPE, nullable=True))
    op.create_table(
        "tenant_request_counts",
        sa.Column("tenant", sa.String(length=200), nullable=False),
        sa.Column("window_start", sa.BigInteger(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("tenant"),
    )


def downgrade() -> None:
    op.drop_table("tenant_request_counts")
    if op.get_bind().dialect.name == "sqlite":
        # In place (SQLite 3.35+), not batch mode: see 0002.
        op.execute("ALTER TABLE runs DROP COLUMN output_json")
        op.execute("ALTER TABLE runs DROP COLUMN output_schema")
    else:
        op.drop_column("runs", "output_json")
        op.drop_column("runs", "output_schema")
