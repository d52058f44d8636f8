"""Events produced by the payments service."""

from __future__ import annotations

import uuid
from decimal import Decimal

from prost.kit.messages import Event


class PaymentProcessed(Event):
    TYPE = "payment.processed"
    order_id: uuid.UUID
    payment_id: uuid.UUID
    amount: Decimal
    currency: str
    last4: str
    brand: str


class PaymentFailed(Event):
    """`reason`: `payment_declined`, `insufficient_funds` or `payment_error`."""

    TYPE = "payment.failed"
    order_id: uuid.UUID
    payment_id: uuid.UUID
    reason: str


class PaymentRefunded(Event):
    TYPE = "payment.refunded"
    order_id: uuid.UUID
    payment_id: uuid.UUID
    amount: Decimal
    currency: str
