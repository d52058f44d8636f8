"""The place-order saga, orchestrated by orders: a pure state machine (no I/O).

The saga, top to bottom, each step beside its compensation::

    step                 sends               answered by                   compensation (sent / acknowledged by)
    ───────────────────  ──────────────────  ────────────────────────────  ─────────────────────────────────────────
    1 reserve stock      order.placed        stock.reserved                release stock   order.cancelled / stock.released
                                             stock.reservation_failed      (nothing held: the order is REJECTED)
    2 take payment       payment.requested   payment.processed             refund payment  payment.refund_requested /
                                             payment.failed                                payment.refunded
    3 confirm            order.confirmed     (catalog commits the stock; the cart starts afresh)

`decide(saga, message, now=..., policy=...)` is the whole logic: given the saga as it
stands and one message (an event from the bus, a user's cancel, or "the deadline
passed"), it returns the saga as it must become (including the state of each
compensation: requested, acknowledged, abandoned) and the commands to carry out
(events to send, compensations to log and send, the orders' view of the
reservation). The repository applies a decision in ONE transaction holding the saga
row's lock, so a user's cancel racing a saga event, or two replicas, see one order
of events; the version counts applied transitions.

Rules that hold in every state, because events arrive at least once and in any order:
- a duplicate or stale message changes nothing (`Decision.changed` is False);
- a reservation that shows up after a cancellation is freed by the release already
  under way (the catalog never reserves after a release); a payment that lands for
  an order that will not be sold is refunded;
- a compensation is logged before it is sent and sent again, with growing delays,
  until its acknowledgement arrives (after `policy.max_attempts` it is abandoned
  and reported: the saga then reads `failed`);
- a step that passes its deadline (`policy.step_timeout`; the payment step
  `policy.payment_timeout`, shorter) is compensated (`timeout`).

Saga steps (`saga_states.step`) and the order's status::

    reserving_stock ──stock.reserved──► processing_payment ──payment.processed──► confirmed
        │  pending                          │  stock_reserved                        confirmed (final)
        │                                   │
        ├─reservation_failed─► rejected     ├─payment.failed / cancel / timeout / reservation expired
        │  rejected, out_of_stock (final)   ▼
        └─cancel / timeout ───────────► compensating ──all acknowledged──► compensated
                                           cancelled (final for the order)
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Final

from prost.contracts.catalog import StockLine, StockReleased, StockReservationFailed, StockReserved
from prost.contracts.orders import OrderCancelled, OrderConfirmed, OrderPlaced, PaymentRefundRequested, PaymentRequested
from prost.contracts.payments import PaymentFailed, PaymentProcessed, PaymentRefunded
from prost.kit.messages import Event
from prost.kit.settings import Settings
from prost.orders.domain import OrderNotCancellable

# -- vocabulary ------------------------------------------------------------------------


class Step(StrEnum):
    RESERVING_STOCK = "reserving_stock"
    PROCESSING_PAYMENT = "processing_payment"
    CONFIRMED = "confirmed"
    REJECTED = "rejected"
    COMPENSATING = "compensating"
    COMPENSATED = "compensated"


RUNNING_STEPS: Final = frozenset({Step.RESERVING_STOCK, Step.PROCESSING_PAYMENT})


class OrderStatus(StrEnum):
    PENDING = "pending"
    STOCK_RESERVED = "stock_reserved"
    CONFIRMED = "confirmed"
    REJECTED = "rejected"
    CANCELLED = "cancelled"


FINAL_STATUSES: Final = frozenset({OrderStatus.CONFIRMED, OrderStatus.REJECTED, OrderStatus.CANCELLED})


class Reason(StrEnum):
    PAYMENT_DECLINED = "payment_declined"
    INSUFFICIENT_FUNDS = "insufficient_funds"
    PAYMENT_ERROR = "payment_error"
    TIMEOUT = "timeout"
    CANCELLED_BY_USER = "cancelled_by_user"
    RESERVATION_EXPIRED = "reservation_expired"
    OUT_OF_STOCK = "out_of_stock"


PAYMENT_FAILURES: Final = frozenset({Reason.PAYMENT_DECLINED, Reason.INSUFFICIENT_FUNDS, Reason.PAYMENT_ERROR})


class Action(StrEnum):
    """Compensations, each the undoing of one step."""

    RELEASE_STOCK = "release_stock"  # undoes step 1
    REFUND_PAYMENT = "refund_payment"  # undoes step 2


# Names of the steps in the log GET /orders/{id}/saga shows, and their statuses.
PLACE_ORDER, RESERVE_STOCK, PROCESS_PAYMENT, CONFIRM_ORDER = (
    "place_order",
    "reserve_stock",
    "process_payment",
    "confirm_order",
)
RUNNING, COMPLETED, FAILED, CANCELLED, TIMED_OUT, EXPIRED = (
    "running",
    "completed",
    "failed",
    "cancelled",
    "timed_out",
    "expired",
)
REQUESTED, ACKNOWLEDGED, ABANDONED = "requested", "acknowledged", "abandoned"


@dataclass(frozen=True, slots=True)
class Policy:
    step_timeout: timedelta = timedelta(seconds=30)
    payment_timeout: timedelta = timedelta(seconds=3)
    """The payment step's deadline (`Settings.payment_step_timeout_seconds`)."""
    retry_base: timedelta = timedelta(seconds=30)
    """First delay before an unacknowledged compensation is sent again; doubles."""
    retry_cap: timedelta = timedelta(minutes=5)
    max_attempts: int = 12

    @classmethod
    def from_settings(cls, settings: Settings) -> Policy:
        # A compensation gets as long as a step before it is sent again.
        timeout = timedelta(seconds=settings.saga_step_timeout_seconds)
        payment = timedelta(seconds=settings.payment_step_timeout_seconds)
        return cls(step_timeout=timeout, payment_timeout=payment, retry_base=timeout)

    def retry_delay(self, attempts: int) -> timedelta:
        delay: timedelta = self.retry_base * (2 ** max(0, attempts - 1))
        return min(delay, self.retry_cap)


# -- state -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StepRecord:
    name: str
    status: str
    at: datetime


@dataclass(frozen=True, slots=True)
class Compensation:
    action: Action
    status: str  # requested | acknowledged | abandoned
    reason: str
    attempts: int
    at: datetime  # of the last change


@dataclass(frozen=True, slots=True)
class Saga:
    order_id: uuid.UUID
    user_id: uuid.UUID
    cart_id: uuid.UUID | None
    lines: tuple[StockLine, ...]
    amount: Decimal
    currency: str
    payment_token: str
    step: Step
    order_status: OrderStatus
    failure_reason: Reason | None
    version: int
    deadline: datetime | None
    steps: tuple[StepRecord, ...]
    compensations: Mapping[Action, Compensation] = field(default_factory=dict)
    payment_id: uuid.UUID | None = None
    reservation_expires_at: datetime | None = None

    @property
    def status(self) -> str:
        """The saga's own status: running, completed, compensating, compensated or failed."""
        if self.step in RUNNING_STEPS:
            return "running"
        if self.step is Step.CONFIRMED:
            return "completed"
        if self.step is Step.COMPENSATING:
            return "compensating"
        if any(c.status == ABANDONED for c in self.compensations.values()):
            return "failed"
        if self.step is Step.REJECTED:
            return "failed"
        return "compensated"

    def compensation(self, action: Action) -> Compensation | None:
        return self.compensations.get(action)


# -- what a decision asks for ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    """Write this event to the outbox (correlation id: the order)."""

    event: Event


@dataclass(frozen=True, slots=True)
class Compensate:
    """Log the compensation (`saga.compensations[action]` says how), then send its event."""

    action: Action
    event: Event


@dataclass(frozen=True, slots=True)
class TrackReservation:
    """Keep the orders' view of the catalog's reservation for this order."""

    status: str  # reserved | committed (the order was confirmed) | released
    lines: tuple[StockLine, ...] = ()
    expires_at: datetime | None = None


Command = Send | Compensate | TrackReservation


@dataclass(frozen=True, slots=True)
class Decision:
    saga: Saga
    commands: tuple[Command, ...] = ()
    changed: bool = True
    note: str = ""

    @classmethod
    def nothing(cls, saga: Saga, note: str) -> Decision:
        return cls(saga=saga, commands=(), changed=False, note=note)


# -- inputs that are not events -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CancelRequested:
    """The owner (or an admin) cancels the order."""


@dataclass(frozen=True, slots=True)
class DeadlinePassed:
    """The reconciler found the saga's deadline in the past."""


Message = (
    StockReserved
    | StockReservationFailed
    | StockReleased
    | PaymentProcessed
    | PaymentFailed
    | PaymentRefunded
    | CancelRequested
    | DeadlinePassed
)


# -- the saga ----------------------------------------------------------------------------


def start(
    *,
    order_id: uuid.UUID,
    user_id: uuid.UUID,
    cart_id: uuid.UUID | None,
    lines: tuple[StockLine, ...],
    amount: Decimal,
    currency: str,
    payment_token: str,
    now: datetime,
    policy: Policy,
) -> Decision:
    """The order is placed: step 1 begins, `order.placed` asks the catalog to reserve."""
    saga = Saga(
        order_id=order_id,
        user_id=user_id,
        cart_id=cart_id,
        lines=lines,
        amount=amount,
        currency=currency,
        payment_token=payment_token,
        step=Step.RESERVING_STOCK,
        order_status=OrderStatus.PENDING,
        failure_reason=None,
        version=1,
        deadline=now + policy.step_timeout,
        steps=(StepRecord(PLACE_ORDER, COMPLETED, now), StepRecord(RESERVE_STOCK, RUNNING, now)),
    )
    placed = OrderPlaced(
        order_id=order_id, user_id=user_id, cart_id=cart_id, lines=list(lines), total_amount=amount, currency=currency
    )
    return Decision(saga=saga, commands=(Send(placed),))


def decide(saga: Saga, message: Message, *, now: datetime, policy: Policy) -> Decision:
    """The next state of `saga` and what to do, for one message. Pure."""
    match message:
        case StockReserved():
            return on_stock_reserved(saga, message, now=now, policy=policy)
        case StockReservationFailed():
            return on_stock_reservation_failed(saga, message, now=now, policy=policy)
        case StockReleased():
            return on_stock_released(saga, message, now=now, policy=policy)
        case PaymentProcessed():
            return on_payment_processed(saga, message, now=now, policy=policy)
        case PaymentFailed():
            return on_payment_failed(saga, message, now=now, policy=policy)
        case PaymentRefunded():
            return on_payment_refunded(saga, message, now=now, policy=policy)
        case CancelRequested():
            return on_cancel_requested(saga, now=now, policy=policy)
        case DeadlinePassed():
            return on_deadline_passed(saga, now=now, policy=policy)
    raise TypeError(f"not a saga message: {type(message).__name__}")  # pragma: no cover


# Step 1: reserve stock ──────────────────────────────────────────────────────────────────


def on_stock_reserved(saga: Saga, event: StockReserved, *, now: datetime, policy: Policy) -> Decision:
    """Every line is reserved: step 2 begins, `payment.requested` (the catalog extends
    the reservation when it sees it).

    The order may have been cancelled before this answer arrived. The catalog handles
    one order's events one at a time and never reserves after a release, so this
    reservation is the one the pending release frees (its `stock.released` is the
    acknowledgement still awaited), or one a release already freed: nothing to send.
    After a rejection (the catalog said it reserved nothing) it would be a participant
    gone wrong: release it."""
    if saga.step is Step.RESERVING_STOCK:
        lines = tuple(event.lines) or saga.lines
        new = _advance(
            saga,
            step=Step.PROCESSING_PAYMENT,
            status=OrderStatus.STOCK_RESERVED,
            deadline=now + policy.payment_timeout,
            log=((RESERVE_STOCK, COMPLETED), (PROCESS_PAYMENT, RUNNING)),
            now=now,
            reservation_expires_at=event.expires_at,
        )
        request = PaymentRequested(
            order_id=saga.order_id,
            user_id=saga.user_id,
            amount=saga.amount,
            currency=saga.currency,
            payment_token=saga.payment_token,
            idempotency_key=charge_key(saga.order_id),
        )
        return Decision(new, (TrackReservation("reserved", lines, event.expires_at), Send(request)))
    if saga.step in (Step.PROCESSING_PAYMENT, Step.CONFIRMED):
        return Decision.nothing(saga, "stock already reserved")
    tracked = TrackReservation("reserved", tuple(event.lines), event.expires_at)
    release = saga.compensation(Action.RELEASE_STOCK)
    if release is not None and release.status == REQUESTED:
        return Decision(saga, (tracked,), note="reserved before the pending release")
    if release is not None:
        return Decision.nothing(saga, "reserved before the release that already freed it")
    new, commands = _compensate(saga, Action.RELEASE_STOCK, now=now, policy=policy, again=True)
    return Decision(new, (tracked, *commands))


def on_stock_reservation_failed(
    saga: Saga, event: StockReservationFailed, *, now: datetime, policy: Policy
) -> Decision:
    """Not enough stock for every line (the catalog reserved none): REJECTED."""
    if saga.step is Step.RESERVING_STOCK:
        new = _advance(
            saga,
            step=Step.REJECTED,
            status=OrderStatus.REJECTED,
            reason=Reason.OUT_OF_STOCK,
            deadline=None,
            log=((RESERVE_STOCK, FAILED),),
            now=now,
        )
        return Decision(new, (Send(_cancelled_event(new)),))
    if _waiting_for(saga, Action.RELEASE_STOCK):
        # Cancelled before the catalog answered, and it reserved nothing: nothing to release.
        return _acknowledge(saga, Action.RELEASE_STOCK, now=now, policy=policy)
    return Decision.nothing(saga, "reservation failure for an order past that step")


def on_stock_released(saga: Saga, event: StockReleased, *, now: datetime, policy: Policy) -> Decision:
    """The catalog released this order's reservation: the acknowledgement of "release
    stock"; or, while the saga still runs, the reservation expired under it."""
    if event.kind != "order":
        return Decision.nothing(saga, "not an order reservation")
    if saga.step in RUNNING_STEPS:
        new, commands = _fail(saga, Reason.RESERVATION_EXPIRED, EXPIRED, now=now, policy=policy, released=True)
        return Decision(new, (TrackReservation("released"), *commands))
    if _waiting_for(saga, Action.RELEASE_STOCK):
        decision = _acknowledge(saga, Action.RELEASE_STOCK, now=now, policy=policy)
        return replace(decision, commands=(TrackReservation("released"), *decision.commands))
    return Decision.nothing(saga, "stock released after the saga had no use for it")


# Step 2: take payment ───────────────────────────────────────────────────────────────────


def on_payment_processed(saga: Saga, event: PaymentProcessed, *, now: datetime, policy: Policy) -> Decision:
    """Payment landed: step 3, CONFIRMED, `order.confirmed`. If the order was cancelled
    meanwhile (timeout, the user, a failure), the money goes back: refund."""
    if saga.step is Step.PROCESSING_PAYMENT:
        new = _advance(
            saga,
            step=Step.CONFIRMED,
            status=OrderStatus.CONFIRMED,
            deadline=None,
            log=((PROCESS_PAYMENT, COMPLETED), (CONFIRM_ORDER, COMPLETED)),
            now=now,
            payment_id=event.payment_id,
        )
        confirmed = OrderConfirmed(
            order_id=saga.order_id, user_id=saga.user_id, cart_id=saga.cart_id, lines=list(saga.lines)
        )
        return Decision(new, (TrackReservation("committed"), Send(confirmed)))
    if saga.step is Step.CONFIRMED or saga.step is Step.RESERVING_STOCK:
        return Decision.nothing(
            saga, "payment already taken" if saga.step is Step.CONFIRMED else "payment not requested yet"
        )
    if saga.compensation(Action.REFUND_PAYMENT) is not None:
        return Decision.nothing(saga, "refund already requested")
    # rejected, compensating, compensated: a late payment for an order that is not sold.
    with_payment = replace(saga, payment_id=event.payment_id)
    new, commands = _compensate(with_payment, Action.REFUND_PAYMENT, now=now, policy=policy)
    return Decision(new, commands)


def on_payment_failed(saga: Saga, event: PaymentFailed, *, now: datetime, policy: Policy) -> Decision:
    """The charge failed: compensate step 1 (release stock); CANCELLED with the reason."""
    if saga.step is not Step.PROCESSING_PAYMENT:
        return Decision.nothing(saga, "payment failure for an order not waiting for payment")
    reason = Reason(event.reason) if event.reason in PAYMENT_FAILURES else Reason.PAYMENT_ERROR
    new, commands = _fail(saga, reason, FAILED, now=now, policy=policy)
    return Decision(new, commands)


def on_payment_refunded(saga: Saga, event: PaymentRefunded, *, now: datetime, policy: Policy) -> Decision:
    """The acknowledgement of "refund payment"."""
    if _waiting_for(saga, Action.REFUND_PAYMENT):
        return _acknowledge(saga, Action.REFUND_PAYMENT, now=now, policy=policy)
    return Decision.nothing(saga, "no refund outstanding")


# Whatever the step ───────────────────────────────────────────────────────────────────────


def on_cancel_requested(saga: Saga, *, now: datetime, policy: Policy) -> Decision:
    """The user cancels: allowed until the order is final (else 409)."""
    if saga.step not in RUNNING_STEPS:
        raise OrderNotCancellable(f"the order is already {saga.order_status.value}")
    new, commands = _fail(saga, Reason.CANCELLED_BY_USER, CANCELLED, now=now, policy=policy)
    return Decision(new, commands)


def on_deadline_passed(saga: Saga, *, now: datetime, policy: Policy) -> Decision:
    """A running step past its deadline is compensated (`timeout`); unacknowledged
    compensations are sent again (or, after `max_attempts`, abandoned)."""
    if saga.deadline is None or now < saga.deadline:
        return Decision.nothing(saga, "not due")
    if saga.step in RUNNING_STEPS:
        timed_out, sent = _fail(saga, Reason.TIMEOUT, TIMED_OUT, now=now, policy=policy)
        return Decision(timed_out, sent)
    outstanding = [c for c in saga.compensations.values() if c.status == REQUESTED]
    if not outstanding:
        return Decision(replace(saga, deadline=None, version=saga.version + 1), ())
    new = saga
    commands: list[Command] = []
    for comp in outstanding:
        if comp.attempts >= policy.max_attempts:
            abandoned = replace(comp, status=ABANDONED, at=now)
            new = replace(new, compensations={**new.compensations, comp.action: abandoned})
            continue
        new, more = _compensate(new, comp.action, now=now, policy=policy, again=True, bump=False)
        commands.extend(more)
    new = _settle(replace(new, version=saga.version + 1), now=now, policy=policy)
    return Decision(new, tuple(commands))


# -- helpers -----------------------------------------------------------------------------


def charge_key(order_id: uuid.UUID) -> str:
    """The idempotency key of the order's one charge: a retried charge is never taken twice."""
    return f"order-{order_id}-charge"


def _advance(
    saga: Saga,
    *,
    step: Step,
    status: OrderStatus,
    deadline: datetime | None,
    log: tuple[tuple[str, str], ...],
    now: datetime,
    reason: Reason | None = None,
    payment_id: uuid.UUID | None = None,
    reservation_expires_at: datetime | None = None,
) -> Saga:
    return replace(
        saga,
        step=step,
        order_status=status,
        failure_reason=reason if reason is not None else saga.failure_reason,
        deadline=deadline,
        version=saga.version + 1,
        steps=_log(saga.steps, log, now),
        payment_id=payment_id if payment_id is not None else saga.payment_id,
        reservation_expires_at=reservation_expires_at or saga.reservation_expires_at,
    )


def _log(steps: tuple[StepRecord, ...], changes: tuple[tuple[str, str], ...], now: datetime) -> tuple[StepRecord, ...]:
    """Set each named step's status (appending the step the first time it is seen)."""
    records = list(steps)
    for name, status in changes:
        for i, record in enumerate(records):
            if record.name == name:
                records[i] = StepRecord(name, status, now)
                break
        else:
            records.append(StepRecord(name, status, now))
    return tuple(records)


def _current_step_name(saga: Saga) -> str:
    return RESERVE_STOCK if saga.step is Step.RESERVING_STOCK else PROCESS_PAYMENT


def _fail(
    saga: Saga, reason: Reason, step_status: str, *, now: datetime, policy: Policy, released: bool = False
) -> tuple[Saga, tuple[Command, ...]]:
    """End a running saga without a sale: CANCELLED with `reason`, and undo step 1
    (`released`: the catalog already let the reservation go, so it is acknowledged)."""
    cancelled = _advance(
        saga,
        step=Step.COMPENSATING,
        status=OrderStatus.CANCELLED,
        reason=reason,
        deadline=None,
        log=((_current_step_name(saga), step_status),),
        now=now,
    )
    new, commands = _compensate(cancelled, Action.RELEASE_STOCK, now=now, policy=policy, bump=False)
    if released:
        new = _settle(_mark(new, Action.RELEASE_STOCK, ACKNOWLEDGED, now), now=now, policy=policy)
    return new, commands


def _compensate(
    saga: Saga, action: Action, *, now: datetime, policy: Policy, again: bool = False, bump: bool = True
) -> tuple[Saga, tuple[Command, ...]]:
    """Log `action` as requested (one more attempt) and send its event; the saga waits
    for the acknowledgement in `compensating`, with a retry deadline."""
    previous = saga.compensation(action)
    if previous is not None and previous.status == REQUESTED and not again:
        return saga, ()
    attempts = (previous.attempts if previous is not None else 0) + 1
    reason = previous.reason if previous is not None else (saga.failure_reason or Reason.CANCELLED_BY_USER).value
    comp = Compensation(action=action, status=REQUESTED, reason=reason, attempts=attempts, at=now)
    new = replace(
        saga,
        compensations={**saga.compensations, action: comp},
        step=Step.COMPENSATING,
        version=saga.version + 1 if bump else saga.version,
    )
    new = _settle(new, now=now, policy=policy)
    event: Event
    if action is Action.RELEASE_STOCK:
        event = _cancelled_event(new)
    else:
        event = PaymentRefundRequested(order_id=saga.order_id, payment_id=saga.payment_id, reason=reason)
    return new, (Compensate(action, event),)


def _acknowledge(saga: Saga, action: Action, *, now: datetime, policy: Policy) -> Decision:
    new = _mark(saga, action, ACKNOWLEDGED, now)
    new = _settle(replace(new, version=saga.version + 1), now=now, policy=policy)
    return Decision(new, ())


def _mark(saga: Saga, action: Action, status: str, now: datetime) -> Saga:
    comp = saga.compensations[action]
    return replace(saga, compensations={**saga.compensations, action: replace(comp, status=status, at=now)})


def _waiting_for(saga: Saga, action: Action) -> bool:
    comp = saga.compensation(action)
    return comp is not None and comp.status == REQUESTED


def _settle(saga: Saga, *, now: datetime, policy: Policy) -> Saga:
    """After a compensation changed: still waiting (retry deadline) or done."""
    if saga.step in RUNNING_STEPS or saga.step is Step.CONFIRMED:
        return saga
    outstanding = [c for c in saga.compensations.values() if c.status == REQUESTED]
    if outstanding:
        due = now + policy.retry_delay(max(c.attempts for c in outstanding))
        return replace(saga, step=Step.COMPENSATING, deadline=due)
    if saga.step is Step.REJECTED and not saga.compensations:
        return replace(saga, deadline=None)
    return replace(saga, step=Step.COMPENSATED, deadline=None)


def _cancelled_event(saga: Saga) -> OrderCancelled:
    """`order.cancelled`: the catalog releases whatever it holds for the order (a
    second release changes nothing), the cart opens again."""
    return OrderCancelled(
        order_id=saga.order_id,
        user_id=saga.user_id,
        cart_id=saga.cart_id,
        status=saga.order_status.value,
        reason=(saga.failure_reason or Reason.CANCELLED_BY_USER).value,
        lines=list(saga.lines),
    )
