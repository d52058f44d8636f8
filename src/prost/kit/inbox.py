"""The inbox: each event takes effect at most once per service (DESIGN.md section 4, step 3).

Delivery is at least once, so a consumer can see an event twice (a relay that crashed
between publish and mark, a redelivery after a lost ack, a replay). The consumer writes
`(kind='event', event_id, service_name)` into its own schema's `idempotency_records`
in the same transaction as the effect. The unique key decides:

- first delivery: the row is inserted, the handler runs, both commit together;
- duplicate: `ON CONFLICT DO NOTHING` inserts nothing, the handler is skipped, the
  message is acknowledged;
- two copies at once: the second insert waits on the first transaction's row lock, then
  sees it committed (skip) or rolled back (runs);
- the handler raises: everything rolls back, including the record, and the exception
  goes to the bus, which retries; a failed message is never marked processed.

`handle_once` owns the transaction; `record` is for handlers that manage their own
(for instance one that must call a slow provider outside any transaction).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable
from functools import cache

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from prost.kit.bus.base import Handler
from prost.kit.db import Session, idempotency_of
from prost.kit.messages import Envelope

Effect = Callable[[Session], Awaitable[None]]
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


@cache
def _record_statement(schema: str) -> sa.TextClause:
    # Built once per schema as plain text: this runs for every consumed message.
    if not _SCHEMA_NAME.match(schema):
        raise ValueError(f"not a service schema name: {schema!r}")
    return sa.text(
        f'INSERT INTO "{schema}".idempotency_records (kind, event_id, service_name, completed_at) '
        "VALUES ('event', :event_id, :service_name, now()) "
        "ON CONFLICT (event_id, service_name) DO NOTHING RETURNING id"
    )


async def record(session: Session, service_name: str, event_id: uuid.UUID, *, schema: str | None = None) -> bool:
    """Record that `service_name` processes `event_id`, in the caller's transaction.

    Returns False when it was already recorded (do nothing then). The record lives in
    `schema` (default: the service's own schema, named like the service)."""
    stmt = _record_statement(schema or service_name)
    return (await session.execute(stmt, {"event_id": event_id, "service_name": service_name})).first() is not None


async def seen(session: Session, service_name: str, event_id: uuid.UUID, *, schema: str | None = None) -> bool:
    """Whether `service_name` already processed `event_id` (a read, takes no lock)."""
    t = idempotency_of(schema or service_name)
    found = await session.scalar(
        sa.select(t.c.id).where(t.c.kind == "event", t.c.event_id == event_id, t.c.service_name == service_name)
    )
    return found is not None


async def handle_once(
    engine: AsyncEngine, service_name: str, envelope: Envelope, fn: Effect, *, schema: str | None = None
) -> bool:
    """Run `fn(session)` for this event unless `service_name` already did, all in one
    transaction with the record. Returns True when it ran, False for a duplicate.
    An exception from `fn` rolls back everything and propagates (the bus retries)."""
    async with engine.begin() as session:
        if not await record(session, service_name, envelope.event_id, schema=schema):
            return False
        await fn(session)
        return True


def idempotent(
    engine: AsyncEngine,
    service_name: str,
    fn: Callable[[Envelope, Session], Awaitable[None]],
    *,
    schema: str | None = None,
) -> Handler:
    """A bus handler that runs `fn(envelope, session)` through `handle_once`."""

    async def handler(envelope: Envelope) -> None:
        async def effect(session: Session) -> None:
            await fn(envelope, session)

        await handle_once(engine, service_name, envelope, effect, schema=schema)

    handler.__name__ = f"{service_name}:{getattr(fn, '__name__', 'handler')}"
    return handler
