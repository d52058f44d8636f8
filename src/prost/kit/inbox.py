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

Group commit (`Inbox`): a consumer has many deliveries in flight (the bus's prefetch),
and a transaction per event pays `BEGIN`, the record and `COMMIT` (three round trips
and a WAL flush) for every one. `Inbox.handle` queues the event instead; one
transaction per service and process runs at a time, and it takes every event waiting
when it starts (up to `max_batch`): one `BEGIN`, one record statement for the
batch, each effect in arrival order, one `COMMIT`. Idle, an event still starts its
transaction at once, alone; busy, events wait for the transaction in flight and then
share the next one. The effects are the same as one transaction each, because:

- every effect sees the ones before it in the batch, as it would have seen them
  committed (effects are database work only: no calls to other services);
- a duplicate in the batch (recorded before, or twice in the batch) is skipped;
- when anything in the batch fails (an effect raises, a deadlock, the commit), the
  whole transaction rolls back and every event of it runs again in a transaction of
  its own, one after another: a failing event fails alone, the others commit, and
  nothing is recorded for the one that failed;
- one transaction at a time per service and process: a batch takes its row locks in
  the order of its events, not in the sorted order each handler keeps, so two
  batches of one process could deadlock.
  Against other processes (replicas, HTTP requests) a batch waits at most
  `BATCH_LOCK_TIMEOUT_MS` for a lock (`lock_timeout`, local to its transaction), then
  falls back to one transaction per event, so a deadlock costs that long, not
  PostgreSQL's `deadlock_timeout`;
- each event's handler returns only after its own effect committed, so the bus
  acknowledges nothing early.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from prost.kit import db
from prost.kit.bus.base import Handler
from prost.kit.db import Session, Sql, idempotency_of, quoted_schema
from prost.kit.logs import correlation_id_var
from prost.kit.messages import Envelope

log = logging.getLogger("prost.inbox")

Effect = Callable[[Session], Awaitable[None]]


BATCH_LOCK_TIMEOUT_MS = 100
"""How long a batch of the group commit waits for a row lock before it falls back."""


@cache
def _record_statements(schema: str) -> tuple[Sql, Sql]:
    """(one event, a batch of events) for one schema, built once as plain text: they
    run for every consumed message. In the batch's, `set_config(..., true)` is `SET
    LOCAL lock_timeout` for the transaction in the same round trip (true for every
    row, it filters nothing)."""
    one = Sql(record_sql(schema))
    batch = Sql(
        _insert_into(schema)
        + "SELECT 'event', e, :service_name, now() FROM unnest(CAST(:event_ids AS uuid[])) AS e "
        + "WHERE set_config('lock_timeout', :lock_timeout, true) IS NOT NULL "
        + _ON_CONFLICT
        + "RETURNING event_id"
    )
    return one, batch


def _insert_into(schema: str) -> str:
    return f"INSERT INTO {quoted_schema(schema)}.idempotency_records (kind, event_id, service_name, completed_at) "


_ON_CONFLICT = "ON CONFLICT (event_id, service_name) DO NOTHING "


def record_sql(schema: str) -> str:
    """`record` as SQL text (`:event_id`, `:service_name`): a row when the event is new.
    A statement that records its own event has it as a CTE, and does its work only if
    that CTE returned a row. A NULL `:event_id` records nothing (work caused by no event)."""
    return (
        _insert_into(schema)
        + "SELECT 'event', CAST(:event_id AS uuid), :service_name, now() WHERE CAST(:event_id AS uuid) IS NOT NULL "
        + _ON_CONFLICT
        + "RETURNING id"
    )


async def record_batch(
    session: Session, service_name: str, event_ids: Sequence[uuid.UUID], *, schema: str | None = None
) -> set[uuid.UUID]:
    """`record` for several distinct events in one statement, and a lock timeout of
    `BATCH_LOCK_TIMEOUT_MS` for the rest of the transaction; returns the new ones."""
    _, stmt = _record_statements(schema or service_name)
    rows = await session.fetch(
        stmt, event_ids=list(event_ids), service_name=service_name, lock_timeout=f"{BATCH_LOCK_TIMEOUT_MS}ms"
    )
    return {row[0] for row in rows}


async def record(session: Session, service_name: str, event_id: uuid.UUID, *, schema: str | None = None) -> bool:
    """Record that `service_name` processes `event_id`, in the caller's transaction.

    Returns False when it was already recorded (do nothing then). The record lives in
    `schema` (default: the service's own schema, named like the service)."""
    stmt, _ = _record_statements(schema or service_name)
    return await session.fetchrow(stmt, event_id=event_id, service_name=service_name) is not None


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
    async with db.transaction(engine) as session:
        if not await record(session, service_name, envelope.event_id, schema=schema):
            return False
        await fn(session)
        return True


@dataclass(slots=True)
class _Waiting:
    envelope: Envelope
    effect: Effect
    done: asyncio.Future[bool] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class Inbox:
    """One service's inbox with group commit (see the module's docstring)."""

    def __init__(
        self,
        engine: AsyncEngine,
        service_name: str,
        *,
        schema: str | None = None,
        max_batch: int = 32,
    ) -> None:
        self.engine = engine
        self.service_name = service_name
        self.schema = schema or service_name
        self.max_batch = max(1, max_batch)
        self._waiting: collections.deque[_Waiting] = collections.deque()
        self._drainer: asyncio.Task[None] | None = None

    async def handle(self, envelope: Envelope, effect: Effect) -> bool:
        """Run `effect(session)` for this event unless this service already did; returns
        once it committed (True) or was found to be a duplicate (False). An exception
        from `effect` rolls back this event's work and propagates (the bus retries)."""
        waiting = _Waiting(envelope, effect)
        self._waiting.append(waiting)
        if self._drainer is None:
            self._drainer = asyncio.create_task(self._drain(), name=f"{self.service_name}.inbox")
        return await waiting.done

    async def _drain(self) -> None:
        try:
            while self._waiting:
                batch = [self._waiting.popleft() for _ in range(min(self.max_batch, len(self._waiting)))]
                try:
                    await self._commit(batch)
                finally:
                    for waiting in batch:
                        if not waiting.done.done():
                            waiting.done.cancel()
        finally:
            self._drainer = None

    async def _commit(self, batch: list[_Waiting]) -> None:
        if len(batch) == 1:
            await self._one(batch[0])
            return
        try:
            outcome = await self._together(batch)
        except Exception as exc:
            log.info(
                "%s: a batch of %d events failed together (%s: %s); each runs alone",
                self.service_name,
                len(batch),
                type(exc).__name__,
                exc,
            )
            for waiting in batch:
                await self._one(waiting)
            return
        for waiting, ran in zip(batch, outcome, strict=True):
            if not waiting.done.done():
                waiting.done.set_result(ran)

    async def _together(self, batch: list[_Waiting]) -> list[bool]:
        unique = list(dict.fromkeys(w.envelope.event_id for w in batch))
        outcome: list[bool] = []
        async with db.transaction(self.engine) as session:
            fresh = await record_batch(session, self.service_name, unique, schema=self.schema)
            for waiting in batch:
                event_id = waiting.envelope.event_id
                ran = event_id in fresh
                fresh.discard(event_id)  # a second copy in the same batch is a duplicate
                if ran:
                    with _correlated(waiting.envelope):
                        await waiting.effect(session)
                outcome.append(ran)
        return outcome

    async def _one(self, waiting: _Waiting) -> None:
        try:
            with _correlated(waiting.envelope):
                ran = await handle_once(
                    self.engine, self.service_name, waiting.envelope, waiting.effect, schema=self.schema
                )
        except Exception as exc:
            if not waiting.done.done():
                waiting.done.set_exception(exc)
        else:
            if not waiting.done.done():
                waiting.done.set_result(ran)


@contextlib.contextmanager
def _correlated(envelope: Envelope) -> Iterator[None]:
    """Log lines of an effect carry its event's correlation id (a batch runs in the
    inbox's own task, not in the delivery's)."""
    token = correlation_id_var.set(envelope.correlation_id)
    try:
        yield
    finally:
        correlation_id_var.reset(token)


def idempotent(
    engine: AsyncEngine,
    service_name: str,
    fn: Callable[[Envelope, Session], Awaitable[None]],
    *,
    schema: str | None = None,
) -> Handler:
    """A bus handler that runs `fn(envelope, session)` through the service's `Inbox`."""
    box = Inbox(engine, service_name, schema=schema)

    async def handler(envelope: Envelope) -> None:
        async def effect(session: Session) -> None:
            await fn(envelope, session)

        await box.handle(envelope, effect)

    handler.__name__ = f"{service_name}:{getattr(fn, '__name__', 'handler')}"
    return handler
