"""Events produced by the orders service (the saga's orchestrator)."""

from __future__ import annotations

import uuid
from decimal import Decimal

from prost.contracts.catalog import StockLine
from prost.kit.messages import Event


class OrderPlaced(Event):
    """Catalog reserves every line or none. With `cart_id`, the cart's holds on these
    products become the order's reservation in the same transaction."""

    TYPE = "order.placed"
    order_id: uuid.UUID
    user_id: uuid.UUID
    cart_id: uuid.UUID | None = None
    lines: list[StockLine]
    total_amount: Decimal
    currency: str


class OrderConfirmed(Event):
    """Payment landed: catalog commits the reservation; the cart starts afresh."""

    TYPE = "order.confirmed"
    order_id: uuid.UUID
    user_id: uuid.UUID
    cart_id: uuid.UUID | None = None
    lines: list[StockLine]


class OrderCancelled(Event):
    """The order ended without a sale (`status` `cancelled` or `rejected`):
    catalog releases any reservation; the cart opens again."""

    TYPE = "order.cancelled"
    order_id: uuid.UUID
    user_id: uuid.UUID
    cart_id: uuid.UUID | None = None
    status: str
    reason: str
    lines: list[StockLine]


class PaymentRequested(Event):
    """Take payment. Catalog also extends the order's reservation while payment runs.
    `payment_token` is the provider's token for the card; no card number travels."""

    TYPE = "payment.requested"
    order_id: uuid.UUID
    user_id: uuid.UUID
    amount: Decimal
    currency: str
    payment_token: str
    idempotency_key: str


class PaymentRefundRequested(Event):
    """Compensation: give back a payment that landed after the order was cancelled."""

    TYPE = "payment.refund_requested"
    order_id: uuid.UUID
    payment_id: uuid.UUID | None = None
    reason: str
