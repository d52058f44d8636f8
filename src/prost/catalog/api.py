"""The catalog's HTTP API: the public routes of API.md (Catalog) and the internal
routes the cart and orders services call.

Public (`router`)::

    GET    /api/v1/categories              –      → 200 [CategoryPublic] (by name)
    POST   /api/v1/categories              admin  CategoryCreate → 201; 409 slug taken
    GET    /api/v1/products                –      q, category_id, min_price, max_price, sort, page, page_size
                                                  → 200 {items: [ProductPublic], total, page, page_size}
    GET    /api/v1/products/{id}           –      → 200 ProductPublic; 404 (also for an inactive
                                                  product, unless the caller is an admin)
    POST   /api/v1/products                admin  ProductCreate → 201; 409 SKU taken
    PATCH  /api/v1/products/{id}           admin  ProductUpdate → 200
    PUT    /api/v1/products/{id}/stock     admin  StockUpdate → 200; 409 below the reserved units
    DELETE /api/v1/products/{id}           admin  → 204 (deactivates)

Internal (`internal_router`, a service token required; holds for the cart only)::

    POST   /internal/catalog/quote                        {product_ids} → {items}
    PUT    /internal/catalog/holds/{cart_id}/{product_id} {quantity, ttl_seconds?} → HoldPlaced; 409; 404
    DELETE /internal/catalog/holds/{cart_id}/{product_id} → 204
    POST   /internal/catalog/holds/{cart_id}/extend       {ttl_seconds?} → {holds}
    GET    /internal/catalog/holds/{cart_id}              → {holds}

Bodies refuse unknown fields (422): a misspelt field, or `sku` in a PATCH, is an
error rather than a silent no-op. Writes run in `repository.run_in_transaction`
(retried on deadlock), and announce `product.created` / `product.updated` through
the outbox in the same transaction.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response, status
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from prost.catalog import domain, inventory
from prost.catalog.repository import (
    CategoryRepository,
    CategoryRow,
    ProductQuery,
    ProductRepository,
    ProductRow,
    run_in_transaction,
)
from prost.contracts.catalog import ProductCreated, ProductUpdated
from prost.kit import db, outbox
from prost.kit.auth import AdminUser, Principal, ServiceCaller
from prost.kit.db import Session
from prost.kit.errors import DomainError, Forbidden, ValidationFailed
from prost.kit.messages import Envelope
from prost.kit.service import ServiceContext, context_dependency

# Spelled out (not `context_type("catalog")`) so that type checkers see a ServiceContext.
Ctx = Annotated[ServiceContext, Depends(context_dependency("catalog"))]

router = APIRouter(prefix="/api/v1", tags=["catalog"])
internal_router = APIRouter(prefix="/internal/catalog", include_in_schema=False)

Price = Annotated[Decimal, BeforeValidator(domain.parse_price)]
Name = Annotated[str, Field(max_length=200), AfterValidator(domain.check_name)]
Description = Annotated[str, Field(max_length=5000)]
Stock = Annotated[int, Field(strict=True, ge=0, le=domain.MAX_STOCK)]
Quantity = Annotated[int, Field(strict=True, ge=0, le=domain.MAX_HOLD_QUANTITY)]
Ttl = Annotated[int, Field(strict=True, ge=1, le=domain.MAX_TTL_SECONDS)]


# -- schemas -----------------------------------------------------------------------


class CategoryCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(max_length=100), AfterValidator(domain.check_name)]
    slug: Annotated[str, Field(max_length=domain.SLUG_MAX_CHARS), AfterValidator(domain.check_slug)]


class CategoryPublic(BaseModel):
    id: uuid.UUID
    name: str
    slug: str
    created_at: datetime
    updated_at: datetime


class ProductCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sku: Annotated[str, Field(max_length=domain.SKU_MAX_CHARS + 20), AfterValidator(domain.check_sku)]
    name: Name
    description: Description | None = None
    price: Price
    currency: Annotated[str, AfterValidator(domain.check_currency)] = domain.CURRENCY
    category_id: uuid.UUID | None = None
    stock: Stock


class ProductUpdate(BaseModel):
    """Any of these. `category_id: null` removes the category and `description: null`
    empties it; `name`, `price` and `active` cannot be null."""

    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    description: Description | None = None
    price: Annotated[Decimal | None, BeforeValidator(lambda v: None if v is None else domain.parse_price(v))] = None
    category_id: uuid.UUID | None = None
    active: Annotated[bool, Field(strict=True)] | None = None

    @model_validator(mode="after")
    def _not_null(self) -> ProductUpdate:
        for name in ("name", "price", "active"):
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null")
        return self

    def changes(self) -> dict[str, Any]:
        changes = {name: getattr(self, name) for name in self.model_fields_set}
        if "description" in changes and changes["description"] is None:
            changes["description"] = ""
        return changes


class StockUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stock: Stock


class ProductPublic(BaseModel):
    id: uuid.UUID
    sku: str
    name: str
    description: str
    price: Decimal
    currency: str
    category_id: uuid.UUID | None
    stock: int
    available: int
    active: bool
    created_at: datetime
    updated_at: datetime


class ProductList(BaseModel):
    items: list[ProductPublic]
    total: int
    page: int
    page_size: int


def category_public(row: CategoryRow) -> CategoryPublic:
    return CategoryPublic(id=row.id, name=row.name, slug=row.slug, created_at=row.created_at, updated_at=row.updated_at)


def product_public(row: ProductRow) -> ProductPublic:
    return ProductPublic(
        id=row.id,
        sku=row.sku,
        name=row.name,
        description=row.description,
        price=row.price,
        currency=row.currency,
        category_id=row.category_id,
        stock=row.stock,
        available=row.available,
        active=row.active,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


async def announce_product(session: Session, row: ProductRow, *, created: bool = False) -> None:
    fields = {
        "product_id": row.id,
        "sku": row.sku,
        "name": row.name,
        "price": row.price,
        "currency": row.currency,
        "category_id": row.category_id,
        "stock": row.stock,
        "active": row.active,
    }
    event = ProductCreated(**fields) if created else ProductUpdated(**fields)
    await outbox.add_to_outbox(session, Envelope.wrap(event, producer="catalog"))


def optional_admin(request: Request) -> bool:
    """Whether the caller proved to be an admin. Public reads work without a token,
    and a stale or broken one is treated as no token rather than refused."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return False
    try:
        principal: Principal = request.app.state.auth.verify(token.strip())
    except DomainError:
        return False
    return principal.is_admin


# -- categories --------------------------------------------------------------------


@router.get("/categories", summary="List categories (by name)")
async def list_categories(ctx: Ctx) -> list[CategoryPublic]:
    async with db.autocommit(ctx.engine) as session:
        return [category_public(r) for r in await CategoryRepository(session).list()]


@router.post("/categories", status_code=status.HTTP_201_CREATED, summary="Create a category (admin)")
async def create_category(body: CategoryCreate, ctx: Ctx, _admin: AdminUser) -> CategoryPublic:
    async def create(session: Session) -> CategoryRow:
        return await CategoryRepository(session).add(name=body.name, slug=body.slug)

    return category_public(await run_in_transaction(ctx.engine, create))


# -- products ----------------------------------------------------------------------


def _price_param(name: str, raw: str | None) -> Decimal | None:
    if raw is None:
        return None
    try:
        return domain.parse_price(raw)
    except ValueError as exc:
        raise ValidationFailed(f"{name}: {exc}") from None


@router.get("/products", summary="List active products: search, filter, sort, pages")
async def list_products(
    ctx: Ctx,
    q: Annotated[str | None, Query(max_length=domain.Q_MAX_CHARS, description="in name, description or SKU")] = None,
    category_id: uuid.UUID | None = None,
    min_price: Annotated[str | None, Query(max_length=40, examples=["10.00"])] = None,
    max_price: Annotated[str | None, Query(max_length=40, examples=["99.99"])] = None,
    sort: Literal["name", "-name", "price", "-price", "created_at", "-created_at"] = "name",
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    page_size: Annotated[int, Query(ge=1, le=domain.PAGE_SIZE_MAX)] = domain.PAGE_SIZE_DEFAULT,
) -> ProductList:
    low, high = _price_param("min_price", min_price), _price_param("max_price", max_price)
    if low is not None and high is not None and low > high:
        raise ValidationFailed("min_price must not exceed max_price")
    query = ProductQuery(
        q=domain.normalize_query(q),
        category_id=category_id,
        min_price=low,
        max_price=high,
        sort=sort,
        page=page,
        page_size=page_size,
    )
    async with db.autocommit(ctx.engine) as session:
        rows, total = await ProductRepository(session).list(query)
    return ProductList(items=[product_public(r) for r in rows], total=total, page=page, page_size=page_size)


@router.get("/products/{product_id}", summary="One product")
async def get_product(product_id: uuid.UUID, ctx: Ctx, request: Request) -> ProductPublic:
    async with db.autocommit(ctx.engine) as session:
        row = await ProductRepository(session).get(product_id)
    if not row.active and not optional_admin(request):
        raise domain.ProductNotFound()
    return product_public(row)


@router.post("/products", status_code=status.HTTP_201_CREATED, summary="Create a product (admin)")
async def create_product(body: ProductCreate, ctx: Ctx, _admin: AdminUser) -> ProductPublic:
    async def create(session: Session) -> ProductRow:
        row = await ProductRepository(session).add(
            sku=body.sku,
            name=body.name,
            description=body.description or "",
            price=body.price,
            currency=body.currency,
            category_id=body.category_id,
            stock=body.stock,
        )
        await announce_product(session, row, created=True)
        return row

    return product_public(await run_in_transaction(ctx.engine, create))


@router.patch("/products/{product_id}", summary="Change a product (admin)")
async def update_product(product_id: uuid.UUID, body: ProductUpdate, ctx: Ctx, _admin: AdminUser) -> ProductPublic:
    changes = body.changes()

    async def update(session: Session) -> ProductRow:
        repo = ProductRepository(session)
        if not changes:
            return await repo.get(product_id)
        row = await repo.update(product_id, changes)
        await announce_product(session, row)
        return row

    return product_public(await run_in_transaction(ctx.engine, update))


@router.put("/products/{product_id}/stock", summary="Set the units on hand (admin)")
async def set_product_stock(product_id: uuid.UUID, body: StockUpdate, ctx: Ctx, _admin: AdminUser) -> ProductPublic:
    async def set_stock(session: Session) -> ProductRow:
        await inventory.set_stock(session, product_id=product_id, stock=body.stock)
        row = await ProductRepository(session).get(product_id)
        await announce_product(session, row)
        return row

    return product_public(await run_in_transaction(ctx.engine, set_stock))


@router.delete("/products/{product_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Deactivate (admin)")
async def deactivate_product(product_id: uuid.UUID, ctx: Ctx, _admin: AdminUser) -> Response:
    """Hidden from lists and from customers, no new holds or orders; reservations
    already made still commit or release. Repeating it changes nothing."""

    async def deactivate(session: Session) -> None:
        repo = ProductRepository(session)
        if (await repo.get(product_id)).active:
            await announce_product(session, await repo.update(product_id, {"active": False}))

    await run_in_transaction(ctx.engine, deactivate)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# -- internal: quotes and holds ----------------------------------------------------


async def cart_service(caller: ServiceCaller) -> str:
    """Holds belong to carts: only the cart service places or moves them."""
    if caller != "cart":
        raise Forbidden("holds are managed by the cart service")
    return caller


CartService = Annotated[str, Depends(cart_service)]


class QuoteRequest(BaseModel):
    product_ids: Annotated[list[uuid.UUID], Field(max_length=1000)]


class QuoteItem(BaseModel):
    product_id: uuid.UUID
    sku: str
    name: str
    price: Decimal
    currency: str
    active: bool
    available: int


class Quote(BaseModel):
    items: list[QuoteItem]


class HoldSet(BaseModel):
    quantity: Quantity
    ttl_seconds: Ttl | None = None


class HoldExtend(BaseModel):
    ttl_seconds: Ttl | None = None


class HoldPlaced(BaseModel):
    product_id: uuid.UUID
    quantity: int
    expires_at: datetime | None
    product: ProductPublic


class HoldPublic(BaseModel):
    product_id: uuid.UUID
    quantity: int
    status: str
    expires_at: datetime | None


class HoldExtended(BaseModel):
    product_id: uuid.UUID
    quantity: int
    expires_at: datetime | None


class HoldList(BaseModel):
    holds: list[HoldPublic]


class HoldExtendedList(BaseModel):
    holds: list[HoldExtended]


@internal_router.post("/quote")
async def quote(body: QuoteRequest, ctx: Ctx, _caller: ServiceCaller) -> Quote:
    """Current price and availability of some products (unknown ids are left out)."""
    async with db.autocommit(ctx.engine) as session:
        rows = await ProductRepository(session).get_many(list(dict.fromkeys(body.product_ids)))
    by_id = {r.id: r for r in rows}
    return Quote(
        items=[
            QuoteItem(
                product_id=r.id,
                sku=r.sku,
                name=r.name,
                price=r.price,
                currency=r.currency,
                active=r.active,
                available=r.available if r.active else 0,
            )
            for pid in dict.fromkeys(body.product_ids)
            if (r := by_id.get(pid)) is not None
        ]
    )


@internal_router.put("/holds/{cart_id}/{product_id}")
async def set_hold(
    cart_id: uuid.UUID, product_id: uuid.UUID, body: HoldSet, ctx: Ctx, _caller: CartService
) -> HoldPlaced:
    ttl = body.ttl_seconds or ctx.settings.cart_hold_ttl_seconds

    async def place(session: Session) -> tuple[inventory.Hold, ProductRow]:
        return await inventory.set_hold(
            session, cart_id=cart_id, product_id=product_id, quantity=body.quantity, ttl_seconds=ttl
        )

    hold, product = await run_in_transaction(ctx.engine, place)
    return HoldPlaced(
        product_id=product_id, quantity=hold.quantity, expires_at=hold.expires_at, product=product_public(product)
    )


@internal_router.delete("/holds/{cart_id}/{product_id}", status_code=status.HTTP_204_NO_CONTENT)
async def release_hold(cart_id: uuid.UUID, product_id: uuid.UUID, ctx: Ctx, _caller: CartService) -> Response:
    async def release(session: Session) -> bool:
        return await inventory.release_hold(session, cart_id=cart_id, product_id=product_id)

    await run_in_transaction(ctx.engine, release)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@internal_router.post("/holds/{cart_id}/extend")
async def extend_holds(
    cart_id: uuid.UUID, ctx: Ctx, _caller: CartService, body: HoldExtend | None = None
) -> HoldExtendedList:
    ttl = (body.ttl_seconds if body else None) or ctx.settings.cart_hold_ttl_seconds

    async def extend(session: Session) -> list[inventory.Hold]:
        return await inventory.extend_holds(session, cart_id=cart_id, ttl_seconds=ttl)

    holds = await run_in_transaction(ctx.engine, extend, unit=db.autocommit)  # one statement
    return HoldExtendedList(
        holds=[HoldExtended(product_id=h.product_id, quantity=h.quantity, expires_at=h.expires_at) for h in holds]
    )


@internal_router.get("/holds/{cart_id}")
async def list_holds(cart_id: uuid.UUID, ctx: Ctx, _caller: CartService) -> HoldList:
    async with db.autocommit(ctx.engine) as session:
        holds = await inventory.list_holds(session, cart_id=cart_id)
    return HoldList(
        holds=[
            HoldPublic(product_id=h.product_id, quantity=h.quantity, status=h.status, expires_at=h.expires_at)
            for h in holds
        ]
    )
