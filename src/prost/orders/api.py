"""The orders HTTP API (API.md, "Orders") and its internal twin for the cart's checkout.

    POST /api/v1/orders                  202 pending order; Idempotency-Key supported
    GET  /api/v1/orders                  own orders, newest first (admins: all), ?status, pages
    GET  /api/v1/orders/{id}             owner or admin; anyone else gets 404
    POST /api/v1/orders/{id}/cancel      202 while not final (the saga compensates), else 409
    GET  /api/v1/orders/{id}/saga        the saga's steps and compensations, with times
    POST /internal/orders                the cart's checkout; idempotent on `order_id`

Placing an order: the body is validated (422, nothing stored), the catalog quotes
prices and names (`/internal/catalog/quote`) while the payments service tokenises
the card (`/internal/payments/tokens`); then ONE statement stores the order, its
lines, its saga and the `order.placed` event, in one transaction with the
Idempotency-Key record when there is one.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Request
from pydantic import BaseModel, ConfigDict, Field, model_validator

from prost.contracts.catalog import StockLine
from prost.kit import db, idempotency
from prost.kit.auth import CurrentUser, Principal, ServiceCaller
from prost.kit.cards import PaymentCardIn
from prost.kit.errors import DomainError, JSONBody
from prost.kit.service import ServiceContext, context_dependency
from prost.orders import saga as sg
from prost.orders.domain import (
    MAX_LINES,
    MAX_QUANTITY,
    OrderIdTaken,
    OrderNotFound,
    PricedOrder,
    iso,
    order_public,
    price_order,
)
from prost.orders.repository import OrderRepository, SagaRepository, utcnow

Ctx = Annotated[ServiceContext, Depends(context_dependency("orders"))]
IDEMPOTENCY = idempotency.IdempotencyStore("orders")
CREATE_SCOPE = "orders.create"

router = APIRouter(prefix="/api/v1/orders", tags=["orders"])
internal_router = APIRouter(prefix="/internal/orders", include_in_schema=False)

StatusName = Literal["pending", "stock_reserved", "confirmed", "rejected", "cancelled"]


# -- schemas ---------------------------------------------------------------------------------


class OrderItemIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    product_id: uuid.UUID
    quantity: Annotated[int, Field(ge=1, le=MAX_QUANTITY)]


class OrderCreate(BaseModel):
    """`unit_price`, `total_amount`, `status` or anything else sent along is ignored."""

    model_config = ConfigDict(extra="ignore")
    items: Annotated[list[OrderItemIn], Field(min_length=1, max_length=MAX_LINES)]
    payment: PaymentCardIn

    @model_validator(mode="after")
    def _one_line_per_product(self) -> OrderCreate:
        seen: set[uuid.UUID] = set()
        for item in self.items:
            if item.product_id in seen:
                raise ValueError(f"product {item.product_id} appears on more than one line")
            seen.add(item.product_id)
        return self


class InternalOrderCreate(OrderCreate):
    order_id: uuid.UUID
    user_id: uuid.UUID
    cart_id: uuid.UUID | None = None


class OrderItemPublic(BaseModel):
    product_id: uuid.UUID
    sku: str
    name: str
    quantity: int
    unit_price: str
    line_total: str


class OrderPublic(BaseModel):
    id: uuid.UUID
    user_id: uuid.UUID
    status: StatusName
    failure_reason: str | None
    items: list[OrderItemPublic]
    total_amount: str
    currency: str
    created_at: datetime
    updated_at: datetime


class OrderList(BaseModel):
    items: list[OrderPublic]
    total: int
    page: int
    page_size: int


class SagaStepPublic(BaseModel):
    name: str
    status: str
    at: datetime


class CompensationPublic(BaseModel):
    action: str
    status: str
    at: datetime


class SagaPublic(BaseModel):
    order_id: uuid.UUID
    status: str
    steps: list[SagaStepPublic]
    compensations: list[CompensationPublic]


# -- placing an order --------------------------------------------------------------------------


async def _quote_and_tokenise(ctx: ServiceContext, body: OrderCreate) -> tuple[PricedOrder, dict[str, Any]]:
    """Ask the catalog for prices and the payments vault for a token, concurrently."""
    product_ids = [str(item.product_id) for item in body.items]
    quote_call = ctx.clients["catalog"].post("/internal/catalog/quote", json={"product_ids": product_ids})
    card = body.payment
    token_call = ctx.clients["payments"].post(
        "/internal/payments/tokens",
        json={"card_number": card.card_number, "exp_month": card.exp_month, "exp_year": card.exp_year, "cvc": card.cvc},
    )
    outcomes = await asyncio.gather(quote_call, token_call, return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
    quote, token = outcomes
    if not isinstance(quote, dict) or not isinstance(token, dict):
        raise DomainError("unexpected answer from the catalog or the payments service")
    priced = price_order([(item.product_id, item.quantity) for item in body.items], quote.get("items", []))
    if not isinstance(token.get("token"), str):
        raise DomainError("the payments service gave no token")
    return priced, token


async def place(
    ctx: ServiceContext,
    body: OrderCreate,
    *,
    order_id: uuid.UUID,
    user_id: uuid.UUID,
    cart_id: uuid.UUID | None,
    request: idempotency.IdempotentRequest | None,
) -> JSONBody:
    priced, token = await _quote_and_tokenise(ctx, body)
    now = utcnow()
    decision = sg.start(
        order_id=order_id,
        user_id=user_id,
        cart_id=cart_id,
        lines=tuple(StockLine(product_id=line.product_id, quantity=line.quantity) for line in priced.lines),
        amount=priced.total_amount,
        currency=priced.currency,
        payment_token=token["token"],
        now=now,
        policy=sg.Policy.from_settings(ctx.settings),
    )
    public = _public_of_new(order_id, user_id, priced, now)
    # Without an Idempotency-Key the order is one statement (`OrderRepository.add`), which
    # needs no transaction; with one, its record is claimed and completed beside it.
    unit = db.transaction(ctx.engine) if request is not None else db.autocommit(ctx.engine)
    async with unit as session:
        if request is not None and (hit := await IDEMPOTENCY.claim(session, request)) is not None:
            return hit.response()
        orders = OrderRepository(session)
        created = await orders.add(
            order_id=order_id,
            user_id=user_id,
            cart_id=cart_id,
            priced=priced,
            payment_token=token["token"],
            card_last4=str(token.get("last4") or body.payment.last4),
            card_brand=str(token.get("brand") or body.payment.brand),
            saga=decision,
            now=now,
        )
        if not created:  # the same order_id, placed concurrently (internal API)
            return await _existing(orders, order_id, user_id)
        if request is not None:
            await IDEMPOTENCY.complete(session, request, status_code=202, body=public)
    return JSONBody(public, status_code=202)


def _public_of_new(order_id: uuid.UUID, user_id: uuid.UUID, priced: PricedOrder, now: datetime) -> dict[str, Any]:
    order = {
        "id": order_id,
        "user_id": user_id,
        "status": sg.OrderStatus.PENDING.value,
        "failure_reason": None,
        "total_amount": priced.total_amount,
        "currency": priced.currency,
        "created_at": now,
        "updated_at": now,
    }
    items = [
        {
            "product_id": line.product_id,
            "sku": line.sku,
            "name": line.name,
            "quantity": line.quantity,
            "unit_price": line.unit_price,
            "line_total": line.line_total,
        }
        for line in priced.lines
    ]
    return order_public(order, items)


async def _existing(orders: OrderRepository, order_id: uuid.UUID, user_id: uuid.UUID) -> JSONBody:
    found = await orders.get(order_id)
    if found is None:  # pragma: no cover - it conflicted, so it exists
        raise OrderNotFound()
    order, items = found
    if order["user_id"] != user_id:
        raise OrderIdTaken()
    return JSONBody(order_public(order, items), status_code=202)


@router.post(
    "",
    status_code=202,
    response_model=OrderPublic,
    summary="Place an order",
    responses={422: {"description": "invalid items or card, or an Idempotency-Key reused with another body"}},
)
async def place_order(
    body: OrderCreate,
    request: Request,
    ctx: Ctx,
    user: CurrentUser,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", max_length=1000)] = None,
) -> JSONBody:
    """Prices come from the catalog now; the card is tokenised (never stored). The order
    starts `pending`; the saga takes it to `confirmed`, `rejected` or `cancelled`."""
    key = idempotency.parse_key(idempotency_key)
    idem: idempotency.IdempotentRequest | None = None
    if key is not None:
        idem = idempotency.IdempotentRequest(
            scope=CREATE_SCOPE,
            user_id=user.id,
            key=key,
            fingerprint=idempotency.fingerprint(await request.body(), secret=ctx.auth.secret),
        )
        async with db.autocommit(ctx.engine) as conn:
            if (hit := await IDEMPOTENCY.replay(conn, idem)) is not None:
                return hit.response()
    return await place(ctx, body, order_id=uuid.uuid4(), user_id=user.id, cart_id=None, request=idem)


@internal_router.post("", status_code=202)
async def place_order_for_cart(body: InternalOrderCreate, ctx: Ctx, _caller: ServiceCaller) -> JSONBody:
    """The cart's checkout: idempotent on `order_id` (the same id gives back that order)."""
    async with db.autocommit(ctx.engine) as conn:
        orders = OrderRepository(conn)
        if await orders.get(body.order_id) is not None:
            return await _existing(orders, body.order_id, body.user_id)
    return await place(ctx, body, order_id=body.order_id, user_id=body.user_id, cart_id=body.cart_id, request=None)


# -- reading and cancelling ------------------------------------------------------------------


def _visible(order_user: uuid.UUID, user: Principal) -> bool:
    return user.is_admin or order_user == user.id


@router.get("", response_model=OrderList, summary="List orders (own; admins: all)")
async def list_orders(
    ctx: Ctx,
    user: CurrentUser,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
    page_size: Annotated[int, Query(ge=1, le=100)] = 20,
    status: StatusName | None = None,
) -> JSONBody:
    async with db.autocommit(ctx.engine) as conn:
        rows, total = await OrderRepository(conn).list(
            user_id=None if user.is_admin else user.id, status=status, page=page, page_size=page_size
        )
    items = [order_public(order, lines) for order, lines in rows]
    return JSONBody({"items": items, "total": total, "page": page, "page_size": page_size})


@router.get("/{order_id}", response_model=OrderPublic, summary="One order (owner or admin)")
async def get_order(order_id: uuid.UUID, ctx: Ctx, user: CurrentUser) -> JSONBody:
    async with db.autocommit(ctx.engine) as conn:
        found = await OrderRepository(conn).get(order_id)
    if found is None or not _visible(found[0]["user_id"], user):
        raise OrderNotFound()
    return JSONBody(order_public(*found))


@router.post(
    "/{order_id}/cancel",
    status_code=202,
    response_model=OrderPublic,
    summary="Cancel an order that is not final yet",
    responses={409: {"description": "the order is already confirmed, rejected or cancelled"}},
)
async def cancel_order(order_id: uuid.UUID, ctx: Ctx, user: CurrentUser) -> JSONBody:
    """The order becomes `cancelled` (`cancelled_by_user`) at once; the saga then
    releases its stock (and refunds a payment that lands later)."""
    now = utcnow()
    async with db.transaction(ctx.engine) as session:
        sagas = SagaRepository(session)
        current = await sagas.get_for_update(order_id)
        if current is None or not _visible(current.user_id, user):
            raise OrderNotFound()
        decision = sg.decide(current, sg.CancelRequested(), now=now, policy=sg.Policy.from_settings(ctx.settings))
        await sagas.apply(current, decision, caused_by=None, now=now)
        found = await OrderRepository(session).get(order_id)
    assert found is not None
    return JSONBody(order_public(*found), status_code=202)


@router.get("/{order_id}/saga", response_model=SagaPublic, summary="The order's saga: steps and compensations")
async def get_saga(order_id: uuid.UUID, ctx: Ctx, user: CurrentUser) -> JSONBody:
    async with db.autocommit(ctx.engine) as conn:
        sagas = SagaRepository(conn)
        current = await sagas.get(order_id)
        if current is None or not _visible(current.user_id, user):
            raise OrderNotFound()
        compensations = await sagas.compensations(order_id)
    return JSONBody(
        {
            "order_id": str(order_id),
            "status": current.status,
            "steps": [{"name": s.name, "status": s.status, "at": iso(s.at)} for s in current.steps],
            "compensations": [
                {"action": c["action"], "status": c["status"], "at": iso(c["updated_at"]), "attempts": c["attempts"]}
                for c in compensations
            ],
        }
    )
