"""Catalog throughput: holds placed per second (one hot product, and spread over
1,000 products) and product listings per second with their p99, against a running
catalog service — with the baselines measured in the same run.

Starts `prost serve catalog` as its own process on a fresh database (the machine's
PostgreSQL, or PROST_BENCH_DATABASE_URL) and RabbitMQ vhost, seeded with 10,000
products. Load comes from wrk (C, one thread) so the Python server keeps its core:

- holds: `PUT /internal/catalog/holds/{new cart}/{product}` `{quantity: 1}` with a
  cart service token, 50 connections; every request is a new cart's hold, so each
  one locks the product row, moves its counter and inserts a reservation;
- listings: `GET /api/v1/products?page_size=20` (by name), and a search
  `?q=kettle&sort=-price`, 50 connections;
- baselines: `GET /health` of the same process (the HTTP stack alone), and pgbench
  running a bare one-row `UPDATE` with 50 clients on one hot row and on 1,000 rows of
  a scratch table in the same database (what PostgreSQL alone allows).

Afterwards it checks the books: every product's `reserved` equals its active holds.
Needs wrk and pgbench. Last line: a JSON summary.

    .venv/bin/python bench/catalog.py [--seconds 10] [--connections 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).parent))
from prost.catalog.tables import products
from prost.kit.auth import TokenAuthority
from prost.kit.db import create_engine

from _procs import Proc, free_port, fresh_database, fresh_vhost, wrk

SECRET = "bench-secret-" + "c" * 40
PRODUCTS = 10_000
SPREAD = 1_000

SEED = """
WITH words AS (
  SELECT ARRAY['red','blue','green','steel','oak','linen','wool','brass','glass','cotton','black','white','small',
               'large','heavy','light','classic','modern','rustic','compact','deluxe','simple','smart','quiet',
               'solar','folding','electric','manual','ceramic','copper','silver','golden','vintage','urban',
               'garden','kitchen','travel'] AS adj,
         ARRAY['hammer','kettle','lamp','chair','table','shirt','scarf','mug','knife','spoon','clock','radio',
               'bottle','basket','blanket','pillow','bucket','ladder','drill','saw','brush','bowl','plate','vase',
               'candle','mirror','rug','shelf','stool','bench','jacket','boots','gloves','hat','bag','wallet',
               'belt','watch','pen','notebook','desk','fan','heater','toaster','blender','grater','peeler',
               'whisk','ladle','tongs','skillet','wok','teapot'] AS noun)
INSERT INTO catalog.products (id, sku, name, description, price, stock, active, created_at, updated_at)
SELECT gen_random_uuid(), 'SKU-' || lpad(i::text, 6, '0'),
       initcap(w.adj[1 + i % 37]) || ' ' || w.noun[1 + (i / 37) % 53] || ' ' || (i % 97),
       'A ' || w.adj[1 + (i * 7) % 37] || ' ' || w.noun[1 + (i * 11) % 53] || ' made of '
         || w.adj[1 + (i * 13) % 37] || ' materials, model ' || i,
       ((i * 7919) % 100000) / 100.0, 1000000, true, now() - make_interval(mins => i), now()
FROM generate_series(1, :rows) AS i, words AS w
"""

HOLDS_LUA = """
local ids = {%(ids)s}
local hex = "0123456789abcdef"
math.randomseed(%(seed)d)
local function uuid()
  local t = {}
  for i = 1, 32 do local r = math.random(1, 16); t[i] = hex:sub(r, r) end
  local s = table.concat(t)
  return s:sub(1, 8) .. "-" .. s:sub(9, 12) .. "-4" .. s:sub(14, 16) .. "-a" .. s:sub(18, 20) .. "-" .. s:sub(21, 32)
end
wrk.method = "PUT"
wrk.body = '{"quantity": 1}'
wrk.headers["Content-Type"] = "application/json"
request = function()
  return wrk.format(nil, "/internal/catalog/holds/" .. uuid() .. "/" .. ids[math.random(1, #ids)])
end
done = function(summary, latency, requests)
  io.write(string.format("JSON %%d %%d\\n", latency:percentile(50), latency:percentile(99)))
end
"""


def pgbench(db: str, sql: str, *, seconds: int, clients: int) -> float:
    """Transactions per second of a one-statement pgbench script."""
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as f:
        f.write(sql)
    url = sa.make_url(db)
    args = ["pgbench", "-n", "-M", "prepared", "-c", str(clients), "-j", "1", "-T", str(seconds), "-f", f.name]
    args += [
        "-h",
        url.host or "127.0.0.1",
        "-p",
        str(url.port or 5432),
        "-U",
        url.username or "postgres",
        url.database or "",
    ]
    done = subprocess.run(args, check=False, capture_output=True, text=True)
    Path(f.name).unlink()
    if done.returncode != 0:
        raise RuntimeError(f"pgbench failed: {done.stderr.strip()[-500:]}")
    return float(re.search(r"tps = ([\d.]+)", done.stdout).group(1))  # type: ignore[union-attr]


async def seed(db: str) -> tuple[str, list[str]]:
    """10,000 active products with plenty of stock; returns the hot one and 1,000 others."""
    engine = create_engine(db, pool_size=1, max_overflow=0)
    search_index = next(ix for ix in products.indexes if ix.name == "ix_products_active_search")
    try:
        async with engine.begin() as conn:
            await conn.run_sync(lambda c: search_index.drop(c))
            await conn.execute(sa.text(SEED), {"rows": PRODUCTS})
            await conn.run_sync(lambda c: search_index.create(c))
            ids = [
                str(i) for i in (await conn.execute(sa.text("SELECT id FROM catalog.products ORDER BY sku"))).scalars()
            ]
            await conn.execute(sa.text("CREATE TABLE public.bench_rows (id int PRIMARY KEY, n bigint NOT NULL)"))
            await conn.execute(
                sa.text("INSERT INTO public.bench_rows SELECT i, 0 FROM generate_series(1, :n) AS i"), {"n": SPREAD}
            )
        async with engine.connect() as conn:
            auto = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await auto.execute(sa.text("VACUUM ANALYZE"))
    finally:
        await engine.dispose()
    return ids[0], ids[1 : SPREAD + 1]


async def books_balance(db: str) -> dict[str, Any]:
    engine = create_engine(db, pool_size=1, max_overflow=0)
    try:
        async with engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.text(
                        """
                        SELECT count(*) FILTER (WHERE p.reserved <> coalesce(r.units, 0)) AS unbalanced,
                               coalesce(sum(r.holds), 0) AS holds
                        FROM catalog.products p
                        LEFT JOIN (SELECT product_id, sum(quantity) AS units, count(*) AS holds
                                   FROM catalog.inventory_reservations WHERE status = 'active' GROUP BY product_id) r
                          ON r.product_id = p.id
                        """
                    )
                )
            ).one()
    finally:
        await engine.dispose()
    return {"unbalanced_products": int(row.unbalanced), "holds": int(row.holds)}


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=50)
    args = parser.parse_args()
    for tool in ("wrk", "pgbench"):
        if shutil.which(tool) is None:
            raise SystemExit(f"this benchmark needs {tool}")
    secs, conns = args.seconds, args.connections
    logdir = Path(tempfile.mkdtemp(prefix="prost-bench-"))
    auth = TokenAuthority(secret=SECRET)
    results: dict[str, dict[str, float]] = {}
    async with fresh_database() as db:
        hot, spread = await seed(db)
        with fresh_vhost() as broker:
            port = free_port()
            env = {"PROST_DATABASE_URL": db, "PROST_BROKER_URL": broker, "PROST_JWT_SECRET": SECRET}
            catalog = Proc(["serve", "catalog"], env, port, logdir / "catalog.log")
            try:
                await catalog.ready()
                cart = {"Authorization": f"Bearer {auth.issue_service_token('cart', ttl_seconds=3600)}"}
                hot_lua = HOLDS_LUA % {"ids": f'"{hot}"', "seed": 1}
                spread_lua = HOLDS_LUA % {"ids": ",".join(f'"{p}"' for p in spread), "seed": 2}
                wrk(catalog.url + "/health", seconds=2, connections=conns)  # warm-up
                wrk(catalog.url, script=spread_lua, seconds=2, connections=conns, headers=cart)
                results["health"] = wrk(catalog.url + "/health", seconds=secs, connections=conns)
                results["hold_hot"] = wrk(catalog.url, script=hot_lua, seconds=secs, connections=conns, headers=cart)
                results["hold_spread"] = wrk(
                    catalog.url, script=spread_lua, seconds=secs, connections=conns, headers=cart
                )
                results["list"] = wrk(catalog.url + "/api/v1/products?page_size=20", seconds=secs, connections=conns)
                results["search"] = wrk(
                    catalog.url + "/api/v1/products?q=kettle&sort=-price&page_size=20", seconds=secs, connections=conns
                )
            finally:
                catalog.stop()
        update_hot = pgbench(db, "UPDATE public.bench_rows SET n = n + 1 WHERE id = 1;\n", seconds=secs, clients=conns)
        update_spread = pgbench(
            db,
            f"\\set id random(1, {SPREAD})\nUPDATE public.bench_rows SET n = n + 1 WHERE id = :id;\n",
            seconds=secs,
            clients=conns,
        )
        books = await books_balance(db)
    for name, run in results.items():
        print(
            f"{name:12} {run['rps']:8.0f} req/s  p50 {run.get('p50_ms', 0):7.2f} ms  p99 {run.get('p99_ms', 0):7.2f} ms"
        )
    print(f"{'pgbench hot':12} {update_hot:8.0f} tps (one-row UPDATE, one hot row)")
    print(f"{'pgbench 1k':12} {update_spread:8.0f} tps (one-row UPDATE over 1,000 rows)")
    print(f"books: {books}")
    summary = {
        "benchmark": "catalog",
        "connections": conns,
        "seconds": secs,
        "products": PRODUCTS,
        "holds_hot_rps": round(results["hold_hot"]["rps"]),
        "holds_hot_p99_ms": round(results["hold_hot"].get("p99_ms", 0), 2),
        "holds_spread_rps": round(results["hold_spread"]["rps"]),
        "holds_spread_p99_ms": round(results["hold_spread"].get("p99_ms", 0), 2),
        "list_rps": round(results["list"]["rps"]),
        "list_p99_ms": round(results["list"].get("p99_ms", 0), 2),
        "search_rps": round(results["search"]["rps"]),
        "search_p99_ms": round(results["search"].get("p99_ms", 0), 2),
        "baseline_health_rps": round(results["health"]["rps"]),
        "baseline_update_hot_tps": round(update_hot),
        "baseline_update_spread_tps": round(update_spread),
        "errors": int(sum(r["non_2xx"] for r in results.values())),
        "unbalanced_products": books["unbalanced_products"],
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    asyncio.run(main())
