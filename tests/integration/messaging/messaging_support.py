"""Shared parts of the messaging suite: one suite, both buses.

- `schemas`: two scratch service schemas (`msg_a`, `msg_b`) in the run's database, each
  with the `outbox` and `idempotency_records` every service schema has, plus an
  `effects` table a test handler writes to (a duplicate effect shows as a second row).
- `harness`: parametrised over the in-process bus and the machine's RabbitMQ (in the
  run's own vhost, with an exchange and service names of the test's own), so every
  case runs against both with the same code.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.ext.asyncio import AsyncEngine

from prost.kit import inbox, outbox
from prost.kit.bus.base import MessageBus
from prost.kit.db import Session, schema_metadata
from prost.kit.messages import Envelope

SCHEMAS = ("msg_a", "msg_b")
RETRY_MS = 20
ATTEMPTS = 3


def effects_of(schema: str) -> sa.Table:
    metadata = schema_metadata(schema)
    return sa.Table(
        "effects",
        metadata,
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("service", sa.String(100), nullable=False),
        sa.Column("event_id", pg.UUID(as_uuid=True), nullable=False),
    )


EFFECTS = {schema: effects_of(schema) for schema in SCHEMAS}


async def record_effect(session: Session, schema: str, service: str, envelope: Envelope) -> None:
    await session.execute(sa.insert(EFFECTS[schema]).values(service=service, event_id=envelope.event_id))


async def effects(engine: AsyncEngine, schema: str, service: str) -> list[uuid.UUID]:
    t = EFFECTS[schema]
    async with engine.connect() as conn:
        return list((await conn.scalars(sa.select(t.c.event_id).where(t.c.service == service))).all())


def counting_handler(engine: AsyncEngine, schema: str, service: str) -> Callable[[Envelope], Awaitable[None]]:
    """A handler whose effect (a row in `effects`) goes through the inbox."""

    async def effect(envelope: Envelope, session: Session) -> None:
        await record_effect(session, schema, service, envelope)

    return inbox.idempotent(engine, service, effect, schema=schema)


def envelope(event_type: str = "thing.happened", producer: str = "msg_a", **payload: Any) -> Envelope:
    return Envelope(event_type=event_type, producer=producer, payload=payload)


@dataclass
class Harness:
    """What a test needs of a bus, the same for both kinds."""

    kind: str
    make: Callable[..., Awaitable[MessageBus]]
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    buses: list[MessageBus] = field(default_factory=list)
    _main: MessageBus | None = None

    async def bus(self, **overrides: Any) -> MessageBus:
        """The test's bus (made on first use)."""
        if self._main is None:
            self._main = await self.new_bus(**overrides)
        return self._main

    async def new_bus(self, **overrides: Any) -> MessageBus:
        """Another connection to the same broker (memory: the same bus, it is one process)."""
        if self.kind == "memory" and self._main is not None:
            return self._main
        bus = await self.make(self, **overrides)
        self.buses.append(bus)
        return bus

    def service(self, name: str) -> str:
        """A service name of this test's own (queues never collide across tests)."""
        return f"{name}_{self.tag}"

    def topic(self, key: str) -> str:
        """A routing key of this test's own (RabbitMQ: the exchange is also the test's own)."""
        return key


async def make_memory(h: Harness, **overrides: Any) -> MessageBus:
    from prost.kit.bus.memory import MemoryBus

    options: dict[str, Any] = {"max_delivery_attempts": ATTEMPTS, "retry_base_delay_ms": RETRY_MS}
    options.update(overrides)
    bus = MemoryBus(**options)
    await bus.connect()
    return bus


def rabbit_maker(url: str) -> Callable[..., Awaitable[MessageBus]]:
    async def make(h: Harness, **overrides: Any) -> MessageBus:
        from prost.kit.bus.rabbitmq import RabbitMQBus

        options: dict[str, Any] = {
            "exchange": f"prost.events.{h.tag}",
            "max_delivery_attempts": ATTEMPTS,
            "retry_base_delay_ms": RETRY_MS,
            "prefetch": 64,
        }
        options.update(overrides)
        bus = RabbitMQBus(url, **options)
        await bus.connect()
        return bus

    return make


def relay_for(engine: AsyncEngine, bus: MessageBus, schema: str, **overrides: Any) -> outbox.OutboxRelay:
    options: dict[str, Any] = {"batch_size": 200, "poll_seconds": 0.5, "retention_hours": 24}
    options.update(overrides)
    return outbox.OutboxRelay(engine, bus, schema, **options)


async def clear_outbox(engine: AsyncEngine, schema: str) -> None:
    """Tests share the run's database: start each outbox test from an empty outbox."""
    async with engine.begin() as conn:
        await conn.execute(sa.delete(outbox.outbox_of(schema)))
