"""Fixtures of the cart suite (helpers are in `cart_support`)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from cart_support import database_of_its_own
from sqlalchemy.ext.asyncio import AsyncEngine

from prost.kit.db import create_engine


@pytest.fixture(scope="module")
async def own_database(server_url: str) -> AsyncIterator[str]:
    """A migrated database for one test module alone: no running system's loops,
    sweepers or relays touch its rows."""
    async with database_of_its_own(server_url) as url:
        yield url


@pytest.fixture(scope="module")
async def own_engine(own_database: str) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(own_database, pool_size=2)
    yield eng
    await eng.dispose()
