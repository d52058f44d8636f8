"""Payments' rules: what a charge's outcome means, when to retry, what a refund may do.

No I/O here. A payment is one charge of one order, keyed by the idempotency key the
provider sees; its life::

    processing ──► succeeded ──► refunded        (refund requested after the sale)
        │
        └────────► failed (payment_declined | insufficient_funds | payment_error)

A payment leaves `processing` exactly once (conditional update), and only a
`succeeded` one can become `refunded`.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from prost.kit.settings import Settings

SERVICE = "payments"

PROCESSING, SUCCEEDED, FAILED, REFUNDED = "processing", "succeeded", "failed", "refunded"
STATUSES = (PROCESSING, SUCCEEDED, FAILED, REFUNDED)

PAYMENT_DECLINED = "payment_declined"
INSUFFICIENT_FUNDS = "insufficient_funds"
PAYMENT_ERROR = "payment_error"
FAILURE_REASONS = (PAYMENT_DECLINED, INSUFFICIENT_FUNDS, PAYMENT_ERROR)

MAX_AMOUNT = Decimal("9999999999.99")
"""The largest amount NUMERIC(12,2) holds."""


@dataclass(frozen=True, slots=True)
class Payment:
    id: uuid.UUID
    order_id: uuid.UUID
    user_id: uuid.UUID
    amount: Decimal
    currency: str
    status: str
    failure_reason: str | None
    idempotency_key: str
    card_token: str
    provider_charge_id: str | None
    provider_refund_id: str | None
    last4: str | None
    brand: str | None
    attempts: int
    refund_requested_at: datetime | None

    @property
    def is_settled(self) -> bool:
        """The charge has an outcome; asking the provider again changes nothing."""
        return self.status != PROCESSING


def provider_key(order_id: uuid.UUID) -> str:
    """The idempotency key of an order's one charge. Orders sends it in
    `payment.requested`; this is the fallback for a request that carries none."""
    return f"order-{order_id}-charge"


def refund_key(charge_key: str) -> str:
    """A refund's own idempotency key, derived from its charge's."""
    return f"refund-{charge_key}"


def request_problem(*, amount: Decimal, currency: str) -> str | None:
    """Why a `payment.requested` cannot be charged at all (None when it can)."""
    if not amount.is_finite() or amount < 0:
        return "amount must be a non-negative number"
    if amount > MAX_AMOUNT:
        return "amount is too large"
    if amount != amount.quantize(Decimal("0.01")):
        return "amount has more than two decimal places"
    if len(currency) != 3 or not currency.isascii() or not currency.isalpha() or not currency.isupper():
        return "currency must be a three-letter ISO code"
    return None


def failure_reason(decline_code: str | None) -> str:
    """The reason `payment.failed` carries for a provider's decline code."""
    if decline_code == INSUFFICIENT_FUNDS:
        return INSUFFICIENT_FUNDS
    if decline_code in ("card_declined", "expired_card"):
        return PAYMENT_DECLINED
    return PAYMENT_ERROR


class RefundAction(enum.Enum):
    """What a refund request does, given the payment's status."""

    REFUND = "refund"
    """Succeeded: give the money back."""
    DEFER = "defer"
    """Still processing: note the request; the refund follows as soon as the charge succeeds."""
    ALREADY_REFUNDED = "already_refunded"
    """Refunded before: nothing changes; `payment.refunded` is announced again, since
    orders retries its request until it hears that."""
    NOTHING_NOT_CHARGED = "not_charged"
    NOTHING_NO_PAYMENT = "no_payment"


def refund_action(status: str | None) -> RefundAction:
    if status is None:
        return RefundAction.NOTHING_NO_PAYMENT
    if status == SUCCEEDED:
        return RefundAction.REFUND
    if status == PROCESSING:
        return RefundAction.DEFER
    if status == REFUNDED:
        return RefundAction.ALREADY_REFUNDED
    return RefundAction.NOTHING_NOT_CHARGED


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How long payments waits for its provider, and how it retries provider errors.

    - `call_timeout`: one provider call that has not answered by then is given up
      (`payment_error`). It is longer than the payment step's timeout on purpose: a provider
      that never answers lets the saga time out first (order `cancelled`, `timeout`),
      and payments' own failure arrives late and changes nothing there.
    - Provider errors are retried with the same idempotency key after
      `base_delay × 2^(n-1)`, at most `max_attempts` calls in all, and only while the
      next call still starts within `budget` (half the payment step's timeout), leaving the
      other half for the successful call and the saga's next hops.
    """

    max_attempts: int
    base_delay: float
    budget: float
    call_timeout: float

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        step = settings.payment_step_timeout_seconds
        return cls(
            max_attempts=settings.payment_max_attempts,
            base_delay=settings.payment_retry_base_ms / 1000,
            budget=step / 2,
            call_timeout=settings.payment_provider_timeout_seconds or step * 1.5,
        )

    def delay_after(self, attempt: int, *, elapsed: float) -> float | None:
        """The pause before the next call once call number `attempt` failed with a
        provider error `elapsed` seconds after the first began; None: give up."""
        if attempt >= self.max_attempts:
            return None
        delay = self.base_delay * (1 << (attempt - 1))
        if elapsed + delay > self.budget:
            return None
        return delay

    @property
    def stalled_after(self) -> float:
        """A charge still `processing` this long after its last provider call began has
        nobody working on it (its handler crashed or its message was parked)."""
        return self.budget + self.call_timeout + 5.0
