"""Outbox → relay → bus → inbox, against the memory bus and real RabbitMQ."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

import asyncpg
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from prost.kit import db, inbox, outbox
from prost.kit.bus.base import MessageBus, PublishError
from prost.kit.db import Session
from prost.kit.messages import Envelope

from helpers import eventually
from messaging_support import (
    EFFECTS,
    Harness,
    clear_outbox,
    counting_handler,
    effects,
    envelope,
    record_effect,
    relay_for,
)

pytestmark = pytest.mark.usefixtures("schemas")


async def unsent(engine: AsyncEngine, schema: str) -> list[tuple[uuid.UUID, int, str | None]]:
    t = outbox.outbox_of(schema)
    async with engine.connect() as conn:
        rows = await conn.execute(
            sa.select(t.c.event_id, t.c.attempts, t.c.last_error).where(t.c.sent_at.is_(None)).order_by(t.c.seq)
        )
        return [tuple(r) for r in rows.all()]  # type: ignore[misc]


async def write(engine: AsyncEngine, envelopes: Sequence[Envelope]) -> None:
    async with db.transaction(engine) as session:
        await outbox.add_all_to_outbox(session, envelopes)


async def counting_orders_service(engine: AsyncEngine, harness: Harness) -> tuple[MessageBus, str]:
    """An empty `msg_a` outbox and a service counting the `order.*` events it gets in `msg_b`."""
    await clear_outbox(engine, "msg_a")
    bus = await harness.bus()
    service = harness.service("orders")
    await bus.consume(service, ["order.*"], counting_handler(engine, "msg_b", service))
    return bus, service


async def test_outbox_row_commits_with_the_transaction_or_not_at_all(engine: AsyncEngine, harness: Harness) -> None:
    await clear_outbox(engine, "msg_a")
    kept, dropped = envelope("order.placed"), envelope("order.placed")
    async with db.transaction(engine) as session:
        await outbox.add_to_outbox(session, kept)

    async def failing_change() -> None:
        async with db.transaction(engine) as session:
            await outbox.add_to_outbox(session, dropped)
            raise RuntimeError("the change failed")

    with pytest.raises(RuntimeError):
        await failing_change()

    assert [row[0] for row in await unsent(engine, "msg_a")] == [kept.event_id]


# A statement of its own that carries its events: an effect, written only when `:go`.
CARRYING = outbox.with_events(
    "msg_a",
    "WITH e AS (INSERT INTO msg_a.effects (service, event_id) "
    "SELECT 'carrier', :event_id WHERE CAST(:go AS boolean) RETURNING id), {events} SELECT count(*) FROM e",
    only_if="e",
)


async def _carrier_effects(engine: AsyncEngine, event_id: uuid.UUID) -> int:
    t = EFFECTS["msg_a"]
    async with engine.connect() as conn:
        found = await conn.scalar(sa.select(sa.func.count()).select_from(t).where(t.c.event_id == event_id))
    return int(found or 0)


async def test_a_statement_carries_its_events_in_order_and_only_when_it_wrote(engine: AsyncEngine) -> None:
    """One statement, outside any transaction: the effect and its events commit
    together; when the statement writes nothing (`only_if`), no event is written."""
    await clear_outbox(engine, "msg_a")
    written, skipped = uuid.uuid4(), uuid.uuid4()
    first, second = envelope("order.placed", n=1), envelope("order.placed", n=2)
    async with db.autocommit(engine) as session:
        assert await outbox.fetch_with_events(session, CARRYING, [first, second], event_id=written, go=True) == [(1,)]
        assert await outbox.fetch_with_events(
            session, CARRYING, [envelope("order.placed")], event_id=skipped, go=False
        ) == [(0,)]
        assert await outbox.fetch_with_events(session, CARRYING, [], event_id=uuid.uuid4(), go=True) == [(1,)]
    assert [row[0] for row in await unsent(engine, "msg_a")] == [first.event_id, second.event_id]
    assert await _carrier_effects(engine, written) == 1
    assert await _carrier_effects(engine, skipped) == 0


async def test_carried_events_roll_back_with_their_transaction_and_keep_to_their_schema(engine: AsyncEngine) -> None:
    await clear_outbox(engine, "msg_a")
    effect = uuid.uuid4()

    async def failing_change() -> None:
        async with db.transaction(engine) as session:
            await outbox.fetch_with_events(session, CARRYING, [envelope("order.placed")], event_id=effect, go=True)
            raise RuntimeError("the change failed")

    with pytest.raises(RuntimeError):
        await failing_change()
    async with db.autocommit(engine) as session:
        with pytest.raises(ValueError, match="msg_a"):
            await outbox.fetch_with_events(
                session, CARRYING, [envelope("order.placed", producer="msg_b")], event_id=effect, go=True
            )
    assert await unsent(engine, "msg_a") == []
    assert await _carrier_effects(engine, effect) == 0
    with pytest.raises(ValueError, match="events"):
        outbox.with_events("msg_a", "SELECT 1")


async def test_a_commit_wakes_the_relays_of_its_own_schema_only(engine: AsyncEngine) -> None:
    """Each schema's relay listens on a channel of its own: an event written to `msg_b`
    says nothing to a relay of `msg_a`, one written to `msg_a` does (at its commit)."""
    heard: dict[str, asyncio.Queue[str]] = {schema: asyncio.Queue() for schema in ("msg_a", "msg_b")}
    listener = await asyncpg.connect(outbox.listen_dsn(engine))
    try:
        for schema, queue in heard.items():
            await listener.add_listener(
                outbox.channel(schema), lambda *_args, schema=schema, queue=queue: queue.put_nowait(schema)
            )
        async with db.transaction(engine) as session:
            await outbox.add_to_outbox(session, envelope("order.placed", producer="msg_b"))
            await asyncio.sleep(0.1)
            assert heard["msg_b"].empty()  # not before the commit
        assert await asyncio.wait_for(heard["msg_b"].get(), 5) == "msg_b"
        await write(engine, [envelope("order.placed", producer="msg_a")])
        assert await asyncio.wait_for(heard["msg_a"].get(), 5) == "msg_a"
        await asyncio.sleep(0.1)
        assert heard["msg_a"].empty()
        assert heard["msg_b"].empty()  # msg_a's commit said nothing on msg_b's channel
    finally:
        await listener.close()


async def test_relay_publishes_marks_sent_and_the_inbox_records_the_effect(
    engine: AsyncEngine, harness: Harness
) -> None:
    bus, service = await counting_orders_service(engine, harness)
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
    bus, service = await counting_orders_service(engine, harness)
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


async def test_an_announcement_nobody_binds_leaves_the_outbox(engine: AsyncEngine, harness: Harness) -> None:
    await clear_outbox(engine, "msg_a")
    bus = await harness.bus(announcements={"thing.announced"})
    await write(engine, [envelope("thing.announced"), envelope("thing.announced")])

    await relay_for(engine, bus, "msg_a").relay_once()

    assert await unsent(engine, "msg_a") == []


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


class ConfirmsHalf(CrashAfterPublish):
    """Publishes the first half of a batch for real and hears nothing of the rest, as
    when the channel closes while confirms are outstanding."""

    def __init__(self, inner: MessageBus) -> None:
        super().__init__(inner, crashes=0)

    async def publish(self, envelopes: Sequence[Envelope]) -> None:
        half = list(envelopes)[: len(envelopes) // 2]
        await self.inner.publish(half)
        raise PublishError("channel closed", sent=[e.event_id for e in half])


async def test_rows_the_broker_did_not_confirm_stay_unsent(engine: AsyncEngine, harness: Harness) -> None:
    """The relay marks its batch sent when it claims it; what the broker did not confirm
    is put back before the mark commits."""
    bus, service = await counting_orders_service(engine, harness)
    batch = [envelope("order.placed", n=n) for n in range(6)]
    await write(engine, batch)

    with pytest.raises(PublishError):
        await relay_for(engine, ConfirmsHalf(bus), "msg_a").relay_once()
    assert [row[0] for row in await unsent(engine, "msg_a")] == [e.event_id for e in batch[3:]]
    assert await relay_for(engine, bus, "msg_a").relay_once() == 3
    await eventually(lambda: _has(engine, "msg_b", service, 6))
    assert sorted(await effects(engine, "msg_b", service)) == sorted(e.event_id for e in batch)


async def test_a_crash_between_publish_and_mark_gives_a_duplicate_the_inbox_absorbs(
    engine: AsyncEngine, harness: Harness
) -> None:
    await clear_outbox(engine, "msg_a")
    bus = await harness.bus()
    service = harness.service("orders")
    handled: list[uuid.UUID] = []
    count_once = counting_handler(engine, "msg_b", service)

    async def handle(env: Envelope) -> None:
        await count_once(env)
        handled.append(env.event_id)  # after the inbox's commit (or its refusal of a copy)

    await bus.consume(service, ["order.*"], handle)
    batch = [envelope("order.placed") for _ in range(4)]
    await write(engine, batch)

    crashing = relay_for(engine, CrashAfterPublish(bus, crashes=1), "msg_a")
    with pytest.raises(PublishError):
        await crashing.relay_once()
    assert len(await unsent(engine, "msg_a")) == 4  # nothing was marked
    assert await relay_for(engine, bus, "msg_a").relay_once() == 4

    await eventually(lambda: len(handled) == 8)
    assert sorted(await effects(engine, "msg_b", service)) == sorted(e.event_id for e in batch)


async def test_the_relays_mark_does_not_wait_for_its_wal_flush_and_nothing_else_changes(engine: AsyncEngine) -> None:
    """The claim makes its own transaction's commit asynchronous (a lost mark is only a
    duplicate, as above), and no other: the next unit of work, on the same kept
    connection or another, commits synchronously again."""
    await clear_outbox(engine, "msg_a")
    await write(engine, [envelope("order.placed", producer="msg_a")])
    show = db.Sql("SHOW synchronous_commit")
    async with db.transaction(engine) as session:
        assert await session.fetchval(show) == "on"
        assert len(await session.fetch(outbox._statements("msg_a").claim, parked=[], batch=10)) == 1
        assert await session.fetchval(show) == "off"
    for _ in range(3):
        async with db.transaction(engine) as session:
            assert await session.fetchval(show) == "on"
    assert await unsent(engine, "msg_a") == []


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
    async with db.transaction(engine) as session:
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


async def effect_transactions(engine: AsyncEngine, schema: str, service: str) -> int:
    """How many transactions wrote this service's effects (rows of one share an xmin)."""
    async with engine.connect() as conn:
        return int(
            await conn.scalar(
                sa.text(f"SELECT count(DISTINCT xmin::text) FROM {schema}.effects WHERE service = :s"), {"s": service}
            )
            or 0
        )


async def test_group_commit_puts_events_that_arrive_together_in_one_transaction(engine: AsyncEngine) -> None:
    box = inbox.Inbox(engine, "group", schema="msg_b")
    events = [envelope("order.placed") for _ in range(40)]

    async def handle(event: Envelope) -> bool:
        return await box.handle(event, lambda session: record_effect(session, "msg_b", "group", event))

    assert await asyncio.gather(*(handle(e) for e in events)) == [True] * 40
    assert sorted(await effects(engine, "msg_b", "group")) == sorted(e.event_id for e in events)
    # The first event starts alone; the other 39 wait for it and share (at most 32 a batch).
    assert await effect_transactions(engine, "msg_b", "group") <= 3
    assert await asyncio.gather(*(handle(e) for e in events)) == [False] * 40  # all recorded
    assert len(await effects(engine, "msg_b", "group")) == 40


async def test_group_commit_a_failing_event_fails_alone_and_duplicates_take_effect_once(engine: AsyncEngine) -> None:
    box = inbox.Inbox(engine, "group-fail", schema="msg_b")
    first, good, bad = envelope("order.placed"), envelope("order.placed"), envelope("order.placed")
    runs: list[uuid.UUID] = []

    async def effect(event: Envelope, session: Session) -> None:
        runs.append(event.event_id)
        await record_effect(session, "msg_b", "group-fail", event)
        if event is bad:
            raise RuntimeError("this one is broken")

    async def handle(event: Envelope) -> bool:
        return await box.handle(event, lambda session: effect(event, session))

    # `first` opens a transaction; the rest queue behind it and form one batch, in which
    # `bad` fails: that batch rolls back and each of its events runs alone.
    results = await asyncio.gather(
        handle(first), handle(good), handle(bad), handle(good), handle(first), return_exceptions=True
    )
    assert results[0] is True
    assert sorted(results[1::3], key=str) == [False, True]  # `good` twice: one effect
    assert isinstance(results[2], RuntimeError)
    assert results[4] is False  # `first` again: already recorded
    assert sorted(await effects(engine, "msg_b", "group-fail")) == sorted([first.event_id, good.event_id])
    async with engine.connect() as conn:
        assert not await inbox.seen(conn, "group-fail", bad.event_id, schema="msg_b")  # not marked processed
    assert runs.count(bad.event_id) == 2  # in the batch, then alone


async def test_group_commit_does_not_wait_long_for_a_lock_held_elsewhere(engine: AsyncEngine) -> None:
    """A batch that meets a row lock held by another transaction gives up after the
    batch lock timeout and runs its events one by one, which wait as usual."""
    box = inbox.Inbox(engine, "group-lock", schema="msg_b")
    async with engine.begin() as conn:
        await conn.execute(sa.text("CREATE TABLE IF NOT EXISTS msg_b.counter (id int PRIMARY KEY, n int NOT NULL)"))
        await conn.execute(sa.text("INSERT INTO msg_b.counter VALUES (1, 0) ON CONFLICT (id) DO UPDATE SET n = 0"))
    lead, *rest = [envelope("order.placed") for _ in range(5)]
    runs: list[uuid.UUID] = []

    async def bump(event: Envelope, session: Session) -> None:
        runs.append(event.event_id)
        await session.execute(sa.text("UPDATE msg_b.counter SET n = n + 1 WHERE id = 1"))

    async with engine.connect() as holder:
        await holder.execute(sa.text("SELECT n FROM msg_b.counter WHERE id = 1 FOR UPDATE"))
        # `lead` takes its transaction alone and is slow; the others queue and become a
        # batch, which meets the lock, times out, and falls back to one at a time.
        leading = asyncio.create_task(box.handle(lead, lambda session: asyncio.sleep(0.1)))
        await asyncio.sleep(0)
        waiting = [asyncio.create_task(box.handle(e, lambda session, e=e: bump(e, session))) for e in rest]
        await asyncio.sleep(0.1 + 3 * inbox.BATCH_LOCK_TIMEOUT_MS / 1000)
        assert leading.done()
        assert runs == [rest[0].event_id, rest[0].event_id]  # tried in the batch, now alone (waiting)
        assert not any(task.done() for task in waiting)
        await holder.rollback()
    assert await asyncio.gather(*waiting) == [True] * 4
    async with engine.connect() as conn:
        assert await conn.scalar(sa.text("SELECT n FROM msg_b.counter WHERE id = 1")) == 4


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
