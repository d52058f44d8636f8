"""users: login_attempts (failed logins per account and per address, sliding window)

Revision ID: 8e8a760ac7b6
Revises: 052df00f48b1
Create Date: 2026-11-25 12:19:37.433920
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = "8e8a760ac7b6"
down_revision: str | None = "052df00f48b1"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "login_attempts",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("scope", sa.String(length=10), nullable=False),
        sa.Column("key", sa.String(length=320), nullable=False),
        sa.Column("attempted_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("scope IN ('account', 'address')", name=op.f("ck_login_attempts_scope")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_login_attempts")),
        schema="users",
    )
    op.create_index(
        op.f("ix_login_attempts_attempted_at"), "login_attempts", ["attempted_at"], unique=False, schema="users"
    )
    op.create_index(
        op.f("ix_login_attempts_scope_key_attempted_at"),
        "login_attempts",
        ["scope", "key", "attempted_at"],
        unique=False,
        schema="users",
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_login_attempts_scope_key_attempted_at"), table_name="login_attempts", schema="users")
    op.drop_index(op.f("ix_login_attempts_attempted_at"), table_name="login_attempts", schema="users")
    op.drop_table("login_attempts", schema="users")
