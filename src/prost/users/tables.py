"""The users schema. Only the users service touches these tables."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from prost.kit.db import schema_metadata

metadata = schema_metadata("users")

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("email", sa.String(320), nullable=False),
    sa.Column("username", sa.String(32), nullable=False),
    sa.Column("password_hash", sa.String(100), nullable=False),
    sa.Column("role", sa.String(20), nullable=False, server_default="customer"),
    # Raised on every password or email change; tokens carry it as `ver`.
    sa.Column("credentials_version", sa.Integer, nullable=False, server_default="0"),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.CheckConstraint("role IN ('customer', 'admin')", name="role"),
    sa.Index("uq_users_email_lower", sa.func.lower(sa.column("email")), unique=True),
    sa.Index("uq_users_username_lower", sa.func.lower(sa.column("username")), unique=True),
    sa.Index(None, "role"),
    sa.Index(None, "created_at"),
)

# Failed (and in-flight) logins, one row each, per account and per client address: a
# sliding window every replica sees. Rows older than the window are purged.
login_attempts = sa.Table(
    "login_attempts",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("scope", sa.String(10), nullable=False),
    sa.Column("key", sa.String(320), nullable=False),
    sa.Column("attempted_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.CheckConstraint("scope IN ('account', 'address')", name="scope"),
    sa.Index(None, "scope", "key", "attempted_at"),
    sa.Index(None, "attempted_at"),
)

outbox = metadata.tables["users.outbox"]
idempotency_records = metadata.tables["users.idempotency_records"]
