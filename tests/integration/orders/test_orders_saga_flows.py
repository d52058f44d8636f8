"""The place-order saga on the running system: every test card, compensations that
really run (stock comes back, late payments are refunded), duplicates, timeouts and
races. Real PostgreSQL, every service, the in-process bus.

Tests that need particular timings run on a System of their own (own database):
`slow_payments` (the provider takes 1 s, so an order can be cancelled while its
payment runs) and `hasty` (a 1 s step timeout with a provider taking 2 s, so
payments land after the saga gave up)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from orders_support import (
    DECLINED,
    FLAKY,
    INSUFFICIENT,
    SILENT,
    compensations_become,
    final,
    make_product,
    outbox_events,
    place,
    product,
    saga,
    scalar,
    settled_saga,
    stock_becomes,
    system_of_its_own,
)
from sqlalchemy.ext.asyncio import AsyncEngine

from prost.contracts.payments import PaymentFailed, PaymentProcessed
from prost.kit import db, outbox
from prost.kit.db import create_engine
from prost.kit.messages import Envelope
from prost.kit.settings import Settings

from helpers import GOOD_CARD, admin_token, bearer, eventually, register


@pytest.fixture
async def slow_payments(server_url: str, settings_factory: Callable[..., Settings]) -> AsyncIterator[Any]:
    timeouts = {"saga_step_timeout_seconds": 30, "saga_payment_timeout_seconds": 30}
    async with system_of_its_own(server_url, settings_factory, payment_latency_ms=1000, **timeouts) as running:
        yield running


@pytest.fixture
async def hasty(server_url: str, settings_factory: Callable[..., Settings]) -> AsyncIterator[Any]:
    async with system_of_its_own(
        server_url,
        settings_factory,
        payment_latency_ms=2000,
        payment_provider_timeout_seconds=5,
        saga_step_timeout_seconds=1,
        sweep_interval_seconds=0.1,
    ) as running:
        yield running


@pytest.fixture
async def patient(server_url: str, settings_factory: Callable[..., Settings]) -> AsyncIterator[Any]:
    """Generous step timeouts: the races must end the same way on a loaded machine."""
    timeouts = {"saga_step_timeout_seconds": 300, "saga_payment_timeout_seconds": 300}
    async with system_of_its_own(server_url, settings_factory, **timeouts) as running:
        yield running


async def client_of(running: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=running.url, timeout=30)


async def reservation_view(engine: AsyncEngine, order_id: str) -> list[tuple[str, int, str]]:
    """The orders' own view of what the catalog reserved for the order."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            sa.text("SELECT product_id, quantity, status FROM orders.inventory_reservations WHERE order_id = :o"),
            {"o": uuid.UUID(order_id)},
        )
        return [(str(p), q, s) for p, q, s in rows]


def actions(view: dict[str, Any]) -> dict[str, str]:
    return {c["action"]: c["status"] for c in view["compensations"]}


# -- every test card ---------------------------------------------------------------------------------


@pytest.mark.usefixtures("system")
async def test_the_good_card_confirms_and_the_stock_is_committed(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    item = await make_product(client, stock=5)
    _, token = await register(client)
    order = await place(client, token, (item["id"], 2), card=GOOD_CARD)
    done = await final(client, token, order["id"])
    assert (done["status"], done["failure_reason"]) == ("confirmed", None)
    assert await reservation_view(engine, order["id"]) == [(item["id"], 2, "committed")]

    async def every_event_delivered() -> bool:
        unsent = await scalar(
            engine,
            "SELECT (SELECT count(*) FROM orders.outbox WHERE sent_at IS NULL AND envelope->>'correlation_id' = :o)"
            " + (SELECT count(*) FROM catalog.outbox WHERE sent_at IS NULL AND envelope->>'correlation_id' = :o)",
            o=order["id"],
        )
        return int(unsent) == 0

    await eventually(every_event_delivered)
    await stock_becomes(client, item["id"], stock=3, available=3)
    view = await settled_saga(client, token, order["id"])
    assert view["status"] == "completed"


@pytest.mark.usefixtures("system")
@pytest.mark.parametrize(
    ("card", "reason"),
    [(DECLINED, "payment_declined"), (INSUFFICIENT, "insufficient_funds")],
    ids=["declined", "funds"],
)
async def test_a_failed_payment_cancels_the_order_and_releases_the_stock(
    client: httpx.AsyncClient, engine: AsyncEngine, card: dict[str, Any], reason: str
) -> None:
    item = await make_product(client, stock=5)
    _, token = await register(client)
    order = await place(client, token, (item["id"], 2), card=card)
    done = await final(client, token, order["id"])
    assert (done["status"], done["failure_reason"]) == ("cancelled", reason)
    view = await settled_saga(client, token, order["id"])
    assert view["status"] == "compensated"
    assert actions(view) == {"release_stock": "acknowledged"}
    assert ("process_payment", "failed") in [(s["name"], s["status"]) for s in view["steps"]]
    assert await reservation_view(engine, order["id"]) == [(item["id"], 2, "released")]
    await stock_becomes(client, item["id"], stock=5, available=5)
    assert await outbox_events(engine, "orders", order["id"], "order.cancelled") == 1
    assert await outbox_events(engine, "catalog", order["id"], "stock.released") == 1


@pytest.mark.usefixtures("system")
async def test_the_flaky_card_is_retried_by_payments_and_confirms(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    item = await make_product(client, stock=5)
    _, token = await register(client)
    order = await place(client, token, (item["id"], 1), card=FLAKY)
    done = await final(client, token, order["id"])
    assert (done["status"], done["failure_reason"]) == ("confirmed", None)
    # one charge request, one outcome: the retries happened inside payments
    assert await outbox_events(engine, "orders", order["id"], "payment.requested") == 1
    assert await outbox_events(engine, "payments", order["id"], "payment.processed") == 1


@pytest.mark.usefixtures("system")
async def test_any_other_valid_card_succeeds(client: httpx.AsyncClient) -> None:
    item = await make_product(client)
    _, token = await register(client)
    order = await place(client, token, (item["id"], 1), card={**GOOD_CARD, "card_number": "5555555555554444"})
    assert (await final(client, token, order["id"]))["status"] == "confirmed"


async def test_the_silent_card_times_out_and_the_order_is_cancelled(hasty: Any) -> None:
    async with await client_of(hasty) as client:
        item = await make_product(client, stock=3)
        _, token = await register(client)
        order = await place(client, token, (item["id"], 1), card=SILENT)
        done = await final(client, token, order["id"])
        assert (done["status"], done["failure_reason"]) == ("cancelled", "timeout")
        view = await settled_saga(client, token, order["id"])
        assert actions(view)["release_stock"] == "acknowledged"
        assert ("process_payment", "timed_out") in [(s["name"], s["status"]) for s in view["steps"]]
        await stock_becomes(client, item["id"], stock=3, available=3)


@pytest.mark.usefixtures("system")
async def test_the_payment_step_runs_on_its_own_short_deadline(client: httpx.AsyncClient, engine: AsyncEngine) -> None:
    """The session's system keeps the default payment timeout (3 s) under a 5 s step
    timeout: the silent card's payment step is due 3 s after it began."""
    item = await make_product(client, stock=3)
    _, token = await register(client)
    order = await place(client, token, (item["id"], 1), card=SILENT)

    async def paying() -> tuple[Any, Any] | None:
        async with engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.text("SELECT step, deadline, steps FROM orders.saga_states WHERE order_id = :o"),
                    {"o": uuid.UUID(order["id"])},
                )
            ).one()
        return (row.deadline, row.steps) if row.step == "processing_payment" else None

    deadline, steps = await eventually(paying)
    [began] = [datetime.fromisoformat(s["at"]) for s in steps if s["name"] == "process_payment"]
    assert deadline - began == timedelta(seconds=3)
    done = await final(client, token, order["id"])
    assert (done["status"], done["failure_reason"]) == ("cancelled", "timeout")


@pytest.mark.usefixtures("system")
async def test_an_order_larger_than_the_stock_is_rejected_out_of_stock(client: httpx.AsyncClient) -> None:
    item = await make_product(client, stock=2)
    _, token = await register(client)
    order = await place(client, token, (item["id"], 3))
    done = await final(client, token, order["id"])
    assert (done["status"], done["failure_reason"]) == ("rejected", "out_of_stock")
    view = await settled_saga(client, token, order["id"])
    assert view["status"] == "failed"
    assert ("reserve_stock", "failed") in [(s["name"], s["status"]) for s in view["steps"]]
    await stock_becomes(client, item["id"], stock=2, available=2)


@pytest.mark.usefixtures("system")
async def test_an_order_is_all_or_nothing_across_its_lines(client: httpx.AsyncClient) -> None:
    plenty = await make_product(client, stock=10)
    scarce = await make_product(client, stock=1)
    _, token = await register(client)
    order = await place(client, token, (plenty["id"], 2), (scarce["id"], 2))
    assert (await final(client, token, order["id"]))["status"] == "rejected"
    await stock_becomes(client, plenty["id"], stock=10, available=10)
    await stock_becomes(client, scarce["id"], stock=1, available=1)


# -- duplicates ---------------------------------------------------------------------------------------


@pytest.mark.usefixtures("system")
async def test_a_duplicate_payment_failed_releases_the_stock_once(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    item = await make_product(client, stock=5)
    _, token = await register(client)
    order = await place(client, token, (item["id"], 2), card=DECLINED)
    await final(client, token, order["id"])
    await settled_saga(client, token, order["id"])
    payment_id = await scalar(engine, "SELECT id FROM payments.payments WHERE order_id = :o", o=uuid.UUID(order["id"]))
    assert payment_id is not None
    # payments says it again: the same envelope (a redelivery) and a new one (a re-send)
    original = await scalar(
        engine,
        "SELECT envelope FROM payments.outbox WHERE event_type = 'payment.failed' AND envelope->>'correlation_id' = :o",
        o=order["id"],
    )
    again = Envelope.wrap(
        PaymentFailed(order_id=uuid.UUID(order["id"]), payment_id=payment_id, reason="payment_declined"),
        producer="payments",
        correlation_id=order["id"],
    )
    async with db.transaction(engine) as session:
        await outbox.add_to_outbox(session, again)
        dup = Envelope.model_validate(original)
        await session.execute(
            sa.text("UPDATE payments.outbox SET sent_at = NULL WHERE event_id = :e"), {"e": dup.event_id}
        )

    async def both_sent() -> bool:
        unsent = await scalar(
            engine,
            "SELECT count(*) FROM payments.outbox WHERE sent_at IS NULL AND event_id IN (:a, :b)",
            a=again.event_id,
            b=dup.event_id,
        )
        return int(unsent) == 0

    await eventually(both_sent)
    assert await outbox_events(engine, "orders", order["id"], "order.cancelled") == 1
    assert await outbox_events(engine, "catalog", order["id"], "stock.released") == 1
    await stock_becomes(client, item["id"], stock=5, available=5)
    view = await settled_saga(client, token, order["id"])
    assert view["status"] == "compensated"


@pytest.mark.usefixtures("system")
async def test_a_duplicate_payment_processed_confirms_once(client: httpx.AsyncClient, engine: AsyncEngine) -> None:
    item = await make_product(client, stock=5)
    _, token = await register(client)
    order = await place(client, token, (item["id"], 1))
    await final(client, token, order["id"])
    payment_id = await scalar(engine, "SELECT id FROM payments.payments WHERE order_id = :o", o=uuid.UUID(order["id"]))
    again = Envelope.wrap(
        PaymentProcessed(
            order_id=uuid.UUID(order["id"]),
            payment_id=payment_id,
            amount="19.99",
            currency="USD",
            last4="4242",
            brand="visa",
        ),
        producer="payments",
        correlation_id=order["id"],
    )
    async with db.transaction(engine) as session:
        await outbox.add_to_outbox(session, again)

    async def sent() -> bool:
        return bool(
            await scalar(
                engine, "SELECT sent_at IS NOT NULL FROM payments.outbox WHERE event_id = :e", e=again.event_id
            )
        )

    await eventually(sent)
    assert await outbox_events(engine, "orders", order["id"], "order.confirmed") == 1
    assert await outbox_events(engine, "orders", order["id"], "payment.refund_requested") == 0
    await stock_becomes(client, item["id"], stock=4, available=4)


# -- cancelling while payment runs; late payments ----------------------------------------------------


async def test_cancelling_while_payment_runs_releases_stock_and_refunds_the_late_payment(slow_payments: Any) -> None:
    async with await client_of(slow_payments) as client:
        item = await make_product(client, stock=4, price="5.00")
        _, token = await register(client)
        order = await place(client, token, (item["id"], 3))

        async def payment_running() -> bool:
            r = await client.get(f"/api/v1/orders/{order['id']}", headers=bearer(token))
            return bool(r.json()["status"] == "stock_reserved")

        await eventually(payment_running)
        r = await client.post(f"/api/v1/orders/{order['id']}/cancel", headers=bearer(token))
        assert r.status_code == 202, r.text
        assert (r.json()["status"], r.json()["failure_reason"]) == ("cancelled", "cancelled_by_user")
        both = {"release_stock": "acknowledged", "refund_payment": "acknowledged"}
        await compensations_become(client, token, order["id"], both)
        done = await final(client, token, order["id"])
        assert (done["status"], done["failure_reason"]) == ("cancelled", "cancelled_by_user")
        await stock_becomes(client, item["id"], stock=4, available=4)
        assert (await client.post(f"/api/v1/orders/{order['id']}/cancel", headers=bearer(token))).status_code == 409


async def cancelled_then_refunded(client: httpx.AsyncClient, token: str, order_id: str, reason: str) -> None:
    """The order ends `cancelled` for `reason`, both compensations run (its stock is
    released, the charge that landed afterwards refunded), and it stays so."""
    done = await final(client, token, order_id)
    assert (done["status"], done["failure_reason"]) == ("cancelled", reason)
    await compensations_become(
        client, token, order_id, {"release_stock": "acknowledged", "refund_payment": "acknowledged"}
    )
    again = await final(client, token, order_id)
    assert (again["status"], again["failure_reason"]) == ("cancelled", reason)


async def test_a_reservation_that_runs_out_under_a_slow_payment_cancels_the_order_and_refunds_it(
    server_url: str, settings_factory: Callable[..., Settings]
) -> None:
    """The reservation lives 1 s past the payment's start; the provider takes 4 s. The
    sweeper expires the reservation first: the order ends `reservation_expired`, and the
    charge that lands afterwards is refunded."""
    settings = {
        "reservation_ttl_seconds": 1,
        "payment_latency_ms": 4000,
        "saga_step_timeout_seconds": 30,
        "saga_payment_timeout_seconds": 30,
        "sweep_interval_seconds": 0.2,
    }
    async with (
        system_of_its_own(server_url, settings_factory, **settings) as running,
        await client_of(running) as client,
    ):
        item = await make_product(client, stock=3)
        _, token = await register(client)
        order = await place(client, token, (item["id"], 2))
        await cancelled_then_refunded(client, token, order["id"], "reservation_expired")
        await stock_becomes(client, item["id"], stock=3, available=3)


async def test_an_admin_cancels_someone_s_open_order(slow_payments: Any) -> None:
    async with await client_of(slow_payments) as client:
        item = await make_product(client, stock=2)
        _, token = await register(client)
        order = await place(client, token, (item["id"], 1))
        admin = await admin_token(client)
        r = await client.post(f"/api/v1/orders/{order['id']}/cancel", headers=bearer(admin))
        assert r.status_code == 202, r.text
        assert (await final(client, token, order["id"]))["failure_reason"] == "cancelled_by_user"
        await settled_saga(client, token, order["id"])
        await stock_becomes(client, item["id"], stock=2, available=2)


async def test_a_payment_that_lands_after_a_timeout_is_refunded_and_the_order_stays_cancelled(hasty: Any) -> None:
    async with await client_of(hasty) as client:
        item = await make_product(client, stock=3)
        _, token = await register(client)
        order = await place(client, token, (item["id"], 1))
        await cancelled_then_refunded(client, token, order["id"], "timeout")
        await stock_becomes(client, item["id"], stock=3, available=3)
        engine = create_engine(hasty.database_url, pool_size=1)
        try:
            status = await scalar(
                engine, "SELECT status FROM payments.payments WHERE order_id = :o", o=uuid.UUID(order["id"])
            )
            assert status == "refunded"
            # one charge, refunded at the provider (a refund asked for twice happens once)
            charges = await scalar(
                engine,
                "SELECT count(*) FROM payments.provider_charges WHERE idempotency_key = :k AND refund_id IS NOT NULL",
                k=f"order-{order['id']}-charge",
            )
            assert charges == 1
        finally:
            await engine.dispose()


# -- races -----------------------------------------------------------------------------------------------


@pytest.mark.slow
async def test_sixty_buyers_racing_for_ten_units_give_ten_confirmed_fifty_rejected_and_no_stock(patient: Any) -> None:
    async with await client_of(patient) as client:
        await _sixty_buyers(client)


async def _sixty_buyers(client: httpx.AsyncClient) -> None:
    item = await make_product(client, stock=10)
    buyers = await asyncio.gather(*(register(client) for _ in range(60)))
    orders = await asyncio.gather(*(place(client, token, (item["id"], 1)) for _, token in buyers))
    finals = await asyncio.gather(
        *(final(client, token, order["id"], timeout=60) for (_, token), order in zip(buyers, orders, strict=True))
    )
    statuses = [o["status"] for o in finals]
    assert statuses.count("confirmed") == 10, [
        (o["status"], o["failure_reason"], o["created_at"], o["updated_at"]) for o in finals
    ]
    assert statuses.count("rejected") == 50
    assert {o["failure_reason"] for o in finals if o["status"] == "rejected"} == {"out_of_stock"}
    await stock_becomes(client, item["id"], stock=0, available=0)


@pytest.mark.slow
async def test_a_cancel_racing_the_saga_two_hundred_times_always_ends_consistent(patient: Any) -> None:
    """Each order is cancelled the moment it is accepted, so the cancel lands before,
    between or after `stock.reserved` / `payment.processed`. Whatever the order of
    events: a 202 cancel ends `cancelled`, a 409 one `confirmed`; sold units are
    exactly the confirmed ones; nothing stays reserved; every saga settles."""
    runs = 200
    client = await client_of(patient)
    engine = create_engine(patient.database_url, pool_size=2)
    try:
        await _cancel_race(client, engine, runs)
    finally:
        await client.aclose()
        await engine.dispose()


async def _cancel_race(client: httpx.AsyncClient, engine: AsyncEngine, runs: int) -> None:
    item = await make_product(client, stock=runs)
    _, token = await register(client)
    gate = asyncio.Semaphore(20)

    async def place_and_cancel() -> tuple[str, int]:
        async with gate:
            order = await place(client, token, (item["id"], 1))
            r = await client.post(f"/api/v1/orders/{order['id']}/cancel", headers=bearer(token))
            assert r.status_code in (202, 409), r.text
            return order["id"], r.status_code

    outcomes = await asyncio.gather(*(place_and_cancel() for _ in range(runs)))
    confirmed = 0
    for order_id, status in outcomes:
        done = await final(client, token, order_id, timeout=60)
        if status == 202:
            assert (done["status"], done["failure_reason"]) == ("cancelled", "cancelled_by_user"), done
        else:
            assert done["status"] == "confirmed", done
            confirmed += 1
    unsettled = []
    for order_id, _ in outcomes:
        try:
            view = await settled_saga(client, token, order_id, timeout=10)
        except AssertionError:
            unsettled.append(await saga(client, token, order_id))
            continue
        assert view["status"] in ("completed", "compensated"), view
    assert unsettled == []

    async def nothing_reserved() -> bool:
        after = await product(client, item["id"])
        return bool(after["stock"] == runs - confirmed and after["available"] == runs - confirmed)

    await eventually(nothing_reserved, timeout=30)
    live = await scalar(
        engine,
        "SELECT count(*) FROM catalog.inventory_reservations WHERE product_id = :p AND kind = 'order' AND status = 'active'",
        p=uuid.UUID(item["id"]),
    )
    assert live == 0


async def test_an_order_paid_with_the_silent_card_does_not_hold_up_other_orders(
    server_url: str, settings_factory: Callable[..., Settings]
) -> None:
    """The timeout card's provider never answers; payments waits for it (up to its
    provider timeout, 1.5 times the payment step's). Meanwhile other customers' orders
    must go on and reach their final status as usual."""
    async with (
        system_of_its_own(server_url, settings_factory, saga_step_timeout_seconds=4) as running,
        await client_of(running) as client,
    ):
        item = await make_product(client, stock=5)
        _, stuck = await register(client)
        _, other = await register(client)
        silent = await place(client, stuck, (item["id"], 1), card=SILENT)
        await asyncio.sleep(0.5)  # its payment is now running
        good = await place(client, other, (item["id"], 1))
        done = await final(client, other, good["id"], timeout=30)
        assert (done["status"], done["failure_reason"]) == ("confirmed", None)
        assert (await final(client, stuck, silent["id"], timeout=30))["failure_reason"] == "timeout"


async def test_a_saga_step_that_waited_for_the_lock_sees_what_the_holder_committed(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    """Every saga step locks the saga row, then reads the saga. A step that waited for
    the lock must see the order row as the holder left it, not as it was when the step
    began (a cancellation read as `pending` and written back undid the cancellation)."""
    from prost.orders.repository import SagaRepository

    item = await make_product(client, stock=2)
    _, token = await register(client)
    order = await place(client, token, (item["id"], 1), card=DECLINED)
    done = await final(client, token, order["id"])
    assert (done["status"], done["failure_reason"]) == ("cancelled", "payment_declined")
    await settled_saga(client, token, order["id"])  # no step of its own may queue for the lock below
    order_id = uuid.UUID(order["id"])

    async with db.transaction(engine) as holder:
        before = await SagaRepository(holder).get_for_update(order_id)
        assert before is not None
        waiter_started = asyncio.Event()

        async def waiter() -> Any:
            async with db.transaction(engine) as conn:
                waiter_started.set()
                return await SagaRepository(conn).get_for_update(order_id)  # waits for `holder`

        waiting = asyncio.create_task(waiter())
        await waiter_started.wait()
        await asyncio.sleep(0.2)
        assert not waiting.done()
        await holder.execute(
            sa.text("UPDATE orders.orders SET failure_reason = 'timeout' WHERE id = :o"), {"o": order_id}
        )
        await holder.execute(
            sa.text("UPDATE orders.saga_states SET version = version + 1 WHERE order_id = :o"), {"o": order_id}
        )
    seen = await waiting
    try:
        assert seen is not None
        assert seen.version == before.version + 1
        assert seen.failure_reason is not None
        assert seen.failure_reason.value == "timeout"
    finally:
        async with engine.begin() as conn:
            await conn.execute(
                sa.text("UPDATE orders.orders SET failure_reason = 'payment_declined' WHERE id = :o"), {"o": order_id}
            )
