"""session tokens, and who decided a safety check

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07

Session tokens (SPEC v2.2) let a browser read or control one session without an
API key. Only the SHA-256 of a token is stored; `revoked_at` is set by
`DELETE /v1/sessions/{sid}/tokens` (all of them) and by closing the session (the
control tokens). Lookups are by primary key (the token names its id), so a token
made on one replica works on every replica. `safety_checks.decided_by` records
an API key's tenant or "token:<token id>".
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "session_tokens",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("session_id", sa.String(length=40), nullable=False),
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("token_sha256", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["session_id"], ["sessions.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_session_tokens_session_id"), "session_tokens", ["session_id"])
    op.add_column("safety_checks", sa.Column("decided_by", sa.String(length=200), nullable=True))


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        # In place (SQLite 3.35+), not batch mode: see 0002.
        op.execute("ALTER TABLE safety_checks DROP COLUMN decided_by")
    else:
        op.drop_column("safety_checks", "decided_by")
    op.drop_index(op.f("ix_session_tokens_session_id"), table_name="session_tokens")
    op.drop_table("session_tokens")
