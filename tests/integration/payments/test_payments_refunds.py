"""Refunds on `payment.refund_requested`: only a succeeded charge, once, whatever is repeated."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

import pytest
from payments_support import (
    DECLINED,
    GOOD,
    Crash,
    CrashingProvider,
    GatedProvider,
    age,
    card,
    charge_record,
    events_for,
    order_of,
    payment_row,
    refund_requested,
    requested,
)
from sqlalchemy.ext.asyncio import AsyncEngine

from prost.kit import inbox
from prost.kit.service import ServiceContext
from prost.payments import handlers
from prost.payments.provider import SimulatedProvider

from helpers import engine_of_its_own

engine = engine_of_its_own()  # the payments resumer of the session's system works on the run's database


async def charged(ctx: ServiceContext, provider: SimulatedProvider, number: str = GOOD) -> uuid.UUID:
    token = await provider.tokenize(card(number))
    envelope = requested(token.token)
    await handlers.charge_requested_payment(envelope, ctx)
    return order_of(envelope)


async def test_a_succeeded_charge_is_refunded_and_announced(
    ctx: ServiceContext, provider: SimulatedProvider, engine: AsyncEngine
) -> None:
    order_id = await charged(ctx, provider)
    before = await payment_row(engine, order_id)
    assert before is not None
    request = refund_requested(order_id, before["id"])
    await handlers.refund_requested_payment(request, ctx)

    row = await payment_row(engine, order_id)
    assert row is not None
    assert row["status"] == "refunded"
    assert row["provider_refund_id"] is not None
    assert row["refund_reason"] == "timeout"
    record = await charge_record(engine, row["idempotency_key"])
    assert record is not None
    assert record["refund_id"] == row["provider_refund_id"]
    events = await events_for(engine, order_id)
    assert [e.event_type for e in events] == ["payment.processed", "payment.refunded"]
    refunded = events[1]
    assert refunded.causation_id == request.event_id
    assert refunded.payload == {
        "order_id": str(order_id),
        "payment_id": str(row["id"]),
        "amount": "42.50",
        "currency": "USD",
    }


async def test_a_second_refund_request_changes_nothing(
    ctx: ServiceContext, provider: SimulatedProvider, engine: AsyncEngine
) -> None:
    order_id = await charged(ctx, provider)
    first = refund_requested(order_id)
    await handlers.refund_requested_payment(first, ctx)
    refunded = await payment_row(engine, order_id)
    await handlers.refund_requested_payment(first, ctx)  # the same event again: the inbox has it
    second = refund_requested(order_id)  # orders asking again
    await handlers.refund_requested_payment(second, ctx)

    assert await payment_row(engine, order_id) == refunded
    events = await events_for(engine, order_id)
    # Orders retries its request until it hears `payment.refunded`: the second request
    # hears it again, about the same refund.
    assert [e.event_type for e in events] == ["payment.processed", "payment.refunded", "payment.refunded"]
    assert events[1].payload == events[2].payload
    assert events[2].causation_id == second.event_id


async def test_concurrent_refund_requests_refund_once(
    ctx: ServiceContext, provider: SimulatedProvider, engine: AsyncEngine
) -> None:
    order_id = await charged(ctx, provider)
    await asyncio.gather(*(handlers.refund_requested_payment(refund_requested(order_id), ctx) for _ in range(5)))
    row = await payment_row(engine, order_id)
    assert row is not None
    assert row["status"] == "refunded"
    refunds = {
        e.payload["payment_id"] for e in await events_for(engine, order_id) if e.event_type == "payment.refunded"
    }
    assert refunds == {str(row["id"])}


async def test_a_failed_charge_is_not_refunded(
    ctx: ServiceContext, provider: SimulatedProvider, engine: AsyncEngine
) -> None:
    order_id = await charged(ctx, provider, DECLINED)
    request = refund_requested(order_id)
    await handlers.refund_requested_payment(request, ctx)
    row = await payment_row(engine, order_id)
    assert row is not None
    assert (row["status"], row["provider_refund_id"]) == ("failed", None)
    assert [e.event_type for e in await events_for(engine, order_id)] == ["payment.failed"]
    async with engine.connect() as conn:
        assert await inbox.seen(conn, "payments", request.event_id)


async def test_a_refund_for_an_order_without_payment_does_nothing(ctx: ServiceContext, engine: AsyncEngine) -> None:
    order_id = uuid.uuid4()
    await handlers.refund_requested_payment(refund_requested(order_id), ctx)
    assert await payment_row(engine, order_id) is None
    assert await events_for(engine, order_id) == []


async def test_a_refund_naming_another_payment_does_nothing(
    ctx: ServiceContext, provider: SimulatedProvider, engine: AsyncEngine
) -> None:
    order_id = await charged(ctx, provider)
    await handlers.refund_requested_payment(refund_requested(order_id, uuid.uuid4()), ctx)
    row = await payment_row(engine, order_id)
    assert row is not None
    assert row["status"] == "succeeded"


async def test_a_refund_asked_for_while_the_charge_runs_follows_the_charge(
    make_ctx: Callable[..., ServiceContext], provider: SimulatedProvider, engine: AsyncEngine
) -> None:
    gated = GatedProvider(provider)
    ctx = make_ctx(provider=gated)
    token = await provider.tokenize(card(GOOD))
    envelope = requested(token.token)
    charging = asyncio.create_task(handlers.charge_requested_payment(envelope, ctx))
    await gated.waiting.wait()

    await handlers.refund_requested_payment(refund_requested(order_of(envelope)), ctx)
    row = await payment_row(engine, order_of(envelope))
    assert row is not None
    assert row["status"] == "processing"
    assert row["refund_requested_at"] is not None

    gated.gate.set()
    await charging
    row = await payment_row(engine, order_of(envelope))
    assert row is not None
    assert row["status"] == "refunded"
    assert [e.event_type for e in await events_for(engine, order_of(envelope))] == [
        "payment.processed",
        "payment.refunded",
    ]


async def test_a_crash_after_the_provider_refund_is_redelivered_without_a_second_refund(
    make_ctx: Callable[..., ServiceContext], provider: SimulatedProvider, engine: AsyncEngine
) -> None:
    order_id = await charged(make_ctx(), provider)
    request = refund_requested(order_id)
    with pytest.raises(Crash):
        await handlers.refund_requested_payment(request, make_ctx(provider=CrashingProvider(provider, after_call=True)))
    row = await payment_row(engine, order_id)
    assert row is not None
    assert row["status"] == "succeeded"
    record = await charge_record(engine, row["idempotency_key"])
    assert record is not None
    assert record["refund_id"] is not None

    await handlers.refund_requested_payment(request, make_ctx())
    row = await payment_row(engine, order_id)
    assert row is not None
    assert (row["status"], row["provider_refund_id"]) == ("refunded", record["refund_id"])
    assert [e.event_type for e in await events_for(engine, order_id)] == ["payment.processed", "payment.refunded"]


async def test_a_refund_left_pending_is_resumed(
    make_ctx: Callable[..., ServiceContext], provider: SimulatedProvider, engine: AsyncEngine
) -> None:
    order_id = await charged(make_ctx(), provider)
    with pytest.raises(Crash):
        await handlers.refund_requested_payment(
            refund_requested(order_id), make_ctx(provider=CrashingProvider(provider, after_call=False))
        )
    await age(engine, order_id)
    assert await handlers.resume_once(make_ctx(), older_than=600) == 1
    row = await payment_row(engine, order_id)
    assert row is not None
    assert row["status"] == "refunded"
    assert [e.event_type for e in await events_for(engine, order_id)] == ["payment.processed", "payment.refunded"]
