"""The cart's event handlers against the real schema (a database of the module's own,
which no running re-hold loop touches), event by event as the runtime hands them over
(through the inbox): duplicates (as new deliveries with new event ids, which the inbox
cannot catch), stale and reordered events change nothing twice."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from prost.cart import handlers
from prost.cart.domain import CartStatus, Hold, LockStatus, Product, SagaStatus
from prost.cart.repository import CartRepository, SagaRepository
from prost.cart.tables import carts, inventory_locks, saga_states
from prost.contracts.catalog import StockLine, StockReleased
from prost.contracts.orders import OrderCancelled, OrderConfirmed, OrderPlaced
from prost.kit import db
from prost.kit.inbox import Inbox
from prost.kit.messages import Envelope, Event
from prost.runtime.host import handler_for

from helpers import engine_of_its_own

engine = engine_of_its_own()  # the cart's hold loop of the session's system works on the run's database

CONTEXT: Any = SimpleNamespace(name="cart")  # the cart's handlers use nothing else from it


class Checkout:
    """A user's cart with one held line, checked out as one order."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.user_id = uuid.uuid4()
        self.order_id = uuid.uuid4()
        self.product_id = uuid.uuid4()
        self.cart_id = uuid.uuid4()

    async def open_cart(self, *, expires_in: float = 600) -> None:
        async with db.transaction(self.engine) as s:
            await CartRepository.add_open(s, user_id=self.user_id)
            cart = await CartRepository.get_current(s, user_id=self.user_id)
            assert cart is not None
            self.cart_id = cart.id
            product = Product(product_id=self.product_id, sku="SKU-E", name="E", price=Decimal("2.50"), currency="USD")
            await CartRepository.save_line(s, cart_id=cart.id, product=product, quantity=2)
            hold = Hold(
                product_id=self.product_id, quantity=2, expires_at=datetime.now(UTC) + timedelta(seconds=expires_in)
            )
            await CartRepository.record_hold(s, cart_id=cart.id, hold=hold)

    async def start(self, *, placed: bool = True) -> None:
        """The checkout as the API leaves it: saga `starting`, or `placed` and the cart checked out."""
        async with db.transaction(self.engine) as s:
            lines = [{"product_id": str(self.product_id), "quantity": 2}]
            saga = await SagaRepository.add(
                s, cart_id=self.cart_id, order_id=self.order_id, user_id=self.user_id, lines=lines
            )
            if placed:
                await SagaRepository.move(s, saga_id=saga.id, to=SagaStatus.PLACED)
                await CartRepository.set_status(s, cart_id=self.cart_id, status=CartStatus.CHECKED_OUT)
                await CartRepository.set_locks(s, cart_id=self.cart_id, status=LockStatus.CONVERTED)

    async def deliver(self, event: Event, *, occurred_at: datetime | None = None) -> None:
        envelope = Envelope.wrap(event, producer="test", correlation_id=self.order_id)
        if occurred_at is not None:
            envelope = envelope.model_copy(update={"occurred_at": occurred_at})
        await handler_for(CONTEXT, Inbox(self.engine, "cart"), event.TYPE, handlers.SUBSCRIPTIONS[event.TYPE])(envelope)

    def confirmed(self, *, cart_id: uuid.UUID | str | None = "own") -> OrderConfirmed:
        return OrderConfirmed(
            order_id=self.order_id,
            user_id=self.user_id,
            cart_id=self.cart_id if cart_id == "own" else cart_id,
            lines=self._lines(),
        )

    def cancelled(
        self, status: str = "cancelled", reason: str = "payment_declined", *, cart_id: uuid.UUID | str | None = "own"
    ) -> OrderCancelled:
        return OrderCancelled(
            order_id=self.order_id,
            user_id=self.user_id,
            cart_id=self.cart_id if cart_id == "own" else cart_id,
            status=status,
            reason=reason,
            lines=self._lines(),
        )

    def placed(self, *, cart_id: uuid.UUID | str | None = "own") -> OrderPlaced:
        return OrderPlaced(
            order_id=self.order_id,
            user_id=self.user_id,
            cart_id=self.cart_id if cart_id == "own" else cart_id,
            lines=self._lines(),
            total_amount=Decimal("5.00"),
            currency="USD",
        )

    def hold_expired(self) -> StockReleased:
        return StockReleased(kind="cart_hold", owner_id=self.cart_id, reason="expired", lines=self._lines())

    def order_released(self) -> StockReleased:
        return StockReleased(
            kind="order", owner_id=self.order_id, order_id=self.order_id, reason="cancelled", lines=self._lines()
        )

    def _lines(self) -> list[StockLine]:
        return [StockLine(product_id=self.product_id, quantity=2)]

    async def carts(self) -> list[tuple[uuid.UUID, str]]:
        async with db.autocommit(self.engine) as c:
            rows = (
                await c.execute(
                    sa.select(carts.c.id, carts.c.status)
                    .where(carts.c.user_id == self.user_id)
                    .order_by(carts.c.created_at)
                )
            ).all()
        return [(r.id, r.status) for r in rows]

    async def saga(self) -> tuple[str, str | None]:
        async with db.autocommit(self.engine) as c:
            row = (
                await c.execute(
                    sa.select(saga_states.c.status, saga_states.c.failure_reason).where(
                        saga_states.c.order_id == self.order_id
                    )
                )
            ).one()
        return row.status, row.failure_reason

    async def lock(self) -> str:
        async with db.autocommit(self.engine) as c:
            status: str = (
                await c.execute(
                    sa.select(inventory_locks.c.status).where(
                        inventory_locks.c.cart_id == self.cart_id, inventory_locks.c.product_id == self.product_id
                    )
                )
            ).scalar_one()
        return status


async def checked_out(engine: AsyncEngine) -> Checkout:
    c = Checkout(engine)
    await c.open_cart()
    await c.start()
    return c


async def test_a_confirmed_order_leaves_the_user_one_fresh_cart_however_often_it_is_told(
    engine: AsyncEngine,
) -> None:
    c = await checked_out(engine)
    for _ in range(3):
        await c.deliver(c.confirmed())
    found = await c.carts()
    assert [status for _, status in found] == ["ordered", "open"]
    assert found[0][0] == c.cart_id
    assert await c.saga() == ("confirmed", None)


async def test_a_cancellation_after_the_confirmation_changes_nothing(engine: AsyncEngine) -> None:
    c = await checked_out(engine)
    await c.deliver(c.confirmed())
    await c.deliver(c.cancelled())
    assert [status for _, status in await c.carts()] == ["ordered", "open"]
    assert await c.saga() == ("confirmed", None)


async def test_a_cancelled_order_reopens_the_cart_once_and_asks_for_its_holds_again(engine: AsyncEngine) -> None:
    c = await checked_out(engine)
    await c.deliver(c.cancelled())
    assert await c.carts() == [(c.cart_id, "open")]
    assert await c.lock() == "pending"
    assert await c.saga() == ("cancelled", "payment_declined")
    # The re-hold loop found no stock; a repeated cancellation does not reset that.
    async with db.transaction(engine) as s:
        await CartRepository.set_locks(s, cart_id=c.cart_id, status=LockStatus.UNAVAILABLE)
    await c.deliver(c.cancelled())
    await c.deliver(c.confirmed())  # stale, reordered: ignored
    assert await c.carts() == [(c.cart_id, "open")]
    assert await c.lock() == "unavailable"
    # The order's stock came free: lines that found none try again.
    await c.deliver(c.order_released())
    assert await c.lock() == "pending"


async def test_a_rejected_order_reopens_the_cart_with_its_reason(engine: AsyncEngine) -> None:
    c = await checked_out(engine)
    await c.deliver(c.cancelled(status="rejected", reason="out_of_stock"))
    assert await c.carts() == [(c.cart_id, "open")]
    assert await c.saga() == ("cancelled", "out_of_stock")


async def test_released_order_stock_before_the_cancellation_changes_nothing_yet(engine: AsyncEngine) -> None:
    c = await checked_out(engine)
    await c.deliver(c.order_released())
    assert await c.carts() == [(c.cart_id, "checked_out")]
    assert await c.lock() == "converted"


async def test_an_order_placed_for_a_checkout_whose_answer_was_lost_checks_the_cart_out(
    engine: AsyncEngine,
) -> None:
    c = Checkout(engine)
    await c.open_cart()
    await c.start(placed=False)
    assert await c.saga() == ("starting", None)
    await c.deliver(c.placed())
    await c.deliver(c.placed())
    assert await c.carts() == [(c.cart_id, "checked_out")]
    assert await c.saga() == ("placed", None)
    assert await c.lock() == "converted"


async def test_events_about_orders_without_this_cart_are_ignored(engine: AsyncEngine) -> None:
    c = await checked_out(engine)
    await c.deliver(c.confirmed(cart_id=None))
    await c.deliver(c.confirmed(cart_id=uuid.uuid4()))
    other = Checkout(engine)
    other.cart_id = c.cart_id
    await other.deliver(other.cancelled())  # an order this cart never checked out
    assert await c.carts() == [(c.cart_id, "checked_out")]
    assert await c.saga() == ("placed", None)


async def test_events_of_orders_made_without_a_cart_take_no_transaction(engine: AsyncEngine) -> None:
    """Most orders of the orders API come with no cart: the cart has nothing to do, and
    keeps no inbox record of doing it."""
    c = await checked_out(engine)
    recorded = await inbox_records(engine)
    await c.deliver(c.placed(cart_id=None))
    await c.deliver(c.confirmed(cart_id=None))
    await c.deliver(c.cancelled(cart_id=None))
    assert await inbox_records(engine) == recorded
    await c.deliver(c.confirmed())
    assert await inbox_records(engine) == recorded + 1
    assert await c.saga() == ("confirmed", None)


async def inbox_records(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        count = await conn.scalar(sa.text("SELECT count(*) FROM cart.idempotency_records WHERE kind = 'event'"))
    return int(count or 0)


async def test_an_expired_hold_marks_the_line_lapsed(engine: AsyncEngine) -> None:
    c = Checkout(engine)
    await c.open_cart(expires_in=-1)
    await c.deliver(c.hold_expired())
    assert await c.lock() == "expired"


async def test_a_stale_expiry_does_not_touch_a_newer_hold(engine: AsyncEngine) -> None:
    c = Checkout(engine)
    await c.open_cart(expires_in=600)  # placed again after the old one lapsed
    await c.deliver(c.hold_expired())
    assert await c.lock() == "active"


async def test_a_hold_released_by_the_catalog_before_it_was_placed_again_is_kept(engine: AsyncEngine) -> None:
    c = Checkout(engine)
    await c.open_cart()
    released = StockReleased(kind="cart_hold", owner_id=c.cart_id, reason="released", lines=c._lines())
    await c.deliver(released, occurred_at=datetime.now(UTC) - timedelta(minutes=5))
    assert await c.lock() == "active"
    await c.deliver(released, occurred_at=datetime.now(UTC) + timedelta(seconds=1))
    assert await c.lock() == "expired"
