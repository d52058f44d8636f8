"""The cart's rules: quantities, what a line shows, how holds are reconciled, the saga.

No I/O here. The map:

- A user has one *current* cart: `open` (editable) or `checked_out` (read-only while
  its order runs). `ordered` carts are history.
- Every line has a lock, the cart's view of its hold in the catalog (`LockStatus`):

      pending ──(hold placed)──► active ──(TTL passes / catalog says expired)──► expired
         │                         │  ▲                                            │
         └──(no stock)──► unavailable  └──────────(any change, checkout)───────────┘
                                   │
                     checkout ──► converted (the order's reservation now)
                                   │
             order cancelled/rejected ──► pending (placed again by the re-hold loop)

- A checkout is a saga row (`SagaStatus`): `starting` (order id chosen, orders not
  yet known to have it) → `placed` → `confirmed` | `cancelled`; a `starting` row whose
  cart changed before it was retried is `superseded`. Final rows ignore every event.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum

from prost.kit.errors import Conflict, NotFound, ValidationFailed

MIN_QUANTITY = 1
MAX_QUANTITY = 1000
CENT = Decimal("0.01")


class CartStatus(StrEnum):
    OPEN = "open"
    CHECKED_OUT = "checked_out"
    ORDERED = "ordered"


class LockStatus(StrEnum):
    ACTIVE = "active"
    """Held in the catalog until `expires_at`."""
    EXPIRED = "expired"
    """The hold lapsed (or the catalog dropped it); `expires_at` says when."""
    PENDING = "pending"
    """No hold yet; the re-hold loop will try to place one (after a failed order)."""
    UNAVAILABLE = "unavailable"
    """No hold could be placed: not enough stock, or the product is gone."""
    CONVERTED = "converted"
    """Handed over to the order at checkout."""


class SagaStatus(StrEnum):
    STARTING = "starting"
    PLACED = "placed"
    CONFIRMED = "confirmed"
    CANCELLED = "cancelled"
    SUPERSEDED = "superseded"


LIVE_SAGA = (SagaStatus.STARTING, SagaStatus.PLACED)


# -- errors ---------------------------------------------------------------------------


class ProductNotFound(NotFound):
    default_message = "no such product, or it is not for sale"


class LineNotFound(NotFound):
    default_message = "this product is not in the cart"


class CartReadOnly(Conflict):
    default_message = "the cart is checked out and read-only until its order completes"


class CurrencyMismatch(Conflict):
    default_message = "a cart holds products of one currency"


class QuantityOutOfRange(ValidationFailed):
    default_message = f"a line holds {MIN_QUANTITY} to {MAX_QUANTITY} units"


class CartChanged(Conflict):
    default_message = "the cart changed during checkout; try again"


# -- values ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CartRecord:
    id: uuid.UUID
    user_id: uuid.UUID
    status: CartStatus
    currency: str

    @property
    def editable(self) -> bool:
        return self.status == CartStatus.OPEN


@dataclass(frozen=True, slots=True)
class Product:
    """What the catalog says about a product right now (a quote)."""

    product_id: uuid.UUID
    sku: str
    name: str
    price: Decimal
    currency: str
    active: bool = True
    available: int = 0


@dataclass(frozen=True, slots=True)
class Hold:
    """One hold as the catalog reports it."""

    product_id: uuid.UUID
    quantity: int
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class Line:
    """A cart line with its lock; `sku`, `name`, `unit_price` are as last seen."""

    product_id: uuid.UUID
    quantity: int
    sku: str
    name: str
    unit_price: Decimal
    currency: str
    lock_status: LockStatus | None
    lock_quantity: int
    expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class LineView:
    product_id: uuid.UUID
    sku: str
    name: str
    quantity: int
    unit_price: Decimal
    line_total: Decimal
    hold_expires_at: datetime | None
    available: bool


@dataclass(frozen=True, slots=True)
class CartView:
    id: uuid.UUID
    user_id: uuid.UUID
    status: CartStatus
    items: list[LineView]
    total_amount: Decimal
    currency: str


@dataclass(frozen=True, slots=True)
class SagaRecord:
    id: uuid.UUID
    cart_id: uuid.UUID
    order_id: uuid.UUID
    user_id: uuid.UUID
    status: SagaStatus
    lines: list[dict[str, object]]


# -- quantities -----------------------------------------------------------------------


def check_quantity(quantity: int) -> int:
    if not MIN_QUANTITY <= quantity <= MAX_QUANTITY:
        raise QuantityOutOfRange()
    return quantity


def quantity_after_adding(current: int, added: int) -> int:
    """Adding to an existing line grows it; the line stays within 1–1000."""
    check_quantity(added)
    return check_quantity(current + added)


def check_editable(cart: CartRecord) -> None:
    if not cart.editable:
        raise CartReadOnly()


def check_currency(cart_currency: str, lines: Sequence[Line], product: Product) -> None:
    """The first line decides the cart's currency; later ones must match it."""
    others = [line for line in lines if line.product_id != product.product_id]
    if others and product.currency != cart_currency:
        raise CurrencyMismatch(f"this cart is in {cart_currency}; the product is priced in {product.currency}")


def money(amount: Decimal) -> Decimal:
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)


# -- what the client sees -------------------------------------------------------------


def hold_expires_at(line: Line) -> datetime | None:
    """The expiry of the line's hold: in the past when it lapsed; None when there is none."""
    if line.lock_status in (LockStatus.ACTIVE, LockStatus.EXPIRED, LockStatus.CONVERTED):
        return line.expires_at
    return None


def is_held(line: Line, now: datetime) -> bool:
    if line.lock_status == LockStatus.CONVERTED:
        return True
    return line.lock_status == LockStatus.ACTIVE and line.expires_at is not None and line.expires_at > now


def line_available(line: Line, product: Product | None, now: datetime) -> bool:
    """Can this line be bought as it is? Held lines can; others if stock allows now.

    Without a quote (`product` None) only a held line counts as available."""
    if is_held(line, now):
        return True
    return product is not None and product.active and product.available >= line.quantity


def present(cart: CartRecord, lines: Sequence[Line], quotes: Mapping[uuid.UUID, Product], now: datetime) -> CartView:
    """The cart as the API shows it, priced at the catalog's current prices.

    A line the quote does not cover (the catalog forgot the product, or could not be
    asked right after a change) keeps the price last seen."""
    items: list[LineView] = []
    total = Decimal(0)
    for line in lines:
        product = quotes.get(line.product_id)
        price = product.price if product is not None else line.unit_price
        line_total = money(price * line.quantity)
        total += line_total
        items.append(
            LineView(
                product_id=line.product_id,
                sku=product.sku if product is not None else line.sku,
                name=product.name if product is not None else line.name,
                quantity=line.quantity,
                unit_price=money(price),
                line_total=line_total,
                hold_expires_at=hold_expires_at(line),
                available=line_available(line, product, now),
            )
        )
    return CartView(
        id=cart.id,
        user_id=cart.user_id,
        status=cart.status,
        items=items,
        total_amount=money(total),
        currency=cart.currency,
    )


# -- checkout -------------------------------------------------------------------------


def order_lines(lines: Iterable[Line]) -> list[dict[str, object]]:
    """The lines an order is started with, in a stable order (it is compared on retry)."""
    return [
        {"product_id": str(line.product_id), "quantity": line.quantity}
        for line in sorted(lines, key=lambda x: x.product_id)
    ]


@dataclass(frozen=True, slots=True)
class HoldPlan:
    """What to ask the catalog so its holds match the cart's lines exactly."""

    place: list[Line]
    release: list[uuid.UUID]


def reconcile(lines: Sequence[Line], holds: Sequence[Hold]) -> HoldPlan:
    """Lines without a hold of exactly their quantity get one (a lapsed hold is placed
    again); holds on products no longer in the cart (left behind by a compensation
    that could not run) are released."""
    by_product = {hold.product_id: hold for hold in holds}
    wanted = {line.product_id for line in lines}
    place = [line for line in lines if (h := by_product.get(line.product_id)) is None or h.quantity != line.quantity]
    release = sorted(pid for pid in by_product if pid not in wanted)
    return HoldPlan(place=place, release=release)


def reusable_order_id(saga: SagaRecord | None, lines: Sequence[Line]) -> uuid.UUID | None:
    """A `starting` checkout of exactly these lines is retried under its order id, so
    orders (idempotent on the id) makes one order however often it is asked."""
    if saga is not None and saga.status == SagaStatus.STARTING and saga.lines == order_lines(lines):
        return saga.order_id
    return None


# -- the cart's saga ------------------------------------------------------------------


def takes_order_events(status: SagaStatus) -> bool:
    """A checkout still in flight follows its order; a finished one changes no more.

    `starting` counts: orders may have accepted the order even though its answer was
    lost (timeout), and then the order's own events decide."""
    return status in LIVE_SAGA
