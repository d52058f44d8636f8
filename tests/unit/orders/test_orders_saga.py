"""The place-order saga as a pure function: given a state and a message, the next
state and the commands. Every transition, and the duplicates and stale messages
that must change nothing."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from prost.contracts.catalog import Shortage, StockLine, StockReleased, StockReservationFailed, StockReserved
from prost.contracts.orders import OrderCancelled, OrderConfirmed, OrderPlaced, PaymentRefundRequested, PaymentRequested
from prost.contracts.payments import PaymentFailed, PaymentProcessed, PaymentRefunded
from prost.kit.settings import Settings
from prost.orders import saga as sg
from prost.orders.domain import OrderNotCancellable

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
POLICY = sg.Policy(
    step_timeout=timedelta(seconds=30),
    payment_timeout=timedelta(seconds=3),
    retry_base=timedelta(seconds=2),
    max_attempts=4,
)
PRODUCT = uuid.uuid4()
LINES = (StockLine(product_id=PRODUCT, quantity=2),)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def placed(cart_id: uuid.UUID | None = None) -> sg.Decision:
    return sg.start(
        order_id=uuid.uuid4(),
        user_id=uuid.uuid4(),
        cart_id=cart_id,
        lines=LINES,
        amount=Decimal("39.98"),
        currency="USD",
        payment_token="tok_123",
        now=T0,
        policy=POLICY,
    )


def step(saga: sg.Saga, message: sg.Message, seconds: float = 1) -> sg.Decision:
    return sg.decide(saga, message, now=at(seconds), policy=POLICY)


def reserved(saga: sg.Saga) -> StockReserved:
    return StockReserved(order_id=saga.order_id, lines=list(LINES), expires_at=at(120))


def failed_reservation(saga: sg.Saga) -> StockReservationFailed:
    return StockReservationFailed(
        order_id=saga.order_id, shortages=[Shortage(product_id=PRODUCT, requested=2, available=0)]
    )


def released(saga: sg.Saga, reason: str = "cancelled") -> StockReleased:
    return StockReleased(kind="order", owner_id=saga.order_id, order_id=saga.order_id, reason=reason, lines=list(LINES))


PAYMENT_ID = uuid.uuid4()


def processed(saga: sg.Saga) -> PaymentProcessed:
    return PaymentProcessed(
        order_id=saga.order_id,
        payment_id=PAYMENT_ID,
        amount=Decimal("39.98"),
        currency="USD",
        last4="4242",
        brand="visa",
    )


def payment_failed(saga: sg.Saga, reason: str = "payment_declined") -> PaymentFailed:
    return PaymentFailed(order_id=saga.order_id, payment_id=PAYMENT_ID, reason=reason)


def refunded(saga: sg.Saga) -> PaymentRefunded:
    return PaymentRefunded(order_id=saga.order_id, payment_id=PAYMENT_ID, amount=Decimal("39.98"), currency="USD")


def events(decision: sg.Decision) -> list[object]:
    out: list[object] = []
    for command in decision.commands:
        if isinstance(command, sg.Send | sg.Compensate):
            out.append(command.event)
    return out


def only_event(decision: sg.Decision) -> object:
    found = events(decision)
    assert len(found) == 1, found
    return found[0]


def _reserved_saga() -> sg.Saga:
    start = placed().saga
    return step(start, reserved(start)).saga


def _cancelled_saga() -> sg.Saga:
    return step(_reserved_saga(), payment_failed(_reserved_saga()), 2).saga


# -- step 1: reserve stock ---------------------------------------------------------------------


def test_placing_an_order_starts_reserving_stock_with_a_deadline_and_sends_order_placed() -> None:
    decision = placed(cart_id=uuid.uuid4())
    saga = decision.saga
    assert saga.step is sg.Step.RESERVING_STOCK
    assert saga.order_status is sg.OrderStatus.PENDING
    assert saga.deadline == T0 + POLICY.step_timeout
    assert saga.version == 1
    assert saga.status == "running"
    event = only_event(decision)
    assert isinstance(event, OrderPlaced)
    assert event.order_id == saga.order_id
    assert event.cart_id == saga.cart_id
    assert event.lines == list(LINES)
    assert event.total_amount == Decimal("39.98")
    assert [(s.name, s.status) for s in saga.steps] == [("place_order", "completed"), ("reserve_stock", "running")]


def test_stock_reserved_moves_to_payment_and_requests_it_with_a_key_derived_from_the_order() -> None:
    start = placed().saga
    decision = step(start, reserved(start))
    saga = decision.saga
    assert decision.changed
    assert saga.step is sg.Step.PROCESSING_PAYMENT
    assert saga.order_status is sg.OrderStatus.STOCK_RESERVED
    assert saga.version == 2
    assert saga.deadline == at(1) + POLICY.payment_timeout  # the payment step's own, shorter deadline
    assert saga.reservation_expires_at == at(120)
    request = only_event(decision)
    assert isinstance(request, PaymentRequested)
    assert request.payment_token == "tok_123"
    assert request.amount == Decimal("39.98")
    assert request.idempotency_key == sg.charge_key(start.order_id)
    tracked = [c for c in decision.commands if isinstance(c, sg.TrackReservation)]
    assert tracked == [sg.TrackReservation("reserved", LINES, at(120))]


def test_a_duplicate_stock_reserved_changes_nothing() -> None:
    saga = _reserved_saga()
    decision = step(saga, reserved(saga), 3)
    assert not decision.changed
    assert decision.saga is saga
    assert decision.commands == ()


def test_reservation_failure_rejects_the_order_as_out_of_stock_and_tells_the_cart() -> None:
    start = placed(cart_id=uuid.uuid4()).saga
    decision = step(start, failed_reservation(start))
    saga = decision.saga
    assert saga.step is sg.Step.REJECTED
    assert saga.order_status is sg.OrderStatus.REJECTED
    assert saga.failure_reason is sg.Reason.OUT_OF_STOCK
    assert saga.deadline is None
    assert saga.status == "failed"
    assert saga.compensations == {}
    event = only_event(decision)
    assert isinstance(event, OrderCancelled)
    assert (event.status, event.reason, event.cart_id) == ("rejected", "out_of_stock", start.cart_id)


def test_a_reservation_failure_after_the_stock_was_reserved_is_stale() -> None:
    saga = _reserved_saga()
    decision = step(saga, failed_reservation(saga), 2)
    assert not decision.changed


# -- step 2: take payment ----------------------------------------------------------------------


def test_payment_processed_confirms_the_order_and_sends_order_confirmed() -> None:
    saga = _reserved_saga()
    decision = step(saga, processed(saga), 2)
    new = decision.saga
    assert new.step is sg.Step.CONFIRMED
    assert new.order_status is sg.OrderStatus.CONFIRMED
    assert new.failure_reason is None
    assert new.deadline is None
    assert new.payment_id == PAYMENT_ID
    assert new.status == "completed"
    event = only_event(decision)
    assert isinstance(event, OrderConfirmed)
    assert event.lines == list(LINES)
    assert sg.TrackReservation("committed") in decision.commands
    assert [(s.name, s.status) for s in new.steps][-2:] == [
        ("process_payment", "completed"),
        ("confirm_order", "completed"),
    ]


def test_a_duplicate_payment_processed_after_confirmation_changes_nothing() -> None:
    saga = _reserved_saga()
    confirmed = step(saga, processed(saga), 2).saga
    assert not step(confirmed, processed(saga), 3).changed


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("payment_declined", sg.Reason.PAYMENT_DECLINED),
        ("insufficient_funds", sg.Reason.INSUFFICIENT_FUNDS),
        ("payment_error", sg.Reason.PAYMENT_ERROR),
        ("something_new", sg.Reason.PAYMENT_ERROR),
    ],
)
def test_payment_failure_cancels_with_its_reason_and_compensates_by_releasing_stock(
    reason: str, expected: sg.Reason
) -> None:
    saga = _reserved_saga()
    decision = step(saga, payment_failed(saga, reason), 2)
    new = decision.saga
    assert new.order_status is sg.OrderStatus.CANCELLED
    assert new.failure_reason is expected
    assert new.step is sg.Step.COMPENSATING
    assert new.status == "compensating"
    release = new.compensations[sg.Action.RELEASE_STOCK]
    assert (release.status, release.attempts, release.reason) == ("requested", 1, expected.value)
    assert new.deadline == at(2) + POLICY.retry_delay(1)
    [command] = decision.commands
    assert isinstance(command, sg.Compensate)
    assert command.action is sg.Action.RELEASE_STOCK
    assert isinstance(command.event, OrderCancelled)
    assert (command.event.status, command.event.reason) == ("cancelled", expected.value)
    assert ("process_payment", "failed") in [(s.name, s.status) for s in new.steps]


def test_a_duplicate_payment_failure_releases_stock_only_once() -> None:
    cancelled = _cancelled_saga()
    again = step(cancelled, payment_failed(cancelled), 3)
    assert not again.changed
    assert again.commands == ()


def test_stock_released_acknowledges_the_release_and_completes_the_compensation() -> None:
    cancelled = _cancelled_saga()
    decision = step(cancelled, released(cancelled), 3)
    new = decision.saga
    assert new.step is sg.Step.COMPENSATED
    assert new.status == "compensated"
    assert new.deadline is None
    assert new.order_status is sg.OrderStatus.CANCELLED
    assert new.compensations[sg.Action.RELEASE_STOCK].status == "acknowledged"
    assert events(decision) == []
    assert [c for c in decision.commands if isinstance(c, sg.TrackReservation)] == [sg.TrackReservation("released")]
    assert not step(new, released(cancelled), 4).changed


def test_a_payment_failure_after_confirmation_is_stale() -> None:
    saga = _reserved_saga()
    confirmed = step(saga, processed(saga), 2).saga
    assert not step(confirmed, payment_failed(saga), 3).changed


def test_payment_processed_before_payment_was_requested_is_ignored() -> None:
    start = placed().saga
    assert not step(start, processed(start)).changed


# -- late payments are refunded ----------------------------------------------------------------


def test_a_payment_that_lands_after_the_order_was_cancelled_is_refunded_and_the_order_stays_cancelled() -> None:
    cancelled = step(_cancelled_saga(), released(_cancelled_saga()), 3).saga
    decision = step(cancelled, processed(cancelled), 4)
    new = decision.saga
    assert new.order_status is sg.OrderStatus.CANCELLED
    assert new.step is sg.Step.COMPENSATING
    assert new.payment_id == PAYMENT_ID
    refund = new.compensations[sg.Action.REFUND_PAYMENT]
    assert (refund.status, refund.attempts) == ("requested", 1)
    [command] = decision.commands
    assert isinstance(command, sg.Compensate)
    assert isinstance(command.event, PaymentRefundRequested)
    assert command.event.payment_id == PAYMENT_ID
    # a duplicate of the late payment does not refund twice
    assert not step(new, processed(cancelled), 5).changed
    # the refund is acknowledged: the saga is compensated, the order still cancelled
    done = step(new, refunded(cancelled), 6).saga
    assert done.step is sg.Step.COMPENSATED
    assert done.compensations[sg.Action.REFUND_PAYMENT].status == "acknowledged"
    assert done.order_status is sg.OrderStatus.CANCELLED
    assert not step(done, refunded(cancelled), 7).changed


def test_a_payment_after_a_timeout_is_refunded() -> None:
    saga = _reserved_saga()
    timed_out = sg.decide(saga, sg.DeadlinePassed(), now=at(40), policy=POLICY).saga
    assert timed_out.failure_reason is sg.Reason.TIMEOUT
    decision = sg.decide(timed_out, processed(saga), now=at(41), policy=POLICY)
    assert isinstance(only_event(decision), PaymentRefundRequested)
    assert decision.saga.order_status is sg.OrderStatus.CANCELLED


def test_a_refund_nobody_asked_for_changes_nothing() -> None:
    saga = _reserved_saga()
    assert not step(saga, refunded(saga), 2).changed


# -- the user cancels --------------------------------------------------------------------------


def test_the_user_cancels_while_stock_is_being_reserved() -> None:
    start = placed().saga
    decision = step(start, sg.CancelRequested())
    new = decision.saga
    assert new.order_status is sg.OrderStatus.CANCELLED
    assert new.failure_reason is sg.Reason.CANCELLED_BY_USER
    assert new.compensations[sg.Action.RELEASE_STOCK].status == "requested"
    assert ("reserve_stock", "cancelled") in [(s.name, s.status) for s in new.steps]
    event = only_event(decision)
    assert isinstance(event, OrderCancelled)
    assert (event.status, event.reason) == ("cancelled", "cancelled_by_user")


def test_the_user_cancels_while_payment_runs() -> None:
    decision = step(_reserved_saga(), sg.CancelRequested(), 2)
    assert decision.saga.order_status is sg.OrderStatus.CANCELLED
    assert ("process_payment", "cancelled") in [(s.name, s.status) for s in decision.saga.steps]


@pytest.mark.parametrize("final", ["confirmed", "rejected", "cancelled"])
def test_a_final_order_cannot_be_cancelled(final: str) -> None:
    start = placed().saga
    saga = {
        "confirmed": lambda: step(_reserved_saga(), processed(_reserved_saga()), 2).saga,
        "rejected": lambda: step(start, failed_reservation(start)).saga,
        "cancelled": _cancelled_saga,
    }[final]()
    with pytest.raises(OrderNotCancellable):
        step(saga, sg.CancelRequested(), 5)


def test_stock_reserved_after_a_cancel_waits_for_the_pending_release_and_sends_nothing() -> None:
    start = placed().saga
    cancelled = step(start, sg.CancelRequested()).saga
    decision = step(cancelled, reserved(start), 2)
    assert decision.saga == cancelled
    assert events(decision) == []
    assert decision.commands == (sg.TrackReservation("reserved", LINES, at(120)),)
    # its release is acknowledged by the stock.released that follows
    done = step(decision.saga, released(start), 3).saga
    assert done.step is sg.Step.COMPENSATED


def test_stock_reserved_arriving_after_the_release_was_acknowledged_changes_nothing() -> None:
    start = placed().saga
    cancelled = step(start, sg.CancelRequested()).saga
    acked = step(cancelled, released(start), 2).saga
    assert acked.step is sg.Step.COMPENSATED
    late = step(acked, reserved(start), 3)
    assert not late.changed
    assert late.commands == ()


def test_a_reservation_failure_after_a_cancel_acknowledges_the_release() -> None:
    start = placed().saga
    cancelled = step(start, sg.CancelRequested()).saga
    decision = step(cancelled, failed_reservation(start), 2)
    assert decision.saga.step is sg.Step.COMPENSATED
    assert decision.saga.order_status is sg.OrderStatus.CANCELLED
    assert decision.saga.failure_reason is sg.Reason.CANCELLED_BY_USER


def test_stock_reserved_after_a_rejection_is_released_and_the_order_stays_rejected() -> None:
    start = placed().saga
    rejected = step(start, failed_reservation(start)).saga
    decision = step(rejected, reserved(start), 2)
    assert decision.saga.order_status is sg.OrderStatus.REJECTED
    event = only_event(decision)
    assert isinstance(event, OrderCancelled)
    assert event.status == "rejected"


# -- the reservation expires under a running saga ----------------------------------------------------


def test_an_expired_reservation_while_payment_runs_cancels_the_order() -> None:
    saga = _reserved_saga()
    decision = step(saga, released(saga, reason="expired"), 2)
    new = decision.saga
    assert new.order_status is sg.OrderStatus.CANCELLED
    assert new.failure_reason is sg.Reason.RESERVATION_EXPIRED
    assert new.compensations[sg.Action.RELEASE_STOCK].status == "acknowledged"
    assert new.step is sg.Step.COMPENSATED
    assert isinstance(only_event(decision), OrderCancelled)


def test_a_cart_hold_release_is_not_the_order_s_business() -> None:
    saga = _reserved_saga()
    hold = StockReleased(kind="cart_hold", owner_id=uuid.uuid4(), reason="expired", lines=list(LINES))
    assert not step(saga, hold, 2).changed


def test_stock_released_for_a_confirmed_order_changes_nothing() -> None:
    saga = _reserved_saga()
    confirmed = step(saga, processed(saga), 2).saga
    assert not step(confirmed, released(saga, "expired"), 3).changed


# -- deadlines -----------------------------------------------------------------------------------


def test_the_payment_step_has_its_own_deadline_never_longer_than_every_steps() -> None:
    defaults = sg.Policy.from_settings(Settings())
    assert (defaults.step_timeout, defaults.payment_timeout) == (timedelta(seconds=30), timedelta(seconds=3))
    bounded = sg.Policy.from_settings(Settings(saga_step_timeout_seconds=1))
    assert bounded.payment_timeout == timedelta(seconds=1)
    longer = sg.Policy.from_settings(Settings(saga_step_timeout_seconds=60, saga_payment_timeout_seconds=20))
    assert longer.payment_timeout == timedelta(seconds=20)


def test_with_the_defaults_a_provider_that_never_answers_ends_the_order_within_5_seconds() -> None:
    """API.md: an order is final within 5 s of its acceptance. The worst case is the
    silent card: the payment step's deadline, then up to one reconciler pass."""
    settings = Settings()
    worst = sg.Policy.from_settings(settings).payment_timeout.total_seconds() + settings.sweep_interval_seconds
    assert worst <= 4.5


def test_a_deadline_not_yet_passed_changes_nothing() -> None:
    start = placed().saga
    assert not sg.decide(start, sg.DeadlinePassed(), now=at(29), policy=POLICY).changed


@pytest.mark.parametrize("in_payment", [False, True])
def test_a_running_step_past_its_deadline_is_compensated_as_a_timeout(in_payment: bool) -> None:
    saga = _reserved_saga() if in_payment else placed().saga
    decision = sg.decide(saga, sg.DeadlinePassed(), now=at(40), policy=POLICY)
    new = decision.saga
    assert new.order_status is sg.OrderStatus.CANCELLED
    assert new.failure_reason is sg.Reason.TIMEOUT
    assert new.compensations[sg.Action.RELEASE_STOCK].status == "requested"
    name = "process_payment" if in_payment else "reserve_stock"
    assert (name, "timed_out") in [(s.name, s.status) for s in new.steps]
    assert isinstance(only_event(decision), OrderCancelled)


def test_an_unacknowledged_compensation_is_sent_again_with_growing_delays_then_abandoned() -> None:
    saga = _cancelled_saga()  # release requested at t=2, attempt 1
    now = at(2)
    sent = 1
    while True:
        assert saga.deadline is not None
        now = saga.deadline
        decision = sg.decide(saga, sg.DeadlinePassed(), now=now, policy=POLICY)
        assert decision.changed
        saga = decision.saga
        if saga.step is sg.Step.COMPENSATED:
            break
        sent += 1
        assert saga.compensations[sg.Action.RELEASE_STOCK].attempts == sent
        assert saga.deadline == now + POLICY.retry_delay(sent)
        assert isinstance(only_event(decision), OrderCancelled)
    assert sent == POLICY.max_attempts
    assert saga.compensations[sg.Action.RELEASE_STOCK].status == "abandoned"
    assert saga.status == "failed"
    assert saga.deadline is None


def test_confirmed_and_compensated_sagas_have_no_deadline() -> None:
    saga = _reserved_saga()
    confirmed = step(saga, processed(saga), 2).saga
    assert confirmed.deadline is None
    assert not sg.decide(confirmed, sg.DeadlinePassed(), now=at(10_000), policy=POLICY).changed


def test_every_applied_transition_raises_the_version_by_one() -> None:
    start = placed().saga
    s1 = step(start, reserved(start)).saga
    s2 = step(s1, payment_failed(s1), 2).saga
    s3 = step(s2, released(s2), 3).saga
    s4 = step(s3, processed(s3), 4).saga
    s5 = step(s4, refunded(s4), 5).saga
    assert [s.version for s in (start, s1, s2, s3, s4, s5)] == [1, 2, 3, 4, 5, 6]


def test_retry_delays_double_and_are_capped() -> None:
    policy = sg.Policy(retry_base=timedelta(seconds=1), retry_cap=timedelta(seconds=5))
    assert [policy.retry_delay(n).total_seconds() for n in range(1, 6)] == [1, 2, 4, 5, 5]
