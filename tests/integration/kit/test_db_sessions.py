"""`kit.db.autocommit`: each statement is a transaction of its own, and the connection
goes back to the pool in the engine's usual mode."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from prost.kit.db import autocommit, create_engine


async def test_each_statement_commits_by_itself(engine: AsyncEngine) -> None:
    table = f"autocommit_{uuid.uuid4().hex[:8]}"
    async with engine.begin() as conn:
        await conn.execute(sa.text(f"CREATE TABLE {table} (n int PRIMARY KEY)"))
    try:
        async with autocommit(engine) as conn:
            await conn.execute(sa.text(f"INSERT INTO {table} VALUES (1)"))
            # Seen by another connection at once: no transaction block is open.
            async with engine.connect() as other:
                assert await other.scalar(sa.text(f"SELECT count(*) FROM {table}")) == 1
            with pytest.raises(sa.exc.IntegrityError):
                await conn.execute(sa.text(f"INSERT INTO {table} VALUES (1)"))
        async with engine.connect() as conn:
            assert await conn.scalar(sa.text(f"SELECT count(*) FROM {table}")) == 1
    finally:
        async with engine.begin() as conn:
            await conn.execute(sa.text(f"DROP TABLE {table}"))


async def transaction_times(conn: AsyncConnection) -> tuple[object, object]:
    """`now()` twice, a moment apart: the same value inside one transaction."""
    first = await conn.scalar(sa.text("SELECT now()"))
    await asyncio.sleep(0.01)
    return first, await conn.scalar(sa.text("SELECT now()"))


async def test_the_connection_returns_to_transactions_afterwards(database_url: str) -> None:
    one = create_engine(database_url, pool_size=1, max_overflow=0)
    try:
        async with autocommit(one) as conn:
            first, second = await transaction_times(conn)
            assert first != second  # two statements, two transactions
        async with one.connect() as conn:  # the same pooled connection
            first, second = await transaction_times(conn)
            assert first == second
    finally:
        await one.dispose()
