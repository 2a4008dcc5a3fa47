"""idempotency keys

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07

`idempotency_keys` (SPEC v2.3) holds, per caller and `Idempotency-Key`, the
SHA-256 of the request (method, path, body; never the body itself) and, once the
first request has answered, its status and body, for `IDEMPOTENCY_TTL_S`. The
primary key (tenant, caller, key) is the arbiter between concurrent requests and
replicas: the first to insert its row runs the request, the others find the row.
`caller` is "" for an API key and the token id for a session token. `session_id`
(no foreign key) lets a purge of the session take the answers that describe it;
`expires_at` is indexed for the purge of expired keys.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "idempotency_keys",
        sa.Column("tenant", sa.String(length=200), nullable=False),
        sa.Column("caller", sa.String(length=40), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("request_sha256", sa.String(length=64), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("content_type", sa.String(length=200), nullable=True),
        sa.Column("body", sa.LargeBinary(), nullable=True),
        sa.Column("session_id", sa.String(length=40), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant", "caller", "key"),
    )
    op.create_index(op.f("ix_idempotency_keys_session_id"), "idempotency_keys", ["session_id"])
    op.create_index(op.f("ix_idempotency_keys_expires_at"), "idempotency_keys", ["expires_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_idempotency_keys_expires_at"), table_name="idempotency_keys")
    op.drop_index(op.f("ix_idempotency_keys_session_id"), table_name="idempotency_keys")
    op.drop_table("idempotency_keys")
