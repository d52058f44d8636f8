"""The catalog's part in the place-order saga (DESIGN.md section 5): one handler per
instruction of the orders service, each run by the inbox in one transaction with its
outbox rows, but for the extension, which needs no record (see `inventory.py` for the
stock rules and the locks).

    order.placed       reserve every line or none (converting the cart's holds)
                       → stock.reserved {order_id, lines, expires_at}
                       | stock.reservation_failed {order_id, reason: out_of_stock, shortages}
    payment.requested  extend the order's live reservation to now + TTL (no event; safe
                       to repeat, so one statement of its own, not the inbox)
    order.confirmed    commit: stock goes down → stock.committed {order_id, lines}
    order.cancelled    release → stock.released {kind: order, reason: cancelled, lines}

Any of them may come twice or out of order. The order's `order_stock` row remembers
what was done: a repeated `order.placed` repeats the first answer (while it still
holds); a release after a commit, a commit after a release and a second of either
change nothing; a cancellation that comes first leaves a mark so the late
`order.placed` reserves nothing. Every `order.cancelled` of an unsold order is
answered with `stock.released` (the orders service's acknowledgement of its "release
stock" compensation, which it repeats until answered), with empty lines when
nothing was left to give back.
"""

from __future__ import annotations

import logging

from prost.catalog import inventory
from prost.contracts.catalog import (
    Shortage,
    StockCommitted,
    StockReleased,
    StockReservationFailed,
    StockReserved,
)
from prost.contracts.orders import OrderCancelled, OrderConfirmed, OrderPlaced, PaymentRequested
from prost.kit import db, outbox
from prost.kit.db import Session
from prost.kit.messages import Envelope, Event
from prost.kit.service import Raw, ServiceContext, Subscription

log = logging.getLogger("prost.catalog.saga")


async def _announce(session: Session, event: Event, *, order_id: object, caused_by: Envelope) -> None:
    await outbox.add_to_outbox(
        session, Envelope.wrap(event, producer="catalog", correlation_id=str(order_id), caused_by=caused_by)
    )


async def reserve_stock_for_order(envelope: Envelope, session: Session, ctx: ServiceContext) -> None:
    placed = OrderPlaced.model_validate(envelope.payload)
    lines = [(line.product_id, line.quantity) for line in placed.lines if line.quantity > 0]
    if len(lines) != len(placed.lines):
        log.warning("order %s: lines with a quantity below 1 ignored", placed.order_id)
    result = await inventory.reserve_for_order(
        session,
        order_id=placed.order_id,
        lines=lines,
        cart_id=placed.cart_id,
        ttl_seconds=ctx.settings.reservation_ttl_seconds,
    )
    if result.outcome == "reserved" and result.expires_at is not None:
        event: Event = StockReserved(order_id=placed.order_id, lines=result.lines, expires_at=result.expires_at)
    elif result.outcome == "failed":
        shortages = [
            Shortage(product_id=s.product_id, requested=s.requested, available=s.available) for s in result.shortages
        ]
        event = StockReservationFailed(order_id=placed.order_id, reason="out_of_stock", shortages=shortages)
    else:
        log.info("order %s: order.placed again after it was settled; nothing to do", placed.order_id)
        return
    await _announce(session, event, order_id=placed.order_id, caused_by=envelope)


async def extend_reservation_for_payment(envelope: Envelope, ctx: ServiceContext) -> None:
    """Not through the inbox: an extension is safe to repeat (see `inventory.extend_order`),
    so it needs no record, and its one statement runs beside the inbox's transaction
    instead of waiting its turn behind the steps that do need one."""
    requested = PaymentRequested.model_validate(envelope.payload)
    async with db.autocommit(ctx.engine) as session:
        await inventory.extend_order(
            session, order_id=requested.order_id, ttl_seconds=ctx.settings.reservation_ttl_seconds
        )


async def commit_stock_for_confirmed_order(envelope: Envelope, session: Session, ctx: ServiceContext) -> None:
    confirmed = OrderConfirmed.model_validate(envelope.payload)
    result = await inventory.commit_order(
        session, order_id=confirmed.order_id, lines=[(line.product_id, line.quantity) for line in confirmed.lines]
    )
    if result.outcome == "committed" and result.lines:
        await _announce(
            session,
            StockCommitted(order_id=confirmed.order_id, lines=result.lines),
            order_id=confirmed.order_id,
            caused_by=envelope,
        )


async def release_stock_for_cancelled_order(envelope: Envelope, session: Session, ctx: ServiceContext) -> None:
    """Release, and always answer `stock.released` (unless the order was sold): the
    orders service sends `order.cancelled` again until it sees that answer, so a
    cancellation that came before the order, or a repeated one, is answered too, with
    the lines given back this time (none)."""
    cancelled = OrderCancelled.model_validate(envelope.payload)
    result = await inventory.release_order(session, order_id=cancelled.order_id)
    if result.outcome == "released":
        event = StockReleased(
            kind="order",
            owner_id=cancelled.order_id,
            order_id=cancelled.order_id,
            reason="cancelled",
            lines=result.lines,
        )
        await _announce(session, event, order_id=cancelled.order_id, caused_by=envelope)


SUBSCRIPTIONS: dict[str, Subscription] = {
    OrderPlaced.TYPE: reserve_stock_for_order,
    PaymentRequested.TYPE: Raw(extend_reservation_for_payment),
    OrderConfirmed.TYPE: commit_stock_for_confirmed_order,
    OrderCancelled.TYPE: release_stock_for_cancelled_order,
}
