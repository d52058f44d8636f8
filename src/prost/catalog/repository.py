"""The catalog's tables and queries (SQLAlchemy Core); nothing else touches them.

- `CategoryRepository`: add, list.
- `ProductRepository`: add, get, list (search, filters, sort, pages), update,
  set_stock. Every read computes `available` from the product's counters and the
  sum of its active reservations already past `expires_at` (a scalar subquery on a
  partial index), so an expired reservation stops counting at once.
- `run_in_transaction`: a unit of work (a transaction, or one statement in
  `db.autocommit`) retried on deadlock or serialization failure,
  so such an error never reaches a client.

Stock changes that involve reservations live in `inventory.py`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import uuid
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.ext.asyncio import AsyncEngine

from prost.catalog import domain
from prost.catalog.tables import categories, inventory_reservations, product_counts, products
from prost.kit import db
from prost.kit.db import Session, Sql

log = logging.getLogger("prost.catalog")

T = TypeVar("T")

RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})  # serialization_failure, deadlock_detected


async def run_in_transaction(
    engine: AsyncEngine,
    fn: Callable[[Session], Awaitable[T]],
    *,
    attempts: int = 8,
    unit: Callable[[AsyncEngine], AbstractAsyncContextManager[Session]] = db.transaction,
) -> T:
    """Run `fn` in its own transaction, again (after a short random pause) when
    PostgreSQL aborted it for a deadlock or a serialization failure. An `fn` of exactly
    one statement takes `unit=db.autocommit`: the statement is its own transaction,
    without a `BEGIN` and a `COMMIT` of its own."""
    for attempt in range(1, attempts + 1):
        try:
            async with unit(engine) as session:
                return await fn(session)
        except db.DATABASE_ERRORS as exc:
            if db.sqlstate(exc) not in RETRYABLE_SQLSTATES or attempt == attempts:
                raise
            log.info("transaction retried after %s (attempt %d)", db.sqlstate(exc), attempt)
            await asyncio.sleep(random.uniform(0.001, 0.01) * attempt)
    raise AssertionError("unreachable")


# -- categories --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CategoryRow:
    id: uuid.UUID
    name: str
    slug: str
    created_at: datetime
    updated_at: datetime


class CategoryRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    async def add(self, *, name: str, slug: str) -> CategoryRow:
        c = categories
        row = (
            await self.session.execute(
                pg.insert(c)
                .values(id=uuid.uuid4(), name=name, slug=slug)
                .on_conflict_do_nothing(index_elements=[c.c.slug])
                .returning(*c.c)
            )
        ).first()
        if row is None:
            raise domain.SlugTaken()
        return CategoryRow(**row._mapping)

    async def list(self) -> list[CategoryRow]:
        c = categories
        rows = (await self.session.execute(sa.select(*c.c).order_by(c.c.name, c.c.id))).all()
        return [CategoryRow(**r._mapping) for r in rows]

    async def exists(self, category_id: uuid.UUID) -> bool:
        c = categories
        return (await self.session.scalar(sa.select(sa.literal(1)).where(c.c.id == category_id))) is not None


# -- products ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProductRow:
    id: uuid.UUID
    sku: str
    name: str
    description: str
    price: Decimal
    currency: str
    category_id: uuid.UUID | None
    stock: int
    reserved: int
    available: int
    active: bool
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class ProductQuery:
    q: str | None = None
    category_id: uuid.UUID | None = None
    min_price: Decimal | None = None
    max_price: Decimal | None = None
    sort: str = "name"
    page: int = 1
    page_size: int = domain.PAGE_SIZE_DEFAULT


_P = products
_R = inventory_reservations


def expired_reserved(product_id: Any) -> sa.ScalarSelect[Any]:
    """Units of the product's active reservations already past `expires_at`."""
    return (
        sa.select(sa.func.coalesce(sa.func.sum(_R.c.quantity), 0))
        .where(_R.c.product_id == product_id, _R.c.status == "active", _R.c.expires_at <= sa.func.now())
        .scalar_subquery()
    )


def available_column() -> sa.ColumnElement[int]:
    return sa.func.greatest(_P.c.stock - _P.c.reserved + expired_reserved(_P.c.id), 0).label("available")


PRODUCT_COLUMNS: tuple[Any, ...] = (
    _P.c.id,
    _P.c.sku,
    _P.c.name,
    _P.c.description,
    _P.c.price,
    _P.c.currency,
    _P.c.category_id,
    _P.c.stock,
    _P.c.reserved,
    _P.c.active,
    _P.c.created_at,
    _P.c.updated_at,
)


def select_products() -> sa.Select[Any]:
    return sa.select(*PRODUCT_COLUMNS, available_column())


SELECT_PRODUCT = select_products().where(_P.c.id == sa.bindparam("product_id"))


# Several products by id (the quote's read, one per order placed), as `Sql`: the
# columns of `select_products()`.
_QUOTE = Sql(
    "SELECT p.id, p.sku, p.name, p.description, p.price, p.currency, p.category_id, p.stock, p.reserved, p.active,"
    " p.created_at, p.updated_at, greatest(p.stock - p.reserved + (SELECT coalesce(sum(r.quantity), 0)"
    " FROM catalog.inventory_reservations r WHERE r.product_id = p.id AND r.status = 'active'"
    " AND r.expires_at <= now()), 0) AS available"
    " FROM catalog.products p WHERE p.id = ANY(CAST(:product_ids AS uuid[]))"
)


def product_row(row: Any) -> ProductRow:
    return ProductRow(**db.mapping(row))


_ORDERINGS: dict[str, tuple[sa.ColumnElement[Any], ...]] = {
    "name": (_P.c.name.asc(), _P.c.id.asc()),
    "-name": (_P.c.name.desc(), _P.c.id.desc()),
    "price": (_P.c.price.asc(), _P.c.id.asc()),
    "-price": (_P.c.price.desc(), _P.c.id.desc()),
    "created_at": (_P.c.created_at.asc(), _P.c.id.asc()),
    "-created_at": (_P.c.created_at.desc(), _P.c.id.desc()),
}


def list_filters(*, q: bool, category: bool, min_price: bool, max_price: bool) -> list[sa.ColumnElement[bool]]:
    """The WHERE of a product listing, with a bound parameter for each filter given.
    Only active products are listed, so every listing index is partial on `active`.

    `q` is a case-insensitive substring of the name, description or SKU. The GIN index
    on `search_grams` finds the candidates (those that have every gram of `q`); `strpos`
    on each field then keeps the true matches. Both lower-case with the database's
    `lower()`, so the index and the check agree on letters beyond ASCII."""
    # Plain `active` (not `active IS TRUE`): the planner matches it to the partial indexes.
    where: list[sa.ColumnElement[bool]] = [_P.c.active]
    if q:
        needle = sa.func.lower(sa.bindparam("q", type_=sa.Text))
        where.append(_P.c.search_grams.contains(sa.func.catalog.search_query_grams(needle)))
        where.append(
            sa.or_(
                sa.func.strpos(sa.func.lower(_P.c.name), needle) > 0,
                sa.func.strpos(sa.func.lower(_P.c.description), needle) > 0,
                sa.func.strpos(sa.func.lower(_P.c.sku), needle) > 0,
            )
        )
    if category:
        where.append(_P.c.category_id == sa.bindparam("category_id", type_=pg.UUID(as_uuid=True)))
    if min_price:
        where.append(_P.c.price >= sa.bindparam("min_price", type_=sa.Numeric(12, 2)))
    if max_price:
        where.append(_P.c.price <= sa.bindparam("max_price", type_=sa.Numeric(12, 2)))
    return where


_PC = product_counts
COUNT_ALL = sa.select(sa.func.coalesce(sa.func.sum(_PC.c.active_products), 0))
COUNT_IN_CATEGORY = sa.select(sa.func.coalesce(sa.func.sum(_PC.c.active_products), 0)).where(
    _PC.c.category_key == sa.bindparam("category_id", type_=pg.UUID(as_uuid=True))
)


@functools.cache
def _list_statements(
    q: bool, category: bool, min_price: bool, max_price: bool, sort: str
) -> tuple[sa.Select[Any], sa.Select[Any]]:
    # Built once per shape: a listing request only binds values (no SQL building or
    # compiling per request; SQLAlchemy's cache key is memoised on the statement).
    where = list_filters(q=q, category=category, min_price=min_price, max_price=max_price)
    page = (
        select_products()
        .where(*where)
        .order_by(*_ORDERINGS[sort])
        .limit(sa.bindparam("limit", type_=sa.Integer))
        .offset(sa.bindparam("offset", type_=sa.Integer))
    )
    if not (q or min_price or max_price):
        # Every active product, or those of one category: the kept count (tables.py).
        count = COUNT_IN_CATEGORY if category else COUNT_ALL
    else:
        count = sa.select(sa.func.count()).select_from(_P).where(*where)
    return page, count


def list_statements(query: ProductQuery) -> tuple[sa.Select[Any], sa.Select[Any], dict[str, Any]]:
    """The page and total statements of a listing, and the values to run them with."""
    page, count = _list_statements(
        query.q is not None,
        query.category_id is not None,
        query.min_price is not None,
        query.max_price is not None,
        query.sort,
    )
    values: dict[str, Any] = {"limit": query.page_size, "offset": (query.page - 1) * query.page_size}
    for name in ("q", "category_id", "min_price", "max_price"):
        if (value := getattr(query, name)) is not None:
            values[name] = value
    return page, count, values


class ProductRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    async def add(
        self,
        *,
        sku: str,
        name: str,
        description: str,
        price: Decimal,
        currency: str,
        category_id: uuid.UUID | None,
        stock: int,
    ) -> ProductRow:
        if category_id is not None and not await CategoryRepository(self.session).exists(category_id):
            raise domain.UnknownCategory()
        inserted = (
            await self.session.execute(
                pg.insert(_P)
                .values(
                    id=uuid.uuid4(),
                    sku=sku,
                    name=name,
                    description=description,
                    price=price,
                    currency=currency,
                    category_id=category_id,
                    stock=stock,
                )
                .on_conflict_do_nothing()
                .returning(_P.c.id)
            )
        ).scalar()
        if inserted is None:
            raise domain.SkuTaken()
        return await self.get(inserted)

    async def get(self, product_id: uuid.UUID) -> ProductRow:
        found = await self.find(product_id)
        if found is None:
            raise domain.ProductNotFound()
        return found

    async def find(self, product_id: uuid.UUID) -> ProductRow | None:
        row = (await self.session.execute(SELECT_PRODUCT, {"product_id": product_id})).first()
        return product_row(row) if row is not None else None

    async def get_many(self, product_ids: Sequence[uuid.UUID]) -> list[ProductRow]:
        if not product_ids:
            return []
        return [product_row(r) for r in await self.session.fetch(_QUOTE, product_ids=list(product_ids))]

    async def list(self, query: ProductQuery) -> tuple[list[ProductRow], int]:
        page, count, values = list_statements(query)
        total = int(await self.session.scalar(count, values) or 0)
        if total == 0 or (query.page - 1) * query.page_size >= total:
            return [], total
        rows = (await self.session.execute(page, values)).all()
        return [product_row(r) for r in rows], total

    async def update(self, product_id: uuid.UUID, changes: dict[str, Any]) -> ProductRow:
        """Apply field changes (name, description, price, category_id, active)."""
        category_id = changes.get("category_id")
        if category_id is not None and not await CategoryRepository(self.session).exists(category_id):
            raise domain.UnknownCategory()
        updated = await self.session.scalar(
            sa.update(_P).where(_P.c.id == product_id).values(**changes, updated_at=sa.func.now()).returning(_P.c.id)
        )
        if updated is None:
            raise domain.ProductNotFound()
        return await self.get(product_id)
