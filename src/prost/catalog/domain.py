"""The catalog's rules, without I/O: what a price, a slug or a SKU may be, how
`available` is counted, and how an order's lines are matched against stock.

Errors (each with its contract code)::

    ProductNotFound        not_found            404
    UnknownCategory        validation_error     422   (a body names a category that does not exist)
    SkuTaken               conflict             409
    SlugTaken              conflict             409
    StockBelowReserved     conflict             409   (stock set below the units reserved)
    OutOfStock             insufficient_stock   409   (a hold cannot be placed or grown)
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from prost.kit.errors import Conflict, InsufficientStock, NotFound, ValidationFailed

CURRENCY: Final = "USD"
"""prost sells in one currency; carts and orders add prices without converting."""

MAX_PRICE: Final = Decimal("9999999999.99")  # NUMERIC(12,2)
MAX_STOCK: Final = 1_000_000_000  # well inside a PostgreSQL integer
MAX_HOLD_QUANTITY: Final = 100_000
MAX_TTL_SECONDS: Final = 7 * 24 * 3600
PAGE_SIZE_DEFAULT: Final = 20
PAGE_SIZE_MAX: Final = 100
Q_MAX_CHARS: Final = 100

SLUG = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
SLUG_MAX_CHARS: Final = 100
SKU = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
SKU_MAX_CHARS: Final = 64

SORTS: Final = ("name", "-name", "price", "-price", "created_at", "-created_at")


class ProductNotFound(NotFound):
    default_message = "no such product"


class UnknownCategory(ValidationFailed):
    default_message = "category_id: no such category"


class SkuTaken(Conflict):
    default_message = "a product with this SKU already exists"


class SlugTaken(Conflict):
    default_message = "a category with this slug already exists"


class StockBelowReserved(Conflict):
    default_message = "stock cannot be set below the units currently reserved"


class OutOfStock(InsufficientStock):
    default_message = "not enough stock available"


# -- values ------------------------------------------------------------------------


def parse_price(value: Any) -> Decimal:
    """A price: a decimal number (JSON string or number) with at most two places,
    not negative, finite, at most `MAX_PRICE`. Returns it with exactly two places.

    `"19.99"`, `19.99`, `"20"` and `"20.000"` are accepted; `"19.999"`, `-1`, `"abc"`,
    `"NaN"`, `"Infinity"`, `true` are refused with a `ValueError` naming the rule."""
    if isinstance(value, bool) or value is None:
        raise ValueError("must be a decimal number such as 19.99")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("must be a finite decimal number")
        value = repr(value)  # the shortest text that reads back as this float: 19.99, not 19.989999…
    if isinstance(value, str):
        text = value.strip()
        if not text or len(text) > 40:
            raise ValueError("must be a decimal number such as 19.99")
        try:
            number = Decimal(text)
        except InvalidOperation:
            raise ValueError("must be a decimal number such as 19.99") from None
    elif isinstance(value, int | Decimal):
        number = Decimal(value)
    else:
        raise ValueError("must be a decimal number such as 19.99")
    if not number.is_finite():
        raise ValueError("must be a finite decimal number")
    if number < 0:
        raise ValueError("must not be negative")
    if number > MAX_PRICE:
        raise ValueError(f"must not exceed {MAX_PRICE}")
    cents = number.quantize(Decimal("0.01"))
    if cents != number:
        raise ValueError("must have at most two decimal places")
    return cents


def check_slug(value: str) -> str:
    if not 1 <= len(value) <= SLUG_MAX_CHARS or not SLUG.match(value):
        raise ValueError(
            f"a slug is 1-{SLUG_MAX_CHARS} lower-case letters and digits in words joined by single hyphens, "
            "such as 'garden-tools'"
        )
    return value


def check_sku(value: str) -> str:
    value = value.strip()
    if not 1 <= len(value) <= SKU_MAX_CHARS or not SKU.match(value):
        raise ValueError(
            f"a SKU is 1-{SKU_MAX_CHARS} letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return value


def check_name(value: str) -> str:
    value = value.strip()
    if not value:
        raise ValueError("must not be empty")
    return value


def check_currency(value: str) -> str:
    if value != CURRENCY:
        raise ValueError(f"only {CURRENCY} is sold")
    return value


def normalize_query(q: str | None) -> str | None:
    """The search text, trimmed; None when there is nothing to search for."""
    if q is None:
        return None
    q = q.strip()
    return q or None


# -- inventory ---------------------------------------------------------------------


def available(*, stock: int, reserved: int, expired_reserved: int) -> int:
    """Units that can still be promised: on hand minus the reservations that are
    active and not yet past `expires_at` (`reserved` counts every active one)."""
    return max(0, stock - reserved + expired_reserved)


@dataclass(frozen=True, slots=True)
class StockState:
    """A product as seen under its row lock."""

    product_id: uuid.UUID
    stock: int
    reserved: int
    active: bool

    @property
    def free(self) -> int:
        return self.stock - self.reserved


@dataclass(frozen=True, slots=True)
class LinePlan:
    product_id: uuid.UUID
    quantity: int
    held: int
    """Units the cart already holds for this product (they become the order's)."""

    @property
    def extra(self) -> int:
        """Change of the product's `reserved` counter: more units, or fewer when the
        hold was larger than the line."""
        return self.quantity - self.held


@dataclass(frozen=True, slots=True)
class ShortLine:
    product_id: uuid.UUID
    requested: int
    available: int


def merge_lines(lines: Iterable[tuple[uuid.UUID, int]]) -> dict[uuid.UUID, int]:
    """One quantity per product (a repeated product is added up), in product id
    order: the order in which rows are locked everywhere."""
    merged: dict[uuid.UUID, int] = {}
    for product_id, quantity in lines:
        merged[product_id] = merged.get(product_id, 0) + quantity
    return {pid: merged[pid] for pid in sorted(merged)}


def plan_reservation(
    lines: Mapping[uuid.UUID, int],
    products: Mapping[uuid.UUID, StockState],
    held: Mapping[uuid.UUID, int],
) -> tuple[list[LinePlan], list[ShortLine]]:
    """Match an order against locked stock: all lines, or the list of short ones.

    A line can use the cart's live hold on its product plus the product's free units.
    An unknown or inactive product is short with nothing available."""
    plans: list[LinePlan] = []
    short: list[ShortLine] = []
    for product_id, quantity in lines.items():
        state = products.get(product_id)
        if state is None or not state.active:
            short.append(ShortLine(product_id, quantity, 0))
            continue
        mine = held.get(product_id, 0)
        if quantity - mine > state.free:
            short.append(ShortLine(product_id, quantity, max(0, state.free + mine)))
            continue
        plans.append(LinePlan(product_id, quantity, mine))
    return plans, short
