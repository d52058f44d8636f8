"""Orders' subscription table against the real schema, event by event as the runtime
hands them over (through the inbox)."""

from __future__ import annotations

import uuid
from types import SimpleNamespace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from prost.contracts.catalog import StockLine, StockReleased
from prost.kit.inbox import Inbox
from prost.kit.messages import Envelope
from prost.kit.settings import Settings
from prost.orders import handlers
from prost.runtime.host import handler_for

from helpers import engine_of_its_own

engine = engine_of_its_own()

CONTEXT: Any = SimpleNamespace(name="orders", settings=Settings())


async def deliver(engine: AsyncEngine, envelope: Envelope) -> None:
    subscription = handlers.SUBSCRIPTIONS[envelope.event_type]
    await handler_for(CONTEXT, Inbox(engine, "orders"), envelope.event_type, subscription)(envelope)


async def recorded(engine: AsyncEngine, envelope: Envelope) -> int:
    async with engine.connect() as conn:
        count = await conn.scalar(
            sa.text("SELECT count(*) FROM orders.idempotency_records WHERE event_id = :id"), {"id": envelope.event_id}
        )
    return int(count or 0)


def released(kind: str, owner_id: uuid.UUID) -> Envelope:
    event = StockReleased(
        kind=kind,
        owner_id=owner_id,
        order_id=owner_id if kind == "order" else None,
        reason="expired",
        lines=[StockLine(product_id=uuid.uuid4(), quantity=1)],
    )
    return Envelope.wrap(event, producer="catalog", correlation_id=owner_id)


async def test_a_cart_hold_s_release_takes_no_transaction(engine: AsyncEngine) -> None:
    """Every expired cart hold is announced as `stock.released` too: orders has nothing
    to do with it, and keeps no inbox record of doing it. An order's release goes
    through the inbox (here one for an order orders does not know: recorded, no effect)."""
    hold = released("cart_hold", uuid.uuid4())
    await deliver(engine, hold)
    assert await recorded(engine, hold) == 0

    order = released("order", uuid.uuid4())
    await deliver(engine, order)
    assert await recorded(engine, order) == 1
