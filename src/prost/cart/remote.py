"""The cart's view of the two services it calls: the catalog's holds and quotes, and
the orders service's internal order creation (agreements in docs/design.md).

Calls go through `kit.clients` (timeouts; an unreachable peer is `Unavailable`, 503;
a peer's contract error comes back as the same error). Answers are parsed here, so a
malformed one is `Unavailable` too rather than a crash further in.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from prost.cart.domain import Hold, Product, ProductNotFound
from prost.kit import errors
from prost.kit.clients import ServiceClient


class _Answer(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _HoldOut(_Answer):
    product_id: uuid.UUID
    quantity: int
    expires_at: datetime


class _Holds(_Answer):
    holds: list[_HoldOut]


class _ProductOut(_Answer):
    id: uuid.UUID
    sku: str
    name: str
    price: Decimal
    currency: str = "USD"
    active: bool = True
    available: int = 0


class _HoldSet(_HoldOut):
    product: _ProductOut


class _QuoteItem(_Answer):
    product_id: uuid.UUID
    sku: str
    name: str
    price: Decimal
    currency: str = "USD"
    active: bool = True
    available: int = 0


class _Quote(_Answer):
    items: list[_QuoteItem]


class _OrderOut(_Answer):
    id: uuid.UUID
    status: str


M = TypeVar("M", bound=BaseModel)


def _parse(model: type[M], body: Any, what: str) -> M:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise errors.Unavailable(f"{what}: unexpected answer") from exc


class Catalog:
    """The catalog's internal holds API, for one cart at a time."""

    def __init__(self, client: ServiceClient, *, ttl_seconds: int) -> None:
        self._client = client
        self._ttl = ttl_seconds

    async def set_hold(self, cart_id: uuid.UUID, product_id: uuid.UUID, quantity: int) -> tuple[Hold, Product]:
        """Hold exactly `quantity` units for the cart (place, grow or shrink).

        Raises `InsufficientStock` (nothing changed) or `ProductNotFound`."""
        try:
            body = await self._client.put(
                f"/internal/catalog/holds/{cart_id}/{product_id}", json={"quantity": quantity, "ttl_seconds": self._ttl}
            )
        except errors.NotFound as exc:
            raise ProductNotFound() from exc
        out = _parse(_HoldSet, body, "catalog hold")
        p = out.product
        product = Product(
            product_id=p.id,
            sku=p.sku,
            name=p.name,
            price=p.price,
            currency=p.currency,
            active=p.active,
            available=p.available,
        )
        return Hold(product_id=out.product_id, quantity=out.quantity, expires_at=out.expires_at), product

    async def release_hold(self, cart_id: uuid.UUID, product_id: uuid.UUID) -> None:
        """Idempotent: releasing a hold that is not there is fine."""
        try:
            await self._client.delete(f"/internal/catalog/holds/{cart_id}/{product_id}")
        except errors.NotFound:
            return

    async def restore_hold(self, cart_id: uuid.UUID, product_id: uuid.UUID, quantity: int) -> None:
        """Put a hold back to what it was before a change that could not be recorded."""
        if quantity > 0:
            await self.set_hold(cart_id, product_id, quantity)
        else:
            await self.release_hold(cart_id, product_id)

    async def extend_holds(self, cart_id: uuid.UUID) -> list[Hold]:
        """Extend every active hold of the cart; returns them (the catalog's truth)."""
        body = await self._client.post(f"/internal/catalog/holds/{cart_id}/extend", json={"ttl_seconds": self._ttl})
        return [
            Hold(product_id=h.product_id, quantity=h.quantity, expires_at=h.expires_at)
            for h in _parse(_Holds, body, "catalog holds").holds
        ]

    async def quote(self, product_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, Product]:
        """Current prices and availability; unknown products are simply absent."""
        ids = sorted({str(pid) for pid in product_ids})
        if not ids:
            return {}
        body = await self._client.post("/internal/catalog/quote", json={"product_ids": ids})
        return {
            q.product_id: Product(
                product_id=q.product_id,
                sku=q.sku,
                name=q.name,
                price=q.price,
                currency=q.currency,
                active=q.active,
                available=q.available,
            )
            for q in _parse(_Quote, body, "catalog quote").items
        }


class Orders:
    """The orders service's internal API: start an order for a checked-out cart."""

    def __init__(self, client: ServiceClient) -> None:
        self._client = client

    async def place(
        self,
        *,
        order_id: uuid.UUID,
        user_id: uuid.UUID,
        cart_id: uuid.UUID,
        items: Sequence[Mapping[str, object]],
        payment: Mapping[str, Any],
    ) -> str:
        """Idempotent on `order_id`: the same id returns the existing order. Returns its status."""
        body = await self._client.post(
            "/internal/orders",
            json={
                "order_id": str(order_id),
                "user_id": str(user_id),
                "cart_id": str(cart_id),
                "items": list(items),
                "payment": dict(payment),
            },
        )
        order = _parse(_OrderOut, body, "orders")
        if order.id != order_id:
            raise errors.Unavailable("orders answered for another order")
        return order.status
