"""Outbox → relay → bus → inbox, against the memory bus and real RabbitMQ."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from prost.kit import inbox, outbox
from prost.kit.bus.base import MessageBus, PublishError
from prost.kit.db import Session
from prost.kit.messages import Envelope

from helpers import eventually
from messaging_support import Harness, clear_outbox, counting_handler, effects, envelope, record_effect, relay_for

pytestmark = pytest.mark.usefixtures("schemas")


async def unsent(engine: AsyncEngine, schema: str) -> list[tuple[uuid.UUID, int, str | None]]:
    t = outbox.outbox_of(schema)
    async with engine.connect() as conn:
        rows = await conn.execute(
            sa.select(t.c.event_id, t.c.attempts, t.c.last_error).where(t.c.sent_at.is_(None)).order_by(t.c.seq)
        )
        return [tuple(r) for r in rows.all()]  # type: ignore[misc]


async def write(engine: AsyncEngine, envelopes: Sequence[Envelope]) -> None:
    async with engine.begin() as session:
        await outbox.add_all_to_outbox(session, envelopes)


async def test_outbox_row_commits_with_the_transaction_or_not_at_all(engine: AsyncEngine, harness: Harness) -> None:
    await clear_outbox(engine, "msg_a")
    kept, dropped = envelope("order.placed"), envelope("order.placed")
    async with engine.begin() as session:
        await outbox.add_to_outbox(session, kept)

    async def failing_change() -> None:
        async with engine.begin() as session:
            await outbox.add_to_outbox(session, dropped)
            raise RuntimeError("the change failed")

    with pytest.raises(RuntimeError):
        await failing_change()

    assert [row[0] for row in await unsent(engine, "msg_a")] == [kept.event_id]


async def test_relay_publishes_marks_sent_and_the_inbox_records_the_effect(
    engine: AsyncEngine, harness: Harness
) -> None:
    await clear_outbox(engine, "msg_a")
    bus = await harness.bus()
    service = harness.service("orders")
    await bus.consume(service, ["order.*"], counting_handler(engine, "msg_b", service))
    batch = [envelope("order.placed", n=n) for n in range(5)]
    await write(engine, batch)

    relay = relay_for(engine, bus, "msg_a")
    assert await relay.relay_once() == 5
    assert await relay.relay_once() == 0
    assert await unsent(engine, "msg_a") == []
    await eventually(lambda: _has(engine, "msg_b", service, 5))
    assert sorted(await effects(engine, "msg_b", service)) == sorted(e.event_id for e in batch)


async def _has(engine: AsyncEngine, schema: str, service: str, n: int) -> bool:
    return len(await effects(engine, schema, service)) >= n


async def test_unroutable_row_stays_unsent_and_does_not_block_later_rows(
    engine: AsyncEngine, harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    await clear_outbox(engine, "msg_a")
    bus = await harness.bus()
    service = harness.service("orders")
    await bus.consume(service, ["order.*"], counting_handler(engine, "msg_b", service))
    lost = envelope("nobody.listens")
    later = [envelope("order.placed") for _ in range(3)]
    await write(engine, [lost])
    await write(engine, later)

    relay = relay_for(engine, bus, "msg_a", batch_size=2)
    with caplog.at_level("ERROR", logger="prost.outbox"):
        for _ in range(3):
            await relay.relay_once()

    [(event_id, attempts, last_error)] = await unsent(engine, "msg_a")
    assert event_id == lost.event_id
    assert attempts == 1
    assert last_error is not None
    assert "unroutable" in caplog.text
    await eventually(lambda: _has(engine, "msg_b", service, 3))


async def test_a_duplicate_delivery_gives_one_effect(engine: AsyncEngine, harness: Harness) -> None:
    bus = await harness.bus()
    service = harness.service("cart")
    calls: list[uuid.UUID] = []
    count_once = counting_handler(engine, "msg_b", service)

    async def handle(env: Envelope) -> None:
        calls.append(env.event_id)
        await count_once(env)

    await bus.consume(service, ["cart.*"], handle)
    event = envelope("cart.checked_out")
    await bus.publish([event])
    await bus.publish([event])
    await bus.publish([event, event])

    await eventually(lambda: len(calls) == 4)
    assert await effects(engine, "msg_b", service) == [event.event_id]


class CrashAfterPublish(MessageBus):
    """Publishes for real, then fails as if the process died before marking the rows."""

    def __init__(self, inner: MessageBus, crashes: int) -> None:
        self.inner, self.crashes = inner, crashes

    async def publish(self, envelopes: Sequence[Envelope]) -> None:
        await self.inner.publish(envelopes)
        if self.crashes > 0:
            self.crashes -= 1
            raise PublishError("crashed between publish and mark")

    async def connect(self) -> None: ...
    async def close(self) -> None: ...
    async def declare(self, service: str, bindings: Sequence[str]) -> None: ...
    async def consume(self, service: str, bindings: Sequence[str], handler: object) -> None: ...  # type: ignore[override]
    async def listen(self, bindings: Sequence[str], handler: object) -> None: ...
    async def is_ready(self) -> bool:
        return True

    async def dead_letters(self, service: str) -> list:  # type: ignore[type-arg]
        return []

    async def replay(self, service: str, ids: Sequence[str] | None = None) -> int:
        return 0


async def test_a_crash_between_publish_and_mark_gives_a_duplicate_the_inbox_absorbs(
    engine: AsyncEngine, harness: Harness
) -> None:
    await clear_outbox(engine, "msg_a")
    bus = await harness.bus()
    service = harness.service("orders")
    deliveries: list[uuid.UUID] = []
    count_once = counting_handler(engine, "msg_b", service)

    async def handle(env: Envelope) -> None:
        deliveries.append(env.event_id)
        await count_once(env)

    await bus.consume(service, ["order.*"], handle)
    batch = [envelope("order.placed") for _ in range(4)]
    await write(engine, batch)

    crashing = relay_for(engine, CrashAfterPublish(bus, crashes=1), "msg_a")
    with pytest.raises(PublishError):
        await crashing.relay_once()
    assert len(await unsent(engine, "msg_a")) == 4  # nothing was marked
    assert await relay_for(engine, bus, "msg_a").relay_once() == 4

    await eventually(lambda: len(deliveries) == 8)
    assert sorted(await effects(engine, "msg_b", service)) == sorted(e.event_id for e in batch)


async def test_failed_handler_rolls_back_its_effect_and_is_not_marked_processed(engine: AsyncEngine) -> None:
    event = envelope("order.placed")

    async def fails(session: Session) -> None:
        await record_effect(session, "msg_b", "inbox-test", event)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await inbox.handle_once(engine, "inbox-test", event, fails, schema="msg_b")
    assert await effects(engine, "msg_b", "inbox-test") == []

    async def works(session: Session) -> None:
        await record_effect(session, "msg_b", "inbox-test", event)

    assert await inbox.handle_once(engine, "inbox-test", event, works, schema="msg_b") is True
    assert await inbox.handle_once(engine, "inbox-test", event, works, schema="msg_b") is False
    assert await effects(engine, "msg_b", "inbox-test") == [event.event_id]


async def test_inbox_record_is_per_service(engine: AsyncEngine) -> None:
    event_id = uuid.uuid4()
    async with engine.begin() as session:
        assert await inbox.record(session, "one", event_id, schema="msg_a") is True
        assert await inbox.record(session, "two", event_id, schema="msg_a") is True
        assert await inbox.record(session, "one", event_id, schema="msg_a") is False
        assert await inbox.seen(session, "two", event_id, schema="msg_a") is True


async def test_two_copies_at_once_take_effect_once(engine: AsyncEngine) -> None:
    event = envelope("order.placed")
    started = asyncio.Event()

    async def slow(session: Session) -> None:
        await record_effect(session, "msg_b", "race", event)
        started.set()
        await asyncio.sleep(0.2)

    async def second() -> bool:
        await started.wait()
        return await inbox.handle_once(engine, "race", event, slow, schema="msg_b")

    results = await asyncio.gather(inbox.handle_once(engine, "race", event, slow, schema="msg_b"), second())
    assert sorted(results) == [False, True]
    assert await effects(engine, "msg_b", "race") == [event.event_id]


async def test_purge_removes_only_sent_rows_older_than_the_retention(engine: AsyncEngine, harness: Harness) -> None:
    await clear_outbox(engine, "msg_a")
    old_sent, new_sent, old_unsent = envelope("a.b"), envelope("a.b"), envelope("a.b")
    await write(engine, [old_sent, new_sent, old_unsent])
    t = outbox.outbox_of("msg_a")
    async with engine.begin() as conn:
        await conn.execute(sa.update(t).values(created_at=sa.text("now() - interval '3 days'")))
        await conn.execute(
            sa.update(t).where(t.c.event_id == old_sent.event_id).values(sent_at=sa.text("now() - interval '2 days'"))
        )
        await conn.execute(sa.update(t).where(t.c.event_id == new_sent.event_id).values(sent_at=sa.func.now()))

    relay = relay_for(engine, await harness.bus(), "msg_a", retention_hours=24)
    assert await relay.purge() == 1
    async with engine.connect() as conn:
        left = set((await conn.scalars(sa.select(t.c.event_id))).all())
    assert left == {new_sent.event_id, old_unsent.event_id}
