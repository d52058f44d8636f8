"""What the database work of a saga step costs the calling process, by the way it is
issued, in two measures:

1. One statement, inside one open transaction: SQLAlchemy Core built on every call,
   Core built once and reused, a driver SQL string through SQLAlchemy
   (`exec_driver_sql`), prost's `kit.db.Sql` on the session, and — the floor — the same
   SQL on the same asyncpg connection with nothing in between.
2. One unit of work (a pooled connection, `BEGIN`, three statements, `COMMIT`):
   SQLAlchemy's `engine.begin()` with Core built once (what prost did before its
   unit of work was its own), prost's `db.transaction()` with `Sql`, and a bare
   asyncpg pool (the floor): one unit at a time, then eight in flight at once, as a
   busy service runs them. One at a time, every round trip also pays a wake-up of
   the idle event loop, which hides much of what the pool around it costs.

The statement is a typical saga write: an `UPDATE … WHERE id = … RETURNING` of one
row by primary key, on a table of this run's own. CPU is the process's (user +
system), which includes asyncpg's protocol work and the socket calls; wall time
includes the round trips to PostgreSQL.

    .venv/bin/python bench/statements.py [--database-url URL] [--n 3000]

Last line: a JSON summary.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from prost.kit import db
from prost.kit.db import Session, Sql, create_engine

TABLE = f"bench_statements_{uuid.uuid4().hex[:8]}"
ROWS = 50
STATEMENTS_PER_UNIT = 3
IN_FLIGHT = 8

metadata = sa.MetaData()
things = sa.Table(
    TABLE,
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("n", sa.Integer, nullable=False),
    sa.Column("at", sa.DateTime(timezone=True)),
)
SQL = f"UPDATE {TABLE} SET n = n + 1, at = now() WHERE id = $1 RETURNING n, at"  # the table is this run's own
PROST_SQL = Sql(f"UPDATE {TABLE} SET n = n + 1, at = now() WHERE id = :i RETURNING n, at")
PREBUILT = (
    sa.update(things)
    .where(things.c.id == sa.bindparam("i"))
    .values(n=things.c.n + 1, at=sa.func.now())
    .returning(things.c.n, things.c.at)
)

Way = Callable[[uuid.UUID], Awaitable[Any]]


def statement_ways(session: Session, core: AsyncConnection) -> dict[str, Way]:
    async def asyncpg_only(row: uuid.UUID) -> Any:
        return await session.driver.fetchrow(SQL, row)

    async def prost_sql(row: uuid.UUID) -> Any:
        return await session.fetchrow(PROST_SQL, i=row)

    async def sqlalchemy_built_each_call(row: uuid.UUID) -> Any:
        statement = (
            sa.update(things)
            .where(things.c.id == row)
            .values(n=things.c.n + 1, at=sa.func.now())
            .returning(things.c.n, things.c.at)
        )
        return (await core.execute(statement)).one()

    async def sqlalchemy_built_once(row: uuid.UUID) -> Any:
        return (await core.execute(PREBUILT, {"i": row})).one()

    async def sqlalchemy_driver_sql(row: uuid.UUID) -> Any:
        return (await core.exec_driver_sql(SQL, (row,))).one()

    return {
        "asyncpg_only": asyncpg_only,
        "prost_sql": prost_sql,
        "sqlalchemy_built_each_call": sqlalchemy_built_each_call,
        "sqlalchemy_built_once": sqlalchemy_built_once,
        "sqlalchemy_driver_sql": sqlalchemy_driver_sql,
    }


def unit_of_work_ways(engine: AsyncEngine, pool: asyncpg.Pool) -> dict[str, Way]:
    async def sqlalchemy_engine_begin(row: uuid.UUID) -> Any:
        async with engine.begin() as conn:
            for _ in range(STATEMENTS_PER_UNIT):
                (await conn.execute(PREBUILT, {"i": row})).one()

    async def prost_transaction(row: uuid.UUID) -> Any:
        async with db.transaction(engine) as session:
            for _ in range(STATEMENTS_PER_UNIT):
                await session.fetchrow(PROST_SQL, i=row)

    async def asyncpg_pool(row: uuid.UUID) -> Any:
        async with pool.acquire() as conn, conn.transaction():
            for _ in range(STATEMENTS_PER_UNIT):
                await conn.fetchrow(SQL, row)

    return {
        "sqlalchemy_engine_begin": sqlalchemy_engine_begin,
        "prost_transaction": prost_transaction,
        "asyncpg_pool": asyncpg_pool,
    }


async def measure(ids: list[uuid.UUID], n: int, way: Way, *, workers: int = 1) -> dict[str, float]:
    """`n` calls by `workers` coroutines at once, each on rows of its own (no lock
    waits between them), after a warm-up (statement caches, prepared statements);
    CPU and wall time per call."""

    async def worker(w: int, calls: int) -> None:
        mine = ids[w::workers]
        for k in range(calls):
            await way(mine[k % len(mine)])

    await asyncio.gather(*(worker(w, 200 // workers) for w in range(workers)))
    calls = n // workers
    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker(w, calls) for w in range(workers)))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    total = calls * workers
    return {"cpu_us": round(cpu / total * 1e6, 1), "wall_us": round(wall / total * 1e6, 1)}


async def measure_all(
    ways: dict[str, Way], ids: list[uuid.UUID], n: int, title: str, *, workers: int = 1
) -> dict[str, dict[str, float]]:
    results = {}
    for name, way in ways.items():
        results[name] = await measure(ids, n, way, workers=workers)
        print(f"{title} {name}: {results[name]}", file=sys.stderr)
    return results


def ratios(results: dict[str, dict[str, float]], floor: str) -> dict[str, float]:
    base = results[floor]["cpu_us"]
    return {k: round(v["cpu_us"] / base, 2) for k, v in results.items()}


async def run(url: str, n: int) -> dict[str, Any]:
    engine = create_engine(url, pool_size=1, max_overflow=0)
    busy_engine = create_engine(url, pool_size=IN_FLIGHT, max_overflow=0)
    dsn = db.async_url(url).replace("postgresql+asyncpg://", "postgresql://")
    pool = await asyncpg.create_pool(dsn, min_size=1)
    busy_pool = await asyncpg.create_pool(dsn, min_size=IN_FLIGHT, max_size=IN_FLIGHT)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
            ids = [uuid.uuid4() for _ in range(ROWS)]
            await conn.execute(sa.insert(things), [{"id": i, "n": 0} for i in ids])
        async with db.transaction(engine) as session:
            statements = await measure_all(statement_ways(session, await session.core()), ids, n, "statement")
        units = await measure_all(unit_of_work_ways(engine, pool), ids, n // STATEMENTS_PER_UNIT, "unit of work")
        busy = await measure_all(
            unit_of_work_ways(busy_engine, busy_pool),
            ids,
            n // STATEMENTS_PER_UNIT,
            f"unit of work, {IN_FLIGHT} in flight",
            workers=IN_FLIGHT,
        )
        return {
            "bench": "statements",
            "cpus": os.cpu_count(),
            "statements_each": n,
            "per_statement": statements,
            "cpu_ratio_to_asyncpg": ratios(statements, "asyncpg_only"),
            "per_unit_of_work": units,
            "unit_cpu_ratio_to_asyncpg_pool": ratios(units, "asyncpg_pool"),
            "per_unit_of_work_in_flight": busy,
            "in_flight_unit_cpu_ratio_to_asyncpg_pool": ratios(busy, "asyncpg_pool"),
        }
    finally:
        async with engine.begin() as conn:
            await conn.run_sync(metadata.drop_all)
        await engine.dispose()
        await busy_engine.dispose()
        await pool.close()
        await busy_pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--database-url",
        default=os.environ.get("PROST_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
    )
    parser.add_argument("--n", type=int, default=3000, help="statements per way")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.database_url, args.n))))


if __name__ == "__main__":
    main()
