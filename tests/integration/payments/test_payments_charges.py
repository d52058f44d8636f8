"""Charging on `payment.requested`, called as the runtime calls it, on the real database.

Each test uses orders of its own; the outbox rows of an order are the events payments
announced about it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from decimal import Decimal

import pytest
import sqlalchemy as sa
from payments_support import (
    DECLINED,
    FLAKY,
    GOOD,
    INSUFFICIENT,
    OTHER,
    SILENT,
    Crash,
    CrashingProvider,
    GatedProvider,
    age,
    card,
    charge_record,
    events_for,
    order_of,
    payment_row,
    requested,
)
from sqlalchemy.ext.asyncio import AsyncEngine

from prost.kit import db, inbox
from prost.kit.messages import Envelope
from prost.kit.service import ServiceContext
from prost.payments import handlers, repository
from prost.payments.provider import SimulatedProvider
from prost.payments.tables import payments

from helpers import engine_of_its_own, eventually

engine = engine_of_its_own()  # the payments resumer of the session's system works on the run's database


@pytest.mark.parametrize(
    ("number", "status", "reason", "event_type", "attempts"),
    [
        (GOOD, "succeeded", None, "payment.processed", 1),
        (DECLINED, "failed", "payment_declined", "payment.failed", 1),
        (INSUFFICIENT, "failed", "insufficient_funds", "payment.failed", 1),
        (FLAKY, "succeeded", None, "payment.processed", 3),
        (OTHER, "succeeded", None, "payment.processed", 1),
    ],
)
async def test_every_test_card_settles_as_the_card_table_says(
    ctx: ServiceContext,
    provider: SimulatedProvider,
    engine: AsyncEngine,
    number: str,
    status: str,
    reason: str | None,
    event_type: str,
    attempts: int,
) -> None:
    token = await provider.tokenize(card(number))
    envelope = requested(token.token)
    await handlers.charge_requested_payment(envelope, ctx)

    row = await payment_row(engine, order_of(envelope))
    assert row is not None
    assert (row["status"], row["failure_reason"], row["attempts"]) == (status, reason, attempts)
    assert (row["last4"], row["brand"]) == (number[-4:], token.brand)
    events = await events_for(engine, order_of(envelope))
    assert [e.event_type for e in events] == [event_type]
    event = events[0]
    assert event.causation_id == envelope.event_id
    assert event.correlation_id == str(order_of(envelope))
    assert event.payload["payment_id"] == str(row["id"])
    if status == "succeeded":
        assert event.payload["amount"] == "42.50"
        assert (event.payload["currency"], event.payload["last4"], event.payload["brand"]) == (
            "USD",
            number[-4:],
            "visa" if number[0] == "4" else "mastercard",
        )
    else:
        assert event.payload["reason"] == reason
    async with engine.connect() as conn:
        assert await inbox.seen(conn, "payments", envelope.event_id)


async def test_a_provider_that_never_answers_ends_in_payment_error_after_the_saga_step(
    make_ctx: Callable[..., ServiceContext], provider: SimulatedProvider, engine: AsyncEngine
) -> None:
    ctx = make_ctx(saga_step_timeout_seconds=0.2, payment_provider_timeout_seconds=0.4)
    token = await provider.tokenize(card(SILENT))
    envelope = requested(token.token)
    await handlers.charge_requested_payment(envelope, ctx)

    row = await payment_row(engine, order_of(envelope))
    assert row is not None
    assert (row["status"], row["failure_reason"], row["provider_charge_id"]) == ("failed", "payment_error", None)
    assert [e.payload["reason"] for e in await events_for(engine, order_of(envelope))] == ["payment_error"]
    assert await charge_record(engine, envelope.payload["idempotency_key"]) is None


async def test_provider_errors_past_the_attempt_limit_end_in_payment_error(
    make_ctx: Callable[..., ServiceContext], provider: SimulatedProvider, engine: AsyncEngine
) -> None:
    ctx = make_ctx(payment_max_attempts=2)
    token = await provider.tokenize(card(FLAKY))
    envelope = requested(token.token)
    await handlers.charge_requested_payment(envelope, ctx)

    row = await payment_row(engine, order_of(envelope))
    assert row is not None
    assert (row["status"], row["failure_reason"], row["attempts"]) == ("failed", "payment_error", 2)
    record = await charge_record(engine, envelope.payload["idempotency_key"])
    assert record is not None
    assert (record["status"], record["tries"]) == ("pending", 2)


async def test_provider_errors_are_not_retried_past_half_the_saga_step(
    make_ctx: Callable[..., ServiceContext], provider: SimulatedProvider, engine: AsyncEngine
) -> None:
    # The first retry would wait 200 ms, past a 0.1 s budget (half of a 0.2 s step).
    ctx = make_ctx(saga_step_timeout_seconds=0.2, payment_retry_base_ms=200)
    token = await provider.tokenize(card(FLAKY))
    envelope = requested(token.token)
    await handlers.charge_requested_payment(envelope, ctx)
    row = await payment_row(engine, order_of(envelope))
    assert row is not None
    assert (row["status"], row["failure_reason"], row["attempts"]) == ("failed", "payment_error", 1)


async def test_the_same_event_delivered_twice_charges_once(
    ctx: ServiceContext, provider: SimulatedProvider, engine: AsyncEngine
) -> None:
    token = await provider.tokenize(card(GOOD))
    envelope = requested(token.token)
    await handlers.charge_requested_payment(envelope, ctx)
    await handlers.charge_requested_payment(envelope, ctx)

    record = await charge_record(engine, envelope.payload["idempotency_key"])
    assert record is not None
    assert record["tries"] == 1
    assert [e.event_type for e in await events_for(engine, order_of(envelope))] == ["payment.processed"]


async def test_a_second_request_for_the_same_order_gets_the_same_answer_and_no_new_charge(
    ctx: ServiceContext, provider: SimulatedProvider, engine: AsyncEngine
) -> None:
    token = await provider.tokenize(card(DECLINED))
    first = requested(token.token)
    again = requested(token.token, order_id=order_of(first))
    await handlers.charge_requested_payment(first, ctx)
    await handlers.charge_requested_payment(again, ctx)

    events = await events_for(engine, order_of(first))
    assert [(e.event_type, e.payload["reason"]) for e in events] == [("payment.failed", "payment_declined")] * 2
    assert events[0].payload["payment_id"] == events[1].payload["payment_id"]
    assert events[1].causation_id == again.event_id
    record = await charge_record(engine, first.payload["idempotency_key"])
    assert record is not None
    assert record["tries"] == 1


async def test_concurrent_duplicates_charge_once(
    ctx: ServiceContext, provider: SimulatedProvider, engine: AsyncEngine
) -> None:
    token = await provider.tokenize(card(GOOD))
    envelope = requested(token.token)
    others = [requested(token.token, order_id=order_of(envelope)) for _ in range(3)]
    await asyncio.gather(*(handlers.charge_requested_payment(e, ctx) for e in [envelope] * 5 + others))

    record = await charge_record(engine, envelope.payload["idempotency_key"])
    assert record is not None
    assert (record["status"], record["tries"]) == ("succeeded", 1)
    events = await events_for(engine, order_of(envelope))
    assert events
    assert {e.event_type for e in events} == {"payment.processed"}
    assert len({e.payload["payment_id"] for e in events}) == 1
    # One announcement per distinct event at most; the duplicates of one event add none.
    assert len(events) <= 4
    assert len({e.causation_id for e in events}) == len(events)
    async with engine.connect() as conn:
        for e in [envelope, *others]:
            assert await inbox.seen(conn, "payments", e.event_id)


async def test_a_crash_after_the_charge_is_redelivered_and_gets_the_same_charge(
    make_ctx: Callable[..., ServiceContext], provider: SimulatedProvider, engine: AsyncEngine
) -> None:
    token = await provider.tokenize(card(GOOD))
    envelope = requested(token.token)
    with pytest.raises(Crash):
        await handlers.charge_requested_payment(
            envelope, make_ctx(provider=CrashingProvider(provider, after_call=True))
        )
    row = await payment_row(engine, order_of(envelope))
    assert row is not None
    assert row["status"] == "processing"
    async with engine.connect() as conn:
        assert not await inbox.seen(conn, "payments", envelope.event_id)
    charged = await charge_record(engine, envelope.payload["idempotency_key"])
    assert charged is not None

    await handlers.charge_requested_payment(envelope, make_ctx())  # the redelivery

    row = await payment_row(engine, order_of(envelope))
    assert row is not None
    assert (row["status"], row["provider_charge_id"], row["attempts"]) == ("succeeded", charged["charge_id"], 2)
    record = await charge_record(engine, envelope.payload["idempotency_key"])
    assert record is not None
    assert record["tries"] == 1
    assert [e.event_type for e in await events_for(engine, order_of(envelope))] == ["payment.processed"]


async def test_a_charge_left_processing_is_resumed_once_it_has_stalled(
    make_ctx: Callable[..., ServiceContext], provider: SimulatedProvider, engine: AsyncEngine
) -> None:
    token = await provider.tokenize(card(INSUFFICIENT))
    envelope = requested(token.token)
    with pytest.raises(Crash):
        await handlers.charge_requested_payment(
            envelope, make_ctx(provider=CrashingProvider(provider, after_call=False))
        )
    ctx = make_ctx()
    await handlers.resume_once(ctx, older_than=600)  # not stalled yet: left alone
    row = await payment_row(engine, order_of(envelope))
    assert row is not None
    assert row["status"] == "processing"

    await age(engine, order_of(envelope))
    assert await handlers.resume_once(ctx, older_than=600) == 1
    row = await payment_row(engine, order_of(envelope))
    assert row is not None
    assert (row["status"], row["failure_reason"]) == ("failed", "insufficient_funds")
    events = await events_for(engine, order_of(envelope))
    assert [(e.event_type, e.causation_id) for e in events] == [("payment.failed", None)]
    # The parked message, replayed later, charges nothing and gets the same answer.
    await handlers.charge_requested_payment(envelope, ctx)
    again = await events_for(engine, order_of(envelope))
    assert [(e.event_type, e.payload) for e in again] == [(events[0].event_type, events[0].payload)] * 2
    record = await charge_record(engine, envelope.payload["idempotency_key"])
    assert record is not None
    assert record["tries"] == 1


async def test_the_charge_holds_no_transaction_open_during_the_provider_call(
    make_ctx: Callable[..., ServiceContext], provider: SimulatedProvider, engine: AsyncEngine
) -> None:
    gated = GatedProvider(provider)
    token = await provider.tokenize(card(GOOD))
    envelope = requested(token.token)
    task = asyncio.create_task(handlers.charge_requested_payment(envelope, make_ctx(provider=gated)))
    await gated.waiting.wait()
    # While the call waits, the payment row is committed and nobody holds it: another
    # connection sees it and can lock it at once.
    async with engine.begin() as conn:
        locked = (
            await conn.execute(
                sa.select(payments.c.status)
                .where(payments.c.order_id == order_of(envelope))
                .with_for_update(nowait=True)
            )
        ).scalar_one()
    gated.gate.set()
    await task
    assert locked == "processing"
    row = await payment_row(engine, order_of(envelope))
    assert row is not None
    assert row["status"] == "succeeded"


async def test_a_slow_provider_call_is_let_go_after_the_wait_and_finished_in_the_background(
    make_ctx: Callable[..., ServiceContext], provider: SimulatedProvider, engine: AsyncEngine
) -> None:
    gated = GatedProvider(provider)
    ctx = make_ctx(provider=gated, payment_handler_wait_seconds=0.05)
    token = await provider.tokenize(card(GOOD))
    envelope = requested(token.token)
    await handlers.charge_requested_payment(envelope, ctx)  # returns while the call waits

    assert gated.waiting.is_set()
    row = await payment_row(engine, order_of(envelope))
    assert row is not None
    assert row["status"] == "processing"
    assert len(handlers.in_flight(ctx)) == 1
    gated.gate.set()

    async def settled() -> bool:
        row = await payment_row(engine, order_of(envelope))
        return row is not None and row["status"] == "succeeded"

    await eventually(settled)
    assert [e.event_type for e in await events_for(engine, order_of(envelope))] == ["payment.processed"]
    async with engine.connect() as conn:
        assert await inbox.seen(conn, "payments", envelope.event_id)


async def test_work_let_go_and_cut_short_by_a_stop_is_resumed_later(
    make_ctx: Callable[..., ServiceContext], provider: SimulatedProvider, engine: AsyncEngine
) -> None:
    gated = GatedProvider(provider)
    ctx = make_ctx(provider=gated, payment_handler_wait_seconds=0.05)
    token = await provider.tokenize(card(DECLINED))
    envelope = requested(token.token)
    await handlers.charge_requested_payment(envelope, ctx)
    await handlers.in_flight(ctx).close()  # the service stops while the provider works
    row = await payment_row(engine, order_of(envelope))
    assert row is not None
    assert row["status"] == "processing"

    await age(engine, order_of(envelope))
    assert await handlers.resume_once(make_ctx(), older_than=600) == 1
    row = await payment_row(engine, order_of(envelope))
    assert row is not None
    assert (row["status"], row["failure_reason"]) == ("failed", "payment_declined")
    assert [e.event_type for e in await events_for(engine, order_of(envelope))] == ["payment.failed"]


async def test_a_request_no_provider_could_charge_fails_without_a_charge(
    ctx: ServiceContext, engine: AsyncEngine
) -> None:
    envelope = requested("tok_whatever", amount="-5.00")
    await handlers.charge_requested_payment(envelope, ctx)
    assert await payment_row(engine, order_of(envelope)) is None
    events = await events_for(engine, order_of(envelope))
    assert [(e.event_type, e.payload["reason"]) for e in events] == [("payment.failed", "payment_error")]


async def test_an_unknown_token_fails_as_payment_error(ctx: ServiceContext, engine: AsyncEngine) -> None:
    envelope = requested(f"tok_{uuid.uuid4().hex}")
    await handlers.charge_requested_payment(envelope, ctx)
    row = await payment_row(engine, order_of(envelope))
    assert row is not None
    assert (row["status"], row["failure_reason"], row["attempts"]) == ("failed", "payment_error", 1)


async def test_an_outcome_is_written_with_its_record_and_its_event_or_not_at_all(engine: AsyncEngine) -> None:
    """`repository.settle` is one statement: the record of the event that asked, the
    outcome and its announcement. An event recorded before writes nothing; a payment
    no longer processing takes the new event's record only."""
    order_id = uuid.uuid4()
    new = repository.NewPayment(
        order_id=order_id,
        user_id=uuid.uuid4(),
        amount=Decimal("42.50"),
        currency="USD",
        idempotency_key=f"order-{order_id}-charge",
        card_token="tok_test",
    )
    seen_before, first, later = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    async with db.autocommit(engine) as session:
        payment = await repository.add(session, new)
        assert payment is not None
        outcome = repository.settled(payment, status="succeeded", charge_id="ch_test", last4="4242", brand="visa")
        event = handlers.outcome_event(outcome)
        assert event is not None

        def announce() -> list[Envelope]:
            return [Envelope.wrap(event, producer="payments", correlation_id=order_id)]

        assert await inbox.record(session, "payments", seen_before)
        assert await repository.settle(session, outcome, caused_by=seen_before, announce=announce()) is None
        assert (await payment_row(engine, order_id) or {}).get("status") == "processing"
        assert await events_for(engine, order_id) == []

        settled = await repository.settle(session, outcome, caused_by=first, announce=announce())
        assert settled == outcome
        assert await repository.settle(session, outcome, caused_by=later, announce=announce()) is None
    assert [e.event_type for e in await events_for(engine, order_id)] == ["payment.processed"]
    async with engine.connect() as conn:
        assert await inbox.seen(conn, "payments", first)
        assert await inbox.seen(conn, "payments", later)
