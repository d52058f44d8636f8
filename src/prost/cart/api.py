"""The cart's public routes (API.md, "Cart"): always the caller's own cart.

No path names a cart, so one user can never address another's: every route works on
the current cart of the token's user. Bodies are validated here (quantities 1–1000,
0 allowed only on PUT; unknown fields refused; the card checked by `kit.cards`) and
the work is done by `prost.cart.operations`.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, status
from pydantic import BaseModel, ConfigDict, Field, PlainSerializer

from prost.cart import operations
from prost.cart.domain import MAX_QUANTITY, MIN_QUANTITY, CartView
from prost.kit import db, idempotency
from prost.kit.auth import CurrentUser
from prost.kit.cards import PaymentCardIn
from prost.kit.errors import JSONBody
from prost.kit.service import ServiceContext, context_dependency

# Spelled out (not `context_type("cart")`) so that type checkers see a ServiceContext.
Ctx = Annotated[ServiceContext, Depends(context_dependency("cart"))]

Money = Annotated[Decimal, PlainSerializer(lambda d: f"{d:.2f}", return_type=str, when_used="json")]

STORE = idempotency.IdempotencyStore("cart")
CHECKOUT_SCOPE = "cart.checkout"


class CartItemCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    product_id: uuid.UUID
    quantity: Annotated[int, Field(strict=True, ge=MIN_QUANTITY, le=MAX_QUANTITY)]


class CartItemUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    quantity: Annotated[int, Field(strict=True, ge=0, le=MAX_QUANTITY, description="0 removes the line")]


class CheckoutCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    payment: PaymentCardIn


class CartItemPublic(BaseModel):
    product_id: uuid.UUID
    sku: str
    name: str
    quantity: int
    unit_price: Money
    line_total: Money
    hold_expires_at: datetime | None = Field(
        description="When the line's hold ends; in the past when it lapsed; null when no stock is held for it"
    )
    available: bool = Field(description="The line can be bought as it is (held, or enough stock free now)")


class CartPublic(BaseModel):
    id: uuid.UUID
    user_id: uuid.UUID
    status: Literal["open", "checked_out", "ordered"]
    items: list[CartItemPublic]
    total_amount: Money
    currency: str

    @classmethod
    def of(cls, view: CartView) -> CartPublic:
        return cls(
            id=view.id,
            user_id=view.user_id,
            status=view.status.value,
            items=[
                CartItemPublic(
                    product_id=i.product_id,
                    sku=i.sku,
                    name=i.name,
                    quantity=i.quantity,
                    unit_price=i.unit_price,
                    line_total=i.line_total,
                    hold_expires_at=i.hold_expires_at,
                    available=i.available,
                )
                for i in view.items
            ],
            total_amount=view.total_amount,
            currency=view.currency,
        )


class CheckoutPublic(BaseModel):
    order_id: uuid.UUID
    status: str


router = APIRouter(prefix="/api/v1/cart", tags=["cart"])


@router.get("", response_model=CartPublic)
async def get_cart(ctx: Ctx, user: CurrentUser) -> CartPublic:
    """The caller's current cart (an empty open one is made on first use)."""
    return CartPublic.of(await operations.view_cart(ctx, user.id))


@router.post("/items", response_model=CartPublic)
async def add_item(ctx: Ctx, user: CurrentUser, body: CartItemCreate) -> CartPublic:
    """Add units of a product (grows an existing line) and hold them in the catalog."""
    return CartPublic.of(await operations.set_line(ctx, user.id, body.product_id, add=body.quantity))


@router.put("/items/{product_id}", response_model=CartPublic)
async def update_item(ctx: Ctx, user: CurrentUser, product_id: uuid.UUID, body: CartItemUpdate) -> CartPublic:
    """Set a line's quantity (the hold follows); 0 removes the line."""
    return CartPublic.of(await operations.set_line(ctx, user.id, product_id, quantity=body.quantity))


@router.delete("/items/{product_id}", response_model=CartPublic)
async def delete_item(ctx: Ctx, user: CurrentUser, product_id: uuid.UUID) -> CartPublic:
    """Remove a line and release its hold (removing an absent line changes nothing)."""
    return CartPublic.of(await operations.remove_line(ctx, user.id, product_id))


@router.post("/checkout", status_code=status.HTTP_202_ACCEPTED, response_model=CheckoutPublic)
async def checkout(
    ctx: Ctx,
    user: CurrentUser,
    body: CheckoutCreate,
    idempotency_key: Annotated[str | None, Header(alias=idempotency.HEADER)] = None,
) -> JSONBody:
    """Start the order for the cart's lines; the cart is read-only until it completes."""
    key = idempotency.parse_key(idempotency_key)
    request = None
    if key is not None:
        request = idempotency.IdempotentRequest(
            scope=CHECKOUT_SCOPE,
            user_id=user.id,
            key=key,
            fingerprint=idempotency.fingerprint(body.model_dump(mode="json"), secret=ctx.auth.secret),
        )
        async with db.autocommit(ctx.engine) as conn:
            if (hit := await STORE.replay(conn, request)) is not None:
                return hit.response()
    outcome = await operations.checkout(ctx, user.id, body.payment.model_dump(), remember=request, store=STORE)
    return JSONBody(outcome.body, status_code=outcome.status_code)
