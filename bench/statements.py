"""What one statement costs the calling process, by the way it is issued: SQLAlchemy
Core built on every call (as most repositories do), built once and reused, a driver
SQL string through SQLAlchemy (`exec_driver_sql`), and — the baseline — the same SQL
on the same asyncpg connection with no SQLAlchemy at all.

The statement is a typical saga write: an `UPDATE … WHERE id = … RETURNING` of one
row by primary key, inside one open transaction (no `BEGIN`/`COMMIT` per statement),
on a table of this run's own. CPU is the process's (user + system) per statement,
which includes asyncpg's protocol work and the socket calls; wall time includes the
round trip to PostgreSQL.

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

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from prost.kit.db import create_engine

TABLE = f"bench_statements_{uuid.uuid4().hex[:8]}"
ROWS = 50

metadata = sa.MetaData()
things = sa.Table(
    TABLE,
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("n", sa.Integer, nullable=False),
    sa.Column("at", sa.DateTime(timezone=True)),
)
SQL = f"UPDATE {TABLE} SET n = n + 1, at = now() WHERE id = $1 RETURNING n, at"  # the table is this run's own
PREBUILT = (
    sa.update(things)
    .where(things.c.id == sa.bindparam("i"))
    .values(n=things.c.n + 1, at=sa.func.now())
    .returning(things.c.n, things.c.at)
)


async def built_each_call(conn: AsyncConnection, row: uuid.UUID) -> Any:
    statement = (
        sa.update(things)
        .where(things.c.id == row)
        .values(n=things.c.n + 1, at=sa.func.now())
        .returning(things.c.n, things.c.at)
    )
    return (await conn.execute(statement)).one()


async def built_once(conn: AsyncConnection, row: uuid.UUID) -> Any:
    return (await conn.execute(PREBUILT, {"i": row})).one()


async def driver_sql(conn: AsyncConnection, row: uuid.UUID) -> Any:
    return (await conn.exec_driver_sql(SQL, (row,))).one()


async def measure(
    conn: AsyncConnection, ids: list[uuid.UUID], n: int, way: Callable[[AsyncConnection, uuid.UUID], Awaitable[Any]]
) -> dict[str, float]:
    for k in range(200):  # warm: statement caches, prepared statements
        await way(conn, ids[k % len(ids)])
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for k in range(n):
        await way(conn, ids[k % len(ids)])
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return {"cpu_us": round(cpu / n * 1e6, 1), "wall_us": round(wall / n * 1e6, 1)}


async def run(url: str, n: int) -> dict[str, Any]:
    engine = create_engine(url, pool_size=1, max_overflow=0)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
            ids = [uuid.uuid4() for _ in range(ROWS)]
            await conn.execute(sa.insert(things), [{"id": i, "n": 0} for i in ids])
        results: dict[str, dict[str, float]] = {}
        async with engine.begin() as conn:
            raw = (await conn.get_raw_connection()).driver_connection
            assert raw is not None

            async def asyncpg_only(_conn: AsyncConnection, row: uuid.UUID) -> Any:
                return await raw.fetchrow(SQL, row)

            await conn.execute(sa.text("SELECT 1"))  # the transaction is open before the raw calls
            ways = {
                "asyncpg_only": asyncpg_only,
                "sqlalchemy_built_each_call": built_each_call,
                "sqlalchemy_built_once": built_once,
                "sqlalchemy_driver_sql": driver_sql,
            }
            for name, way in ways.items():
                results[name] = await measure(conn, ids, n, way)
                print(f"{name}: {results[name]}", file=sys.stderr)
        base = results["asyncpg_only"]["cpu_us"]
        return {
            "bench": "statements",
            "cpus": os.cpu_count(),
            "statements_each": n,
            "per_statement": results,
            "cpu_ratio_to_asyncpg": {k: round(v["cpu_us"] / base, 2) for k, v in results.items()},
        }
    finally:
        async with engine.begin() as conn:
            await conn.run_sync(metadata.drop_all)
        await engine.dispose()


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
