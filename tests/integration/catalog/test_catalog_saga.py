"""The catalog's part in the order saga, on real PostgreSQL, through the inbox as the
runtime calls it: reserve all lines or none (converting a cart's holds), extend while
payment runs, commit, release; every instruction repeated, late or out of order."""

from __future__ import annotations

import asyncio
import logging
import uuid
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa
from catalog_support import counters, expire_now, make_product, outbox_events
from sqlalchemy.ext.asyncio import AsyncEngine

from prost.catalog import handlers, inventory
from prost.catalog.repository import ProductRepository
from prost.contracts.orders import OrderCancelled, OrderConfirmed, OrderPlaced, PaymentRequested
from prost.kit import db, inbox
from prost.kit.messages import Envelope, Event
from prost.kit.service import Raw
from prost.kit.settings import Settings

from helpers import engine_of_its_own

engine = engine_of_its_own()  # the catalog's sweeper of the session's system works on the run's database

CTX: Any = SimpleNamespace(name="catalog", settings=Settings(reservation_ttl_seconds=120, cart_hold_ttl_seconds=600))


async def deliver(engine: AsyncEngine, event: Event) -> Envelope:
    """Hand an event to the catalog's handler as the runtime does (through the inbox, one
    transaction; a raw handler on its own)."""
    envelope = Envelope.wrap(event, producer="orders", correlation_id=getattr(event, "order_id", None))
    handler = handlers.SUBSCRIPTIONS[event.TYPE]
    if isinstance(handler, Raw):
        await handler.handler(envelope, SimpleNamespace(**vars(CTX), engine=engine))  # type: ignore[arg-type]
        return envelope
    await inbox.handle_once(engine, "catalog", envelope, lambda session: handler(envelope, session, CTX))
    return envelope


def lines(*pairs: tuple[uuid.UUID, int]) -> list[dict[str, Any]]:
    return [{"product_id": pid, "quantity": q} for pid, q in pairs]


def placed(order_id: uuid.UUID, *pairs: tuple[uuid.UUID, int], cart_id: uuid.UUID | None = None) -> OrderPlaced:
    return OrderPlaced.model_validate(
        {
            "order_id": order_id,
            "user_id": uuid.uuid4(),
            "cart_id": cart_id,
            "lines": lines(*pairs),
            "total_amount": "1.00",
            "currency": "USD",
        }
    )


def confirmed(order_id: uuid.UUID, *pairs: tuple[uuid.UUID, int]) -> OrderConfirmed:
    return OrderConfirmed.model_validate({"order_id": order_id, "user_id": uuid.uuid4(), "lines": lines(*pairs)})


def cancelled(order_id: uuid.UUID, *pairs: tuple[uuid.UUID, int]) -> OrderCancelled:
    return OrderCancelled.model_validate(
        {
            "order_id": order_id,
            "user_id": uuid.uuid4(),
            "status": "cancelled",
            "reason": "payment_declined",
            "lines": lines(*pairs),
        }
    )


def payment_requested(order_id: uuid.UUID) -> PaymentRequested:
    return PaymentRequested.model_validate(
        {
            "order_id": order_id,
            "user_id": uuid.uuid4(),
            "amount": "1.00",
            "currency": "USD",
            "payment_token": "tok",
            "idempotency_key": "k",
        }
    )


async def hold(engine: AsyncEngine, cart_id: uuid.UUID, product_id: uuid.UUID, quantity: int) -> None:
    async with db.transaction(engine) as session:
        await inventory.set_hold(session, cart_id=cart_id, product_id=product_id, quantity=quantity, ttl_seconds=600)


async def statuses(engine: AsyncEngine, owner_id: uuid.UUID) -> list[tuple[str, str, int, str | None]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            sa.text(
                "SELECT kind, status, quantity, end_reason FROM catalog.inventory_reservations "
                "WHERE owner_id = :o ORDER BY product_id, created_at"
            ),
            {"o": owner_id},
        )
        return [tuple(r) for r in rows]  # type: ignore[misc]


# -- order.placed --------------------------------------------------------------------


async def test_an_order_is_reserved_line_by_line_and_announced(engine: AsyncEngine) -> None:
    a, b = await make_product(engine, stock=5), await make_product(engine, stock=2)
    order = uuid.uuid4()
    incoming = await deliver(engine, placed(order, (a, 3), (b, 2)))
    [event] = await outbox_events(engine, "stock.reserved", order_id=str(order))
    assert sorted((line["product_id"], line["quantity"]) for line in event["lines"]) == sorted(
        [(str(a), 3), (str(b), 2)]
    )
    assert event["expires_at"]
    assert (await counters(engine, a))["available"] == 2
    assert (await counters(engine, b))["available"] == 0
    async with engine.connect() as conn:
        envelope = (
            await conn.execute(
                sa.text(
                    "SELECT envelope FROM catalog.outbox WHERE event_type = 'stock.reserved' AND envelope->'payload'->>'order_id' = :o"
                ),
                {"o": str(order)},
            )
        ).scalar_one()
    assert (envelope["correlation_id"], envelope["causation_id"], envelope["producer"]) == (
        str(order),
        str(incoming.event_id),
        "catalog",
    )


async def test_an_order_with_a_short_line_reserves_nothing_and_names_the_short_lines(engine: AsyncEngine) -> None:
    a, b = await make_product(engine, stock=5), await make_product(engine, stock=1)
    order = uuid.uuid4()
    await deliver(engine, placed(order, (a, 3), (b, 2), (b, 1)))
    [event] = await outbox_events(engine, "stock.reservation_failed", order_id=str(order))
    assert event["reason"] == "out_of_stock"
    assert event["shortages"] == [{"product_id": str(b), "requested": 3, "available": 1}]
    assert (await counters(engine, a))["reserved"] == 0
    assert (await counters(engine, b))["reserved"] == 0
    assert await outbox_events(engine, "stock.reserved", order_id=str(order)) == []


async def test_an_unknown_or_inactive_product_makes_the_order_fail(engine: AsyncEngine) -> None:
    a = await make_product(engine, stock=5)
    async with db.transaction(engine) as session:
        await ProductRepository(session).update(a, {"active": False})
    unknown = uuid.uuid4()
    order = uuid.uuid4()
    await deliver(engine, placed(order, (a, 1), (unknown, 1)))
    [event] = await outbox_events(engine, "stock.reservation_failed", order_id=str(order))
    assert {(s["product_id"], s["available"]) for s in event["shortages"]} == {(str(a), 0), (str(unknown), 0)}


async def test_the_carts_holds_become_the_orders_reservation_in_one_step(engine: AsyncEngine) -> None:
    a, b = await make_product(engine, stock=2), await make_product(engine, stock=5)
    cart, order = uuid.uuid4(), uuid.uuid4()
    await hold(engine, cart, a, 2)
    await hold(engine, cart, b, 1)
    await deliver(engine, placed(order, (a, 2), (b, 3), cart_id=cart))
    assert await outbox_events(engine, "stock.reserved", order_id=str(order))
    ca, cb = await counters(engine, a), await counters(engine, b)
    assert (ca["reserved"], ca["available"]) == (2, 0)
    assert (cb["reserved"], cb["available"]) == (3, 2)
    assert sorted(await statuses(engine, cart)) == [
        ("cart_hold", "released", 1, "converted"),
        ("cart_hold", "released", 2, "converted"),
    ]
    assert sorted(await statuses(engine, order)) == [("order", "active", 2, None), ("order", "active", 3, None)]


async def test_a_hold_larger_than_its_line_gives_back_the_rest(engine: AsyncEngine) -> None:
    a = await make_product(engine, stock=5)
    cart, order = uuid.uuid4(), uuid.uuid4()
    await hold(engine, cart, a, 4)
    await deliver(engine, placed(order, (a, 1), cart_id=cart))
    assert (await counters(engine, a))["available"] == 4


async def test_a_failed_conversion_leaves_the_holds_as_they_were(engine: AsyncEngine) -> None:
    a, b = await make_product(engine, stock=2), await make_product(engine, stock=1)
    cart, order = uuid.uuid4(), uuid.uuid4()
    await hold(engine, cart, a, 2)
    await deliver(engine, placed(order, (a, 2), (b, 2), cart_id=cart))
    assert await outbox_events(engine, "stock.reservation_failed", order_id=str(order))
    assert await statuses(engine, cart) == [("cart_hold", "active", 2, None)]
    assert await statuses(engine, order) == []
    assert (await counters(engine, a))["reserved"] == 2


async def test_an_expired_hold_is_reserved_again_when_stock_allows(engine: AsyncEngine) -> None:
    a = await make_product(engine, stock=3)
    cart, order = uuid.uuid4(), uuid.uuid4()
    await hold(engine, cart, a, 3)
    await expire_now(engine, owner_id=cart)
    await deliver(engine, placed(order, (a, 3), cart_id=cart))
    assert await outbox_events(engine, "stock.reserved", order_id=str(order))
    c = await counters(engine, a)
    assert (c["reserved"], c["active_units"], c["available"]) == (3, 3, 0)


async def test_a_repeated_order_placed_reserves_once_and_repeats_its_answer(engine: AsyncEngine) -> None:
    a, b = await make_product(engine, stock=4), await make_product(engine, stock=0)
    ok, short = uuid.uuid4(), uuid.uuid4()
    for _ in range(2):
        await deliver(engine, placed(ok, (a, 3)))
        await deliver(engine, placed(short, (b, 1)))
    first, second = await outbox_events(engine, "stock.reserved", order_id=str(ok))
    assert first["lines"] == second["lines"]
    assert len(await outbox_events(engine, "stock.reservation_failed", order_id=str(short))) == 2
    assert (await counters(engine, a))["reserved"] == 3


# -- payment.requested ---------------------------------------------------------------


async def reserved_running_out(engine: AsyncEngine) -> tuple[uuid.UUID, uuid.UUID]:
    """(product, order): one unit reserved for the order, 5 seconds from running out."""
    a = await make_product(engine, stock=4)
    order = uuid.uuid4()
    await deliver(engine, placed(order, (a, 1)))
    async with engine.begin() as conn:
        await conn.execute(
            sa.text(
                "UPDATE catalog.inventory_reservations SET expires_at = now() + interval '5 seconds' WHERE owner_id = :o"
            ),
            {"o": order},
        )
    return a, order


async def reservation_ends(engine: AsyncEngine, order_id: uuid.UUID) -> tuple[str, float]:
    """(status, seconds left) of the order's reservation."""
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                sa.text(
                    "SELECT status, extract(epoch FROM expires_at - now()) AS left_s"
                    " FROM catalog.inventory_reservations WHERE owner_id = :o"
                ),
                {"o": order_id},
            )
        ).one()
    return row.status, float(row.left_s)


async def test_payment_requested_extends_the_live_reservation(engine: AsyncEngine) -> None:
    _, order = await reserved_running_out(engine)
    await deliver(engine, payment_requested(order))
    status, left = await reservation_ends(engine, order)
    assert status == "active"
    assert 100 < left <= 120
    await deliver(engine, payment_requested(uuid.uuid4()))  # an order this service never saw: nothing to do


@pytest.mark.parametrize("ended_by", ["confirmed", "cancelled", "expired"])
async def test_a_late_payment_requested_moves_no_reservation_that_has_ended(engine: AsyncEngine, ended_by: str) -> None:
    """The extension holds no lock on the order and keeps no inbox record: what keeps a
    late or repeated one from reviving anything is that only live reservations move."""
    a, order = await reserved_running_out(engine)
    if ended_by == "confirmed":
        await deliver(engine, confirmed(order, (a, 1)))
    elif ended_by == "cancelled":
        await deliver(engine, cancelled(order, (a, 1)))
    else:
        await expire_now(engine, owner_id=order)
    status_before, _ = await reservation_ends(engine, order)
    await deliver(engine, payment_requested(order))
    await deliver(engine, payment_requested(order))
    status, left = await reservation_ends(engine, order)
    assert status == status_before == {"confirmed": "committed", "cancelled": "released", "expired": "active"}[ended_by]
    assert left < 0 if ended_by == "expired" else left <= 5


async def test_an_extension_waits_for_its_products_and_then_sees_what_their_holder_did(engine: AsyncEngine) -> None:
    """The extension is one statement, with the lock order of every stock change: it
    waits while another writer holds the order's product, and once that writer has
    ended the reservation (here, sold it) the extension finds it ended and moves
    nothing."""
    a, order = await reserved_running_out(engine)
    async with engine.connect() as holder:
        await holder.execute(sa.text("SELECT id FROM catalog.products WHERE id = :a FOR UPDATE"), {"a": a})
        extension = asyncio.create_task(deliver(engine, payment_requested(order)))
        await asyncio.sleep(0.3)
        assert not extension.done()  # waiting for the product, the only row locked
        await holder.execute(
            sa.text("UPDATE catalog.inventory_reservations SET status = 'committed' WHERE owner_id = :o"), {"o": order}
        )
        await holder.commit()
        await asyncio.wait_for(extension, 10)
    status, left = await reservation_ends(engine, order)
    assert (status, left <= 5) == ("committed", True)


# -- order.confirmed and order.cancelled ----------------------------------------------


async def test_a_confirmed_order_takes_its_units_off_the_shelf_once(engine: AsyncEngine) -> None:
    a = await make_product(engine, stock=5)
    order = uuid.uuid4()
    await deliver(engine, placed(order, (a, 2)))
    await deliver(engine, confirmed(order, (a, 2)))
    await deliver(engine, confirmed(order, (a, 2)))
    await deliver(engine, cancelled(order, (a, 2)))
    c = await counters(engine, a)
    assert (c["stock"], c["reserved"], c["available"], c["committed_units"]) == (3, 0, 3, 2)
    [event] = await outbox_events(engine, "stock.committed", order_id=str(order))
    assert event["lines"] == [{"product_id": str(a), "quantity": 2}]
    assert await outbox_events(engine, "stock.released", order_id=str(order)) == []


async def test_a_cancelled_order_gives_its_units_back_once_and_answers_every_cancellation(engine: AsyncEngine) -> None:
    a = await make_product(engine, stock=5)
    order = uuid.uuid4()
    await deliver(engine, placed(order, (a, 2)))
    await deliver(engine, cancelled(order, (a, 2)))
    await deliver(engine, cancelled(order, (a, 2)))
    await deliver(engine, confirmed(order, (a, 2)))
    c = await counters(engine, a)
    assert (c["stock"], c["reserved"], c["available"]) == (5, 0, 5)
    first, repeated = await outbox_events(engine, "stock.released", order_id=str(order))
    assert (first["kind"], first["owner_id"], first["reason"], first["lines"]) == (
        "order",
        str(order),
        "cancelled",
        [{"product_id": str(a), "quantity": 2}],
    )
    assert repeated["lines"] == [], "a repeated cancellation is answered again, giving back nothing more"
    assert await outbox_events(engine, "stock.committed", order_id=str(order)) == []
    assert await statuses(engine, order) == [("order", "released", 2, "cancelled")]


async def test_a_cancellation_that_arrives_first_means_the_late_order_reserves_nothing(engine: AsyncEngine) -> None:
    a = await make_product(engine, stock=5)
    order = uuid.uuid4()
    await deliver(engine, cancelled(order, (a, 2)))
    await deliver(engine, placed(order, (a, 2)))
    assert await statuses(engine, order) == []
    assert (await counters(engine, a))["reserved"] == 0
    assert await outbox_events(engine, "stock.reserved", order_id=str(order)) == []
    [answer] = await outbox_events(engine, "stock.released", order_id=str(order))
    assert (answer["reason"], answer["lines"]) == ("cancelled", []), "the orders service waits for this answer"


async def test_a_confirmation_after_expiry_takes_the_units_from_free_stock(engine: AsyncEngine) -> None:
    a = await make_product(engine, stock=5)
    order = uuid.uuid4()
    await deliver(engine, placed(order, (a, 2)))
    await expire_now(engine, owner_id=order)
    async with db.transaction(engine) as session:
        await inventory.sweep_expired(session)
    await deliver(engine, confirmed(order, (a, 2)))
    c = await counters(engine, a)
    assert (c["stock"], c["reserved"], c["available"]) == (3, 0, 3)
    [event] = await outbox_events(engine, "stock.committed", order_id=str(order))
    assert event["lines"] == [{"product_id": str(a), "quantity": 2}]
    [expired] = await outbox_events(engine, "stock.released", order_id=str(order))
    assert expired["reason"] == "expired"


async def test_a_confirmation_whose_units_are_gone_logs_an_error_and_announces_nothing_false(
    engine: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = await make_product(engine, stock=2), await make_product(engine, stock=3)
    order = uuid.uuid4()
    await deliver(engine, placed(order, (a, 2), (b, 1)))
    await expire_now(engine, owner_id=order)
    await deliver(engine, placed(uuid.uuid4(), (a, 2)))  # someone else takes a's units once they expired
    with caplog.at_level(logging.ERROR, logger="prost.catalog.inventory"):
        await deliver(engine, confirmed(order, (a, 2), (b, 1)))
    assert any(str(order) in r.getMessage() and str(a) in r.getMessage() for r in caplog.records)
    [event] = await outbox_events(engine, "stock.committed", order_id=str(order))
    assert event["lines"] == [{"product_id": str(b), "quantity": 1}]
    ca, cb = await counters(engine, a), await counters(engine, b)
    assert (ca["stock"], ca["reserved"]) == (2, 2)
    assert (cb["stock"], cb["reserved"]) == (2, 0)


async def test_a_confirmation_before_the_order_was_placed_sells_from_free_stock_and_the_late_order_does_nothing(
    engine: AsyncEngine,
) -> None:
    a = await make_product(engine, stock=5)
    order = uuid.uuid4()
    await deliver(engine, confirmed(order, (a, 2)))
    await deliver(engine, placed(order, (a, 2)))
    c = await counters(engine, a)
    assert (c["stock"], c["reserved"]) == (3, 0)
    assert await outbox_events(engine, "stock.reserved", order_id=str(order)) == []


# -- expiry announcements ------------------------------------------------------------


async def test_expired_holds_and_reservations_are_announced_to_their_owners(engine: AsyncEngine) -> None:
    a = await make_product(engine, stock=5)
    cart, order = uuid.uuid4(), uuid.uuid4()
    await hold(engine, cart, a, 1)
    await deliver(engine, placed(order, (a, 2)))
    await expire_now(engine, owner_id=cart)
    await expire_now(engine, owner_id=order)
    async with db.transaction(engine) as session:
        await inventory.sweep_expired(session)
    [for_cart] = await outbox_events(engine, "stock.released", owner_id=str(cart))
    assert (for_cart["kind"], for_cart["order_id"], for_cart["reason"], for_cart["lines"]) == (
        "cart_hold",
        None,
        "expired",
        [{"product_id": str(a), "quantity": 1}],
    )
    [for_order] = await outbox_events(engine, "stock.released", owner_id=str(order))
    assert (for_order["kind"], for_order["order_id"], for_order["reason"]) == ("order", str(order), "expired")
    assert (await counters(engine, a))["reserved"] == 0
    async with db.transaction(engine) as session:
        await inventory.sweep_expired(session)
    assert len(await outbox_events(engine, "stock.released", owner_id=str(cart))) == 1


async def test_a_writer_that_needs_expired_units_expires_them_itself_and_announces_it(engine: AsyncEngine) -> None:
    a = await make_product(engine, stock=2)
    cart = uuid.uuid4()
    await hold(engine, cart, a, 2)
    await expire_now(engine, owner_id=cart)
    await hold(engine, uuid.uuid4(), a, 2)
    [event] = await outbox_events(engine, "stock.released", owner_id=str(cart))
    assert event["reason"] == "expired"
