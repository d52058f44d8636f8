"""Fixtures for the messaging suite (the parts they use are in `messaging_support`)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from prost.kit.db import create_engine

from messaging_support import EFFECTS, SCHEMAS, Harness, make_memory, rabbit_maker


@pytest.fixture(scope="session")
async def schemas(engine: AsyncEngine) -> tuple[str, ...]:
    async with engine.begin() as conn:
        for schema in SCHEMAS:
            await conn.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
            await conn.run_sync(EFFECTS[schema].metadata.create_all)
    return SCHEMAS


@pytest.fixture
async def elsewhere(database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine of its own on the test database: a writer in another process, as far as
    the relays of this one can tell (they are told of their own engine's commits only)."""
    other = create_engine(database_url, pool_size=2)
    yield other
    await other.dispose()


@pytest.fixture(params=["memory", pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)])
async def harness(request: pytest.FixtureRequest, schemas: tuple[str, ...]) -> AsyncIterator[Harness]:
    if request.param == "memory":
        h = Harness("memory", make_memory)
    else:
        url: str = request.getfixturevalue("broker_url")
        h = Harness("rabbitmq", rabbit_maker(url))
    try:
        yield h
    finally:
        for bus in reversed(h.buses):
            await bus.close()
