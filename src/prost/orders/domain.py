"""Orders' rules that need no I/O: pricing an order from a catalog quote, the errors
with their contract codes, and the public shape of an order.

Prices and names come from the catalog at order time, never from the client: a
request's `unit_price`, `total_amount` or `status` are not even read.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from prost.kit.errors import Conflict, NotFound, ValidationFailed

CENT = Decimal("0.01")
MAX_LINES = 100
MAX_QUANTITY = 1000


class OrderNotFound(NotFound):
    default_message = "order not found"


class OrderNotCancellable(Conflict):
    """The order is already final (confirmed, rejected or cancelled)."""

    default_message = "the order can no longer be cancelled"


class OrderIdTaken(Conflict):
    default_message = "this order id belongs to another order"


class UnknownProducts(ValidationFailed):
    default_message = "unknown or inactive product"


class MixedCurrencies(ValidationFailed):
    default_message = "all products of one order must have the same currency"


def money(amount: Decimal) -> str:
    """A decimal string with two places: `Decimal("5")` → `"5.00"`."""
    return str(amount.quantize(CENT))


@dataclass(frozen=True, slots=True)
class OrderLine:
    product_id: uuid.UUID
    sku: str
    name: str
    quantity: int
    unit_price: Decimal

    @property
    def line_total(self) -> Decimal:
        return (self.unit_price * self.quantity).quantize(CENT)


@dataclass(frozen=True, slots=True)
class PricedOrder:
    lines: tuple[OrderLine, ...]
    total_amount: Decimal
    currency: str


def price_order(items: Sequence[tuple[uuid.UUID, int]], quote: Iterable[Mapping[str, Any]]) -> PricedOrder:
    """Price the requested `(product_id, quantity)` lines from the catalog's quote
    (`{product_id, sku, name, price, currency, active, available}` per known product).

    An unknown or inactive product is a 422 naming the products; so are products in
    different currencies. Stock is NOT checked here: the saga reserves it, all lines
    or none, and rejects the order (`out_of_stock`) when it cannot.
    """
    by_id: dict[uuid.UUID, Mapping[str, Any]] = {}
    for entry in quote:
        try:
            by_id[uuid.UUID(str(entry["product_id"]))] = entry
        except (KeyError, ValueError):
            continue
    missing = [pid for pid, _ in items if pid not in by_id or not by_id[pid].get("active", False)]
    if missing:
        names = ", ".join(str(pid) for pid in missing)
        raise UnknownProducts(
            f"unknown or inactive product: {names}",
            details=[
                {"loc": ["items", str(i)], "msg": "unknown or inactive product", "type": "unknown_product"}
                for i, (pid, _) in enumerate(items)
                if pid in missing
            ],
        )
    lines = []
    for pid, quantity in items:
        entry = by_id[pid]
        try:
            price = Decimal(str(entry["price"])).quantize(CENT)
        except (KeyError, InvalidOperation) as exc:
            raise UnknownProducts(f"product {pid} has no valid price") from exc
        lines.append(
            OrderLine(
                product_id=pid,
                sku=str(entry.get("sku", "")),
                name=str(entry.get("name", "")),
                quantity=quantity,
                unit_price=price,
            )
        )
    currencies = {str(by_id[pid].get("currency", "USD")) for pid, _ in items}
    if len(currencies) > 1:
        raise MixedCurrencies()
    total = sum((line.line_total for line in lines), Decimal("0.00")).quantize(CENT)
    return PricedOrder(lines=tuple(lines), total_amount=total, currency=currencies.pop())


def order_public(order: Mapping[str, Any], items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The public JSON of an order (API.md): `{id, user_id, status, failure_reason,
    items: [{product_id, sku, name, quantity, unit_price, line_total}], total_amount,
    currency, created_at, updated_at}`."""
    return {
        "id": str(order["id"]),
        "user_id": str(order["user_id"]),
        "status": order["status"],
        "failure_reason": order["failure_reason"],
        "items": [
            {
                "product_id": str(item["product_id"]),
                "sku": item["sku"],
                "name": item["name"],
                "quantity": item["quantity"],
                "unit_price": money(item["unit_price"]),
                "line_total": money(item["line_total"]),
            }
            for item in items
        ],
        "total_amount": money(order["total_amount"]),
        "currency": order["currency"],
        "created_at": iso(order["created_at"]),
        "updated_at": iso(order["updated_at"]),
    }


def iso(value: datetime) -> str:
    """ISO 8601 in UTC with a `Z`, as every prost service writes times."""
    return value.isoformat().replace("+00:00", "Z")
