"""Database plumbing: engine factory, per-schema MetaData, the tables every schema has.

Services use SQLAlchemy Core on asyncpg (the ORM costs 2.5-3.6x the CPU per
statement here). A unit of work is an `AsyncConnection` inside `engine.begin()`;
it is what handlers and `outbox.add_to_outbox` call the *session*. Work that is one
statement takes `autocommit(engine)` instead: the statement is its own transaction.
Nothing connects at import time: engines are made by each service's bootstrap.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from functools import cache

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

Session = AsyncConnection
"""The unit of work: one connection inside one transaction."""

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def async_url(url: str) -> str:
    """Accept `postgresql://` / `postgres://` URLs and point them at asyncpg."""
    for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    raise ValueError("PROST_DATABASE_URL must be a postgresql:// URL")


def create_engine(url: str, *, pool_size: int = 5, max_overflow: int = 15, pool_timeout: float = 10.0) -> AsyncEngine:
    return create_async_engine(
        async_url(url),
        pool_size=pool_size,
        max_overflow=max_overflow,
        # No pre-ping: it costs a round trip per checkout; a dead connection fails once
        # (503 to the client) and is replaced.
        pool_recycle=1800,
        pool_timeout=pool_timeout,
        # asyncpg prepares statements itself; keep SQLAlchemy's cache on for Core.
        connect_args={"server_settings": {"application_name": "prost"}},
    )


@contextlib.asynccontextmanager
async def autocommit(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A pooled connection outside any transaction block: each statement commits by
    itself. For work that is exactly one statement (a lookup, one insert): one round
    trip instead of three (`BEGIN`, the statement, `COMMIT`/`ROLLBACK`). Two statements
    on it are two transactions, so anything more goes in `engine.begin()`."""
    async with engine.connect() as conn:
        yield await conn.execution_options(isolation_level="AUTOCOMMIT")


_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def quoted_schema(schema: str) -> str:
    """`"<schema>"` for SQL text built once per schema (the outbox's and inbox's hot
    statements); anything that is not a plain service schema name is refused."""
    if not _SCHEMA_NAME.match(schema):
        raise ValueError(f"not a service schema name: {schema!r}")
    return f'"{schema}"'


def schema_metadata(schema: str) -> sa.MetaData:
    """A MetaData bound to one service schema, with `outbox` and `idempotency_records`."""
    metadata = sa.MetaData(schema=schema, naming_convention=NAMING_CONVENTION)
    outbox_table(metadata)
    idempotency_table(metadata)
    return metadata


@cache
def _shared_tables(schema: str) -> sa.MetaData:
    return schema_metadata(schema)


def outbox_of(schema: str) -> sa.Table:
    """The `outbox` table of one service schema (built once per schema)."""
    return _shared_tables(schema).tables[f"{schema}.outbox"]


def idempotency_of(schema: str) -> sa.Table:
    """The `idempotency_records` table of one service schema (built once per schema)."""
    return _shared_tables(schema).tables[f"{schema}.idempotency_records"]


def outbox_table(metadata: sa.MetaData) -> sa.Table:
    """Events written in the same transaction as the change they announce."""
    return sa.Table(
        "outbox",
        metadata,
        sa.Column("seq", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("event_id", pg.UUID(as_uuid=True), nullable=False, unique=True),
        sa.Column("event_type", sa.String(100), nullable=False),
        sa.Column("envelope", pg.JSONB, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("sent_at", sa.DateTime(timezone=True)),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_error", sa.Text),
        sa.Index("ix_outbox_unsent", "seq", postgresql_where=sa.text("sent_at IS NULL")),
        sa.Index(None, "sent_at"),
    )


def idempotency_table(metadata: sa.MetaData) -> sa.Table:
    """What this service already did: consumed events and HTTP Idempotency-Key requests.

    A consumed event is `(kind='event', event_id, service_name)`; an HTTP request is
    `(kind='http', key, user_id, fingerprint, response)`. Both are unique rows written
    in the same transaction as the effect they guard.
    """
    return sa.Table(
        "idempotency_records",
        metadata,
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("event_id", pg.UUID(as_uuid=True)),
        sa.Column("service_name", sa.String(50)),
        sa.Column("key", sa.String(255)),
        sa.Column("user_id", pg.UUID(as_uuid=True)),
        sa.Column("scope", sa.String(100)),
        sa.Column("fingerprint", sa.String(64)),
        sa.Column("status_code", sa.Integer),
        sa.Column("response", pg.JSONB),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("completed_at", sa.DateTime(timezone=True)),
        sa.UniqueConstraint("event_id", "service_name"),
        sa.UniqueConstraint("scope", "user_id", "key"),
        sa.CheckConstraint("kind IN ('event', 'http')", name="kind"),
        sa.Index(None, "created_at"),
    )
