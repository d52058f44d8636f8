"""Every product-listing query is served by an index: the EXPLAIN of the very
statements the API runs (page and total), on a database of its own with 10,000
products over 50 categories, vacuumed and analysed as a live one would be."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from prost.catalog.repository import ProductQuery, list_statements
from prost.catalog.tables import products
from prost.kit.db import create_engine

ROWS = 10_000

SEED = """
WITH cats AS (SELECT array_agg(id ORDER BY slug) AS ids FROM catalog.categories),
     words AS (
       SELECT ARRAY['red','blue','green','steel','oak','linen','wool','brass','glass','cotton','black','white','small',
                    'large','heavy','light','classic','modern','rustic','compact','deluxe','simple','smart','quiet',
                    'solar','folding','electric','manual','ceramic','copper','silver','golden','vintage','urban',
                    'garden','kitchen','travel'] AS adj,
              ARRAY['hammer','kettle','lamp','chair','table','shirt','scarf','mug','knife','spoon','clock','radio',
                    'bottle','basket','blanket','pillow','bucket','ladder','drill','saw','brush','bowl','plate','vase',
                    'candle','mirror','rug','shelf','stool','bench','jacket','boots','gloves','hat','bag','wallet',
                    'belt','watch','pen','notebook','desk','fan','heater','toaster','blender','grater','peeler',
                    'whisk','ladle','tongs','skillet','wok','teapot'] AS noun)
INSERT INTO catalog.products (id, sku, name, description, price, stock, category_id, active, created_at, updated_at)
SELECT gen_random_uuid(),
       'SKU-' || lpad(i::text, 6, '0'),
       initcap(w.adj[1 + i % 37]) || ' ' || w.noun[1 + (i / 37) % 53] || ' ' || (i % 97),
       'A ' || w.adj[1 + (i * 7) % 37] || ' ' || w.noun[1 + (i * 11) % 53] || ' made of '
         || w.adj[1 + (i * 13) % 37] || ' materials, model ' || i,
       ((i * 7919) % 100000) / 100.0,
       i % 50,
       cats.ids[1 + i % 50],
       i % 10 <> 0,
       now() - make_interval(mins => i),
       now()
FROM generate_series(1, :rows) AS i, cats, words AS w
"""


@asynccontextmanager
async def seeded_catalog(url: str) -> AsyncIterator[tuple[AsyncEngine, uuid.UUID]]:
    """The database at `url` with 10,000 products (a tenth inactive), vacuumed and analysed;
    yields an engine on it and the id of one of its categories."""
    engine = create_engine(url, pool_size=2, max_overflow=0)
    search_index = next(ix for ix in products.indexes if ix.name == "ix_products_active_search")
    try:
        async with engine.begin() as conn:
            await conn.execute(
                sa.text(
                    "INSERT INTO catalog.categories (id, name, slug) "
                    "SELECT gen_random_uuid(), 'Category ' || c, 'category-' || lpad(c::text, 2, '0') "
                    "FROM generate_series(1, 50) AS c"
                )
            )
            # Bulk load as a restore would: the GIN index is built once afterwards
            # (same definition, from tables.py) rather than grown row by row.
            await conn.run_sync(lambda c: search_index.drop(c))
            await conn.execute(sa.text(SEED), {"rows": ROWS})
            await conn.run_sync(lambda c: search_index.create(c))
            category = await conn.scalar(sa.text("SELECT id FROM catalog.categories WHERE slug = 'category-07'"))
        async with engine.connect() as conn:
            auto = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await auto.execute(sa.text("VACUUM ANALYZE catalog.products"))
            await auto.execute(sa.text("VACUUM ANALYZE catalog.inventory_reservations"))
        yield engine, category
    finally:
        await engine.dispose()


QUERIES: dict[str, Callable[[uuid.UUID], ProductQuery]] = {
    "all, by name": lambda _: ProductQuery(),
    "all, by -name": lambda _: ProductQuery(sort="-name"),
    "all, by price": lambda _: ProductQuery(sort="price"),
    "all, by -price": lambda _: ProductQuery(sort="-price"),
    "all, by created_at": lambda _: ProductQuery(sort="created_at"),
    "all, by -created_at": lambda _: ProductQuery(sort="-created_at"),
    "all, page 40": lambda _: ProductQuery(page=40),
    "category, by name": lambda c: ProductQuery(category_id=c),
    "category, by price": lambda c: ProductQuery(category_id=c, sort="price"),
    "category, by -created_at": lambda c: ProductQuery(category_id=c, sort="-created_at"),
    "price range, by name": lambda _: ProductQuery(min_price=Decimal("10"), max_price=Decimal("20")),
    "price range, by -price": lambda _: ProductQuery(min_price=Decimal("10"), max_price=Decimal("20"), sort="-price"),
    "min price only": lambda _: ProductQuery(min_price=Decimal("990"), sort="price"),
    "q word": lambda _: ProductQuery(q="kettle"),
    "q in description": lambda _: ProductQuery(q="materials, model 12"),
    "q sku": lambda _: ProductQuery(q="sku-0012"),
    "q two letters": lambda _: ProductQuery(q="zq"),
    "q, category and price": lambda c: ProductQuery(q="brass", category_id=c, min_price=Decimal("1"), sort="-price"),
}


INDEXES = {ix.name for ix in products.indexes}


def plan_nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from plan_nodes(child)


async def explain(engine: AsyncEngine, statement: sa.Select[Any], values: dict[str, Any]) -> dict[str, Any]:
    """EXPLAIN of a statement as the API runs it: prepared, with these values bound."""
    async with engine.connect() as conn:
        compiled = statement.compile(dialect=conn.dialect)
        bound = compiled.construct_params(values)
        params = tuple(bound[name] for name in compiled.positiontup or ())
        raw = (await conn.exec_driver_sql("EXPLAIN (FORMAT JSON) " + compiled.string, params)).scalar_one()
    plan: dict[str, Any] = raw[0]["Plan"]
    return plan


@pytest.mark.slow
async def test_every_listing_query_reads_products_through_an_index(make_database: Callable[[], Any]) -> None:
    async with make_database() as url, seeded_catalog(url) as (engine, category):
        unindexed = []
        counted = []
        for name, make_query in QUERIES.items():
            page, total, values = list_statements(make_query(category))
            for part, statement in (("page", page), ("total", total)):
                plan = await explain(engine, statement, values)
                relations = {n.get("Relation Name") for n in plan_nodes(plan)} - {None}
                on_products = [n for n in plan_nodes(plan) if n.get("Relation Name") == "products"]
                used = {n.get("Index Name") for n in plan_nodes(plan) if "Index" in n["Node Type"]}
                if relations == {"product_counts"}:
                    counted.append((name, part))  # the kept per-category count: no product is read
                elif not on_products or any(n["Node Type"] == "Seq Scan" for n in on_products) or not used & INDEXES:
                    unindexed.append((name, part, plan))
        assert unindexed == []
        assert ("all, by name", "total") in counted
        assert ("category, by price", "total") in counted
        assert all(part == "total" and not name.startswith(("q", "price", "min")) for name, part in counted)

        # The search index answers a selective `q`, and finds what a plain scan finds.
        _, total, values = list_statements(ProductQuery(q="kettle"))
        plan = await explain(engine, total, values)
        assert "ix_products_active_search" in {n.get("Index Name") for n in plan_nodes(plan)}
        async with engine.connect() as conn:
            found = await conn.scalar(total, values)
            expected = await conn.scalar(
                sa.text(
                    "SELECT count(*) FROM catalog.products WHERE active AND "
                    "(name ILIKE '%kettle%' OR description ILIKE '%kettle%' OR sku ILIKE '%kettle%')"
                )
            )
        assert found == expected
        assert found > 0
