"""`kit.db`'s unit of work: `transaction` (ours, over asyncpg, shared by `Sql` and Core
statements) and `autocommit` (each statement a transaction of its own)."""

from __future__ import annotations

import asyncio
import functools
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager

import asyncpg
import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from prost.kit import db
from prost.kit.db import Session, Sql, create_engine
from prost.kit.http import create_service_app


@pytest.fixture
async def table(engine: AsyncEngine) -> AsyncIterator[str]:
    name = f"uow_{uuid.uuid4().hex[:8]}"
    async with engine.begin() as conn:
        await conn.execute(sa.text(f"CREATE TABLE {name} (n int PRIMARY KEY)"))
    yield name
    async with engine.begin() as conn:
        await conn.execute(sa.text(f"DROP TABLE {name}"))


@pytest.fixture
async def one_connection(database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine whose pool holds exactly one connection: what a block leaves behind,
    the next block gets."""
    engine = create_engine(database_url, pool_size=1, max_overflow=0)
    yield engine
    await engine.dispose()


async def count(engine: AsyncEngine, table: str) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(sa.text(f"SELECT count(*) FROM {table}")) or 0)


async def cancel_midway(work: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run `work`, cancel it a moment after it set its event (inside a statement), and
    check that it ended with the cancellation, not with some error of the clean-up."""
    started = asyncio.Event()
    task = asyncio.create_task(work(started))
    await started.wait()
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def transaction_times(session: Session) -> tuple[object, object]:
    """`now()` twice, a moment apart: the same value inside one transaction."""
    first = await session.fetchval(Sql("SELECT now()"))
    await asyncio.sleep(0.01)
    return first, await session.scalar(sa.text("SELECT now()"))


async def test_sql_and_core_statements_commit_together(engine: AsyncEngine, table: str) -> None:
    async with db.transaction(engine) as session:
        await session.run(Sql(f"INSERT INTO {table} VALUES (:n)"), n=1)
        await session.execute(sa.text(f"INSERT INTO {table} VALUES (:n)"), {"n": 2})
        assert await count(engine, table) == 0  # not before the commit
        first, second = await transaction_times(session)
        assert first == second  # one transaction, whichever way a statement went
    assert await count(engine, table) == 2


async def test_an_error_rolls_back_both_kinds_of_statement(engine: AsyncEngine, table: str) -> None:
    async def change_then_fail() -> None:
        async with db.transaction(engine) as session:
            await session.run(Sql(f"INSERT INTO {table} VALUES (:n)"), n=1)
            await session.execute(sa.text(f"INSERT INTO {table} VALUES (:n)"), {"n": 2})
            raise ValueError("changed my mind")

    with pytest.raises(ValueError, match="changed my mind"):
        await change_then_fail()
    assert await count(engine, table) == 0


async def test_a_cancelled_block_is_cancelled_and_its_connection_comes_back_clean(
    one_connection: AsyncEngine, table: str
) -> None:
    async def slow(started: asyncio.Event) -> None:
        async with db.transaction(one_connection) as session:
            await session.run(Sql(f"INSERT INTO {table} VALUES (:n)"), n=1)
            started.set()
            await session.fetchval(Sql("SELECT pg_sleep(30)"))

    await cancel_midway(slow)
    assert await count(one_connection, table) == 0
    async with db.transaction(one_connection) as session:  # the pool's one connection again
        first, second = await transaction_times(session)
        assert first == second


@pytest.mark.parametrize("way", [db.transaction, db.autocommit], ids=["transaction", "autocommit"])
async def test_a_failure_on_a_dead_connection_raises_the_first_error_and_the_pool_heals(
    one_connection: AsyncEngine, table: str, way: Callable[[AsyncEngine], AbstractAsyncContextManager[Session]]
) -> None:
    """A block that fails after its connection died raises its own error, not the
    rollback's (which would hide it, or turn a cancellation into a crash), and the dead
    connection is not given back to the pool."""

    async def fail_on_a_dead_connection() -> None:
        async with way(one_connection) as session:
            session.driver.terminate()
            raise ValueError("the real problem")

    with pytest.raises(ValueError, match="the real problem"):
        await fail_on_a_dead_connection()
    async with db.transaction(one_connection) as session:
        await session.run(Sql(f"INSERT INTO {table} VALUES (:n)"), n=7)
    assert await count(one_connection, table) == 1


async def test_each_autocommit_statement_commits_by_itself(engine: AsyncEngine, table: str) -> None:
    async with db.autocommit(engine) as session:
        await session.run(Sql(f"INSERT INTO {table} VALUES (:n)"), n=1)
        assert await count(engine, table) == 1  # seen at once: no transaction block is open
        with pytest.raises(sa.exc.IntegrityError):
            await session.execute(sa.text(f"INSERT INTO {table} VALUES (1)"))
        first, second = await transaction_times(session)
        assert first != second  # two statements, two transactions
    assert await count(engine, table) == 1


async def test_the_connection_returns_to_transactions_after_autocommit(one_connection: AsyncEngine) -> None:
    async with db.autocommit(one_connection) as session:
        await session.scalar(sa.text("SELECT 1"))  # switches the Core connection to AUTOCOMMIT
    async with one_connection.connect() as conn:  # the same pooled connection, SQLAlchemy's own way
        first = await conn.scalar(sa.text("SELECT now()"))
        await asyncio.sleep(0.01)
        assert await conn.scalar(sa.text("SELECT now()")) == first


async def test_after_commit_runs_once_the_transaction_committed_and_never_after_a_rollback(
    engine: AsyncEngine, table: str
) -> None:
    seen: list[tuple[str, int]] = []
    async with db.transaction(engine) as session:
        await session.run(Sql(f"INSERT INTO {table} VALUES (:n)"), n=1)
        session.after_commit(lambda: seen.append(("first", len(seen))))
        session.after_commit(lambda: seen.append(("second", len(seen))))
        assert seen == []  # not while the transaction is open
    assert seen == [("first", 0), ("second", 1)]  # both, in the order they were asked for

    rolled_back: list[str] = []

    async def change(n: int, *, fail: bool) -> None:
        async with db.transaction(engine) as session:
            session.after_commit(lambda: rolled_back.append(f"called for {n}"))
            await session.run(Sql(f"INSERT INTO {table} VALUES (:n)"), n=n)
            if fail:
                raise RuntimeError("the change failed")

    with pytest.raises(RuntimeError):
        await change(2, fail=True)
    with pytest.raises(asyncpg.UniqueViolationError):
        await change(1, fail=False)  # a duplicate: the commit never comes
    assert rolled_back == []
    assert await count(engine, table) == 1


async def test_after_commit_outside_a_transaction_runs_at_once(engine: AsyncEngine, table: str) -> None:
    """Under `autocommit` each statement already committed when it returned."""
    seen: list[int] = []
    async with db.autocommit(engine) as session:
        await session.run(Sql(f"INSERT INTO {table} VALUES (:n)"), n=1)
        session.after_commit(lambda: seen.append(1))
        assert seen == [1]
    assert session.engine is engine


# -- the units of work's own connections ------------------------------------------------

BACKEND = Sql("SELECT pg_backend_pid()")


async def backend_of(engine: AsyncEngine) -> int:
    async with db.transaction(engine) as session:
        return int(await session.fetchval(BACKEND))


async def test_units_of_work_reuse_one_connection_and_leave_the_pool_to_direct_use(
    one_connection: AsyncEngine, table: str
) -> None:
    """One unit after another runs on the same backend, and the engine's own pool (one
    connection, no overflow) still serves direct use in between at once: the kept
    connection is no longer the pool's."""
    first = await backend_of(one_connection)
    async with asyncio.timeout(5):
        assert await count(one_connection, table) == 0  # the pool's slot is free
    assert await backend_of(one_connection) == first


async def test_a_core_statement_that_failed_leaves_the_next_unit_clean(one_connection: AsyncEngine) -> None:
    with pytest.raises(sa.exc.ProgrammingError):
        async with db.autocommit(one_connection) as session:
            await session.execute(sa.text("SELECT * FROM no_such_table_here"))
    async with db.transaction(one_connection) as session:
        assert await session.scalar(sa.text("SELECT 41 + 1")) == 42


async def test_at_the_limit_a_unit_waits_for_a_connection_given_back(one_connection: AsyncEngine) -> None:
    inside = asyncio.Event()
    release = asyncio.Event()

    async def holder() -> int:
        async with db.transaction(one_connection) as session:
            inside.set()
            await release.wait()
            return int(await session.fetchval(BACKEND))

    held = asyncio.create_task(holder())
    await inside.wait()
    waiting = asyncio.create_task(backend_of(one_connection))
    await asyncio.sleep(0.1)
    assert not waiting.done()  # the limit is one connection
    release.set()
    assert await waiting == await held  # handed over, not a second connection


async def test_at_the_limit_a_unit_that_waits_too_long_gets_the_pools_timeout(database_url: str) -> None:
    engine = create_engine(database_url, pool_size=1, max_overflow=0, pool_timeout=0.2)
    try:
        async with db.transaction(engine):
            with pytest.raises(sa.exc.TimeoutError):
                await backend_of(engine)
        await backend_of(engine)  # and the connection is there again afterwards
    finally:
        await engine.dispose()


async def test_dispose_closes_the_kept_connections(database_url: str) -> None:
    engine = create_engine(database_url, pool_size=2, max_overflow=0)
    first = await backend_of(engine)
    await engine.dispose()
    probe = await asyncpg.connect(database_url)
    try:
        async with asyncio.timeout(10):
            while await probe.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", first):
                await asyncio.sleep(0.05)
    finally:
        await probe.close()
    assert await backend_of(engine) != first  # a disposed engine opens afresh
    await engine.dispose()


async def test_at_the_limit_a_unit_waiting_opens_a_new_connection_when_one_breaks(database_url: str) -> None:
    engine = create_engine(database_url, pool_size=1, max_overflow=0, pool_timeout=60)
    try:
        inside = asyncio.Event()

        pids: list[int] = []

        async def breaks() -> None:
            async with db.transaction(engine) as session:
                pids.append(int(await session.fetchval(BACKEND)))
                inside.set()
                await asyncio.sleep(0.1)
                session.driver.terminate()  # its COMMIT then fails

        broken = asyncio.create_task(breaks())
        await inside.wait()
        async with asyncio.timeout(5):  # not the pool's 60 s
            fresh = await backend_of(engine)
        with pytest.raises(asyncpg.InterfaceError):
            await broken
        assert fresh != pids[0]
    finally:
        await engine.dispose()


async def test_a_kept_connection_older_than_the_recycle_age_is_opened_afresh(database_url: str) -> None:
    engine = create_engine(database_url, pool_size=1, max_overflow=0, recycle_seconds=0.5)
    try:
        first = await backend_of(engine)
        assert await backend_of(engine) == first  # young: kept
        await asyncio.sleep(0.6)
        second = await backend_of(engine)
        assert second != first
        assert await backend_of(engine) == second
    finally:
        await engine.dispose()


@pytest.mark.parametrize("way", [db.transaction, db.autocommit], ids=["transaction", "autocommit"])
async def test_after_a_core_statement_cancelled_midway_both_ways_speak_over_one_connection(
    one_connection: AsyncEngine, table: str, way: Callable[[AsyncEngine], AbstractAsyncContextManager[Session]]
) -> None:
    """SQLAlchemy gives up a connection whose Core statement was cancelled, and would
    take the next Core statement to a fresh connection of the engine's pool. A unit of
    work's connection is then closed, never kept: the next unit's `Sql` and Core
    statements run on one connection, and the pool's own is left working."""
    assert await count(one_connection, table) == 0  # the pool now holds an idle connection

    async def slow(started: asyncio.Event) -> None:
        async with way(one_connection) as session:
            started.set()
            await session.execute(sa.text("SELECT pg_sleep(30)"))

    await cancel_midway(slow)
    async with db.transaction(one_connection) as session:
        assert await session.fetchval(BACKEND) == await session.scalar(sa.text("SELECT pg_backend_pid()"))
    assert await count(one_connection, table) == 0


async def test_ready_says_whether_the_database_answers(database_url: str) -> None:
    """API.md: `GET /ready` is 200 when the database answers, else 503; the check is
    `db.is_ready`, through the units of work's own connections."""
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    up = create_engine(database_url, pool_size=1, max_overflow=0)
    away = create_engine(f"postgresql://postgres@127.0.0.1:{port}/postgres", pool_size=1, max_overflow=0)
    try:
        for engine, status, state in ((up, 200, "ok"), (away, 503, "down")):
            app = create_service_app("test", ready_checks={"database": functools.partial(db.is_ready, engine)})
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
                r = await client.get("/ready")
            assert (r.status_code, r.json()["checks"]) == (status, {"database": state})
    finally:
        await up.dispose()
        await away.dispose()
