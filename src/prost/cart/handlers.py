"""The cart's part of the saga: events it consumes, one handler each.

Every handler runs inside the inbox transaction (its writes commit with the
`(event_id, 'cart')` record) and is written for any order of delivery: it looks at
the checkout's current step in `cart.saga_states` and does nothing when the event is
stale, a duplicate, or not about a cart checkout; the order events of orders made
without a cart are acknowledged without a transaction at all (`Only`). No handler
calls another service; holds to place again are left `pending` for the re-hold loop
(`operations.hold_pending_lines_forever`), so a slow or absent catalog never holds
up or fails event handling.

    order.placed     a `starting` checkout whose answer was lost: the order exists,
                     so the cart is checked out after all
    order.confirmed  the cart becomes `ordered`; the user gets a fresh empty cart
    order.cancelled  (`cancelled` or `rejected`) the cart opens again with its lines,
                     every line `pending` a new hold
    stock.released   kind `cart_hold`: the cart's lines show the lapse; kind `order`
                     for a cancelled checkout: lines that found no stock try again
"""

from __future__ import annotations

import logging
import uuid

from prost.cart.domain import CartStatus, LockStatus, SagaRecord, SagaStatus, takes_order_events
from prost.cart.repository import CartRepository, SagaRepository
from prost.contracts.catalog import StockReleased
from prost.contracts.orders import OrderCancelled, OrderConfirmed, OrderPlaced
from prost.kit.db import Session
from prost.kit.messages import Envelope
from prost.kit.service import Only, ServiceContext, Subscription

log = logging.getLogger("prost.cart")


async def _live_checkout(session: Session, order_id: uuid.UUID, cart_id: uuid.UUID | None) -> SagaRecord | None:
    """The checkout this order event is about, with its cart locked, if it still
    follows its order. Lock order: the cart row, then the saga row (as in checkout)."""
    if cart_id is None:
        return None  # an order made without a cart
    saga = await SagaRepository.get_by_order(session, order_id=order_id)
    if saga is None or saga.cart_id != cart_id:
        log.info("order %s is not a checkout of cart %s; ignored", order_id, cart_id)
        return None
    await CartRepository.get(session, cart_id=saga.cart_id, lock=True)
    saga = await SagaRepository.get_by_order(session, order_id=order_id, lock=True)
    if saga is None or not takes_order_events(saga.status):
        return None
    return saga


async def mark_cart_checked_out_for_placed_order(envelope: Envelope, session: Session, ctx: ServiceContext) -> None:
    event = OrderPlaced.model_validate(envelope.payload)
    saga = await _live_checkout(session, event.order_id, event.cart_id)
    if saga is None or saga.status != SagaStatus.STARTING:
        return
    cart = await CartRepository.get(session, cart_id=saga.cart_id)
    if cart is not None and cart.status == CartStatus.OPEN:
        await CartRepository.set_status(session, cart_id=cart.id, status=CartStatus.CHECKED_OUT)
        await CartRepository.set_locks(session, cart_id=cart.id, status=LockStatus.CONVERTED)
    await SagaRepository.move(session, saga_id=saga.id, to=SagaStatus.PLACED)


async def start_fresh_cart_for_confirmed_order(envelope: Envelope, session: Session, ctx: ServiceContext) -> None:
    event = OrderConfirmed.model_validate(envelope.payload)
    saga = await _live_checkout(session, event.order_id, event.cart_id)
    if saga is None:
        return
    await SagaRepository.move(session, saga_id=saga.id, to=SagaStatus.CONFIRMED)
    cart = await CartRepository.get(session, cart_id=saga.cart_id)
    if cart is None or cart.status == CartStatus.ORDERED:
        return
    # The holds became the order's reservation, now committed: the cart's view of
    # them is history. The old cart stays for the record; a fresh one is current.
    await CartRepository.set_locks(session, cart_id=cart.id, status=LockStatus.CONVERTED)
    await CartRepository.set_status(session, cart_id=cart.id, status=CartStatus.ORDERED)
    await CartRepository.add_open(session, user_id=cart.user_id)


async def reopen_cart_for_cancelled_order(envelope: Envelope, session: Session, ctx: ServiceContext) -> None:
    event = OrderCancelled.model_validate(envelope.payload)
    saga = await _live_checkout(session, event.order_id, event.cart_id)
    if saga is None:
        return
    await SagaRepository.move(session, saga_id=saga.id, to=SagaStatus.CANCELLED, reason=event.reason or event.status)
    cart = await CartRepository.get(session, cart_id=saga.cart_id)
    if cart is None or cart.status == CartStatus.ORDERED:
        return
    if cart.status == CartStatus.CHECKED_OUT:
        await CartRepository.set_status(session, cart_id=cart.id, status=CartStatus.OPEN)
    # Whatever the catalog holds now (a rejected order left the holds; a cancelled
    # one released its reservation, or is about to), every line asks again.
    await CartRepository.set_locks(session, cart_id=cart.id, status=LockStatus.PENDING)


async def note_released_stock(envelope: Envelope, session: Session, ctx: ServiceContext) -> None:
    event = StockReleased.model_validate(envelope.payload)
    product_ids = [line.product_id for line in event.lines]
    if event.kind == "cart_hold":
        cart = await CartRepository.get(session, cart_id=event.owner_id, lock=True)
        if cart is None or cart.status != CartStatus.OPEN or not product_ids:
            return
        if event.reason == "expired":
            await CartRepository.expire_locks(session, cart_id=cart.id, product_ids=product_ids)
        else:
            await CartRepository.drop_locks_released_before(
                session, cart_id=cart.id, product_ids=product_ids, released_at=envelope.occurred_at
            )
        return
    if event.kind == "order" and event.order_id is not None:
        # The cancelled order's stock is free now: lines that found none try again.
        saga = await SagaRepository.get_by_order(session, order_id=event.order_id)
        if saga is None or saga.status != SagaStatus.CANCELLED:
            return
        cart = await CartRepository.get(session, cart_id=saga.cart_id, lock=True)
        if cart is not None and cart.status == CartStatus.OPEN:
            await CartRepository.set_locks(
                session, cart_id=cart.id, status=LockStatus.PENDING, where=[LockStatus.UNAVAILABLE]
            )


def made_from_a_cart(envelope: Envelope) -> bool:
    """Orders placed straight through the orders API have no cart: nothing here to do."""
    return envelope.payload.get("cart_id") is not None


SUBSCRIPTIONS: dict[str, Subscription] = {
    "order.placed": Only(made_from_a_cart, mark_cart_checked_out_for_placed_order),
    "order.confirmed": Only(made_from_a_cart, start_fresh_cart_for_confirmed_order),
    "order.cancelled": Only(made_from_a_cart, reopen_cart_for_cancelled_order),
    "stock.released": note_released_stock,
}
