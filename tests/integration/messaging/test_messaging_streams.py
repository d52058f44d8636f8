"""Streams through running relays: replicas, several schemas, dropped connections, a
broker restart, an embedded restart. Every case ends with each event counted once
after the inbox and every outbox row sent."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Sequence

import asyncpg
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from prost.kit import db, outbox
from prost.kit.bus.base import MessageBus, PublishError
from prost.kit.bus.memory import MemoryBus
from prost.kit.bus.rabbitmq import RabbitMQBus
from prost.kit.messages import Envelope

from helpers import eventually
from messaging_support import (
    EFFECTS,
    Harness,
    clear_outbox,
    counting_handler,
    effects,
    envelope,
    rabbit_maker,
    relay_for,
)

pytestmark = pytest.mark.usefixtures("schemas")

# Streams share the machine's PostgreSQL with whatever else runs: a handler may meet
# "too many clients" for a moment. More attempts and fewer handlers at once keep such
# a moment from parking events, which would be right but not what these cases test.
PATIENT = {"max_delivery_attempts": 8, "prefetch": 16}


class Counting(MessageBus):
    """Passes publishes through and remembers what was confirmed (per relay)."""

    def __init__(self, inner: MessageBus) -> None:
        self.inner = inner
        self.published: list[uuid.UUID] = []

    async def publish(self, envelopes: Sequence[Envelope]) -> None:
        await self.inner.publish(envelopes)
        self.published.extend(e.event_id for e in envelopes)

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


@contextlib.asynccontextmanager
async def running(*relays: outbox.OutboxRelay) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(r.run()) for r in relays]
    try:
        await asyncio.wait_for(asyncio.gather(*(r.listening.wait() for r in relays)), 10)
        yield
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def write_stream(engine: AsyncEngine, envelopes: Sequence[Envelope], *, chunk: int, pause: float = 0.0) -> None:
    for start in range(0, len(envelopes), chunk):
        async with db.transaction(engine) as session:
            await outbox.add_all_to_outbox(session, envelopes[start : start + chunk])
        if pause:
            await asyncio.sleep(pause)


async def all_handled(engine: AsyncEngine, schema: str, service: str, n: int) -> bool:
    t = EFFECTS[schema]
    async with engine.connect() as conn:
        got = await conn.scalar(sa.select(sa.func.count()).select_from(t).where(t.c.service == service))
    return int(got or 0) >= n


async def assert_each_counted_once(
    engine: AsyncEngine, schema: str, service: str, expected: Sequence[Envelope]
) -> None:
    got = await effects(engine, schema, service)
    assert len(got) == len(set(got)), "an event took effect twice"
    assert set(got) == {e.event_id for e in expected}


@pytest.mark.slow
async def test_two_relays_over_ten_thousand_rows_publish_every_row_once(engine: AsyncEngine, harness: Harness) -> None:
    await clear_outbox(engine, "msg_a")
    service = harness.service("orders")
    bus = await harness.bus(**PATIENT)
    await bus.consume(service, ["order.*"], counting_handler(engine, "msg_b", service))
    first, second = Counting(bus), Counting(await harness.new_bus(**PATIENT))
    stream = [envelope("order.placed", n=n) for n in range(10_000)]

    async with running(relay_for(engine, first, "msg_a"), relay_for(engine, second, "msg_a")):
        await write_stream(engine, stream, chunk=500)
        await eventually(lambda: all_handled(engine, "msg_b", service, len(stream)), timeout=240, interval=0.5)
        await eventually(lambda: _drained(engine, "msg_a"), timeout=30)

    assert len(first.published) + len(second.published) == len(stream), "a row was published twice"
    assert set(first.published).isdisjoint(second.published)
    await assert_each_counted_once(engine, "msg_b", service, stream)


async def _outbox_rows(engine: AsyncEngine, schema: str, where: sa.ColumnElement[bool]) -> int:
    t = outbox.outbox_of(schema)
    async with engine.connect() as conn:
        return int(await conn.scalar(sa.select(sa.func.count()).select_from(t).where(where)) or 0)


async def _drained(engine: AsyncEngine, schema: str) -> bool:
    return not await _outbox_rows(engine, schema, outbox.outbox_of(schema).c.sent_at.is_(None))


async def test_relays_over_two_schemas_at_once_each_publish_their_own(engine: AsyncEngine, harness: Harness) -> None:
    await clear_outbox(engine, "msg_a")
    await clear_outbox(engine, "msg_b")
    service = harness.service("audit")
    bus = await harness.bus(**PATIENT)
    await bus.consume(service, ["#"], counting_handler(engine, "msg_a", service))
    from_a = [envelope("stock.reserved", producer="msg_a", n=n) for n in range(300)]
    from_b = [envelope("payment.processed", producer="msg_b", n=n) for n in range(300)]
    relay_a = relay_for(engine, Counting(bus), "msg_a", poll_seconds=3600)  # only NOTIFY can wake them
    relay_b = relay_for(engine, Counting(await harness.new_bus(**PATIENT)), "msg_b", poll_seconds=3600)

    async with running(relay_a, relay_b):
        await asyncio.gather(write_stream(engine, from_a, chunk=25), write_stream(engine, from_b, chunk=30))
        await eventually(lambda: all_handled(engine, "msg_a", service, 600), timeout=60)
        # A row is marked sent just after its handler commits (memory bus: when the
        # publish returns); stopping the relays in between would rightly leave it unsent.
        await eventually(lambda: _drained(engine, "msg_a"), timeout=30)
        await eventually(lambda: _drained(engine, "msg_b"), timeout=30)

    assert isinstance(relay_a.bus, Counting)
    assert isinstance(relay_b.bus, Counting)
    assert set(relay_a.bus.published) == {e.event_id for e in from_a}
    assert set(relay_b.bus.published) == {e.event_id for e in from_b}
    await assert_each_counted_once(engine, "msg_a", service, from_a + from_b)


async def _listen_backends(engine: AsyncEngine) -> list[int]:
    """The LISTEN connections of relays over the test schema (a running system's relays
    listen in the same database, for their own schemas)."""
    async with engine.connect() as conn:
        rows = await conn.scalars(
            sa.text("SELECT pid FROM pg_stat_activity WHERE application_name = :app AND datname = current_database()"),
            {"app": f"{outbox.LISTEN_APPLICATION_NAME}:msg_a"},
        )
        return list(rows.all())


async def test_relay_listens_again_after_its_connection_drops(
    engine: AsyncEngine, elsewhere: AsyncEngine, harness: Harness
) -> None:
    await clear_outbox(engine, "msg_a")
    service = harness.service("orders")
    bus = await harness.bus(**PATIENT)
    await bus.consume(service, ["order.*"], counting_handler(engine, "msg_b", service))
    # No poll, and the rows are written `elsewhere`: only NOTIFY can wake it.
    relay = relay_for(engine, bus, "msg_a", poll_seconds=3600)

    async with running(relay):
        [old_pid] = await eventually(lambda: _listen_backends(engine))
        async with engine.connect() as conn:
            await conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": old_pid})
        new_pids = await eventually(lambda: _new_backend(engine, old_pid))
        assert old_pid not in new_pids
        await eventually(relay.listening.is_set)
        batch = [envelope("order.placed") for _ in range(10)]
        await write_stream(elsewhere, batch, chunk=10)
        await eventually(lambda: all_handled(engine, "msg_b", service, 10))

    await assert_each_counted_once(engine, "msg_b", service, batch)


@contextlib.asynccontextmanager
async def notifications(engine: AsyncEngine, schema: str) -> AsyncIterator[asyncio.Queue[str]]:
    """What is said on `schema`'s outbox channel while the block runs."""
    heard: asyncio.Queue[str] = asyncio.Queue()
    listener = await asyncpg.connect(outbox.listen_dsn(engine))
    try:
        await listener.add_listener(outbox.channel(schema), lambda *_args: heard.put_nowait(schema))
        yield heard
    finally:
        await listener.close()


def sink() -> MemoryBus:
    """A bus that takes `thing.happened` and gives it to nobody (an announcement)."""
    return MemoryBus(announcements={"thing.happened"})


class Refusing(Counting):
    """A broker that is away: every publish fails."""

    async def publish(self, envelopes: Sequence[Envelope]) -> None:
        raise PublishError("the broker is away")


async def test_a_relay_is_woken_by_the_writers_of_its_own_process_without_a_notify(
    engine: AsyncEngine, elsewhere: AsyncEngine
) -> None:
    """Rows written through the relay's own engine wake it in-process, at commit; rows
    written elsewhere notify, and wake it through its LISTEN. With no poll to speak of,
    nothing else could get either out in time."""
    await clear_outbox(engine, "msg_a")
    bus = Counting(sink())
    relay = relay_for(engine, bus, "msg_a", poll_seconds=3600)
    ours, theirs = envelope("thing.happened"), envelope("thing.happened")
    async with notifications(engine, "msg_a") as heard, running(relay):
        async with db.transaction(engine) as session:
            await outbox.add_to_outbox(session, ours)
            await asyncio.sleep(0.2)
            assert bus.published == []  # not before the commit
        await eventually(lambda: bus.published == [ours.event_id], timeout=5)
        await asyncio.sleep(0.2)
        assert heard.empty()  # no NOTIFY for it

        await write_stream(elsewhere, [theirs], chunk=1)
        assert await asyncio.wait_for(heard.get(), 5) == "msg_a"
        await eventually(lambda: bus.published == [ours.event_id, theirs.event_id], timeout=5)
    assert await _drained(engine, "msg_a")


CARRYING = outbox.with_events(
    "msg_a", "WITH e AS (SELECT CAST(:n AS int) AS n), {events} SELECT count(*) FROM e", only_if="e"
)


async def test_a_statement_that_carries_events_wakes_the_relay_like_any_writer(
    engine: AsyncEngine, elsewhere: AsyncEngine
) -> None:
    """Events carried by a statement outside any transaction wake the relay of their own
    process once the statement has committed them, without a NOTIFY; from another
    engine, the statement itself notifies."""
    await clear_outbox(engine, "msg_a")
    bus = Counting(sink())
    relay = relay_for(engine, bus, "msg_a", poll_seconds=3600)
    ours, theirs = envelope("thing.happened"), envelope("thing.happened")
    async with notifications(engine, "msg_a") as heard, running(relay):
        await eventually(lambda: relay.healthy, timeout=5)
        async with db.autocommit(engine) as session:
            await outbox.fetch_with_events(session, CARRYING, [ours], n=1)
        await eventually(lambda: bus.published == [ours.event_id], timeout=5)
        await asyncio.sleep(0.2)
        assert heard.empty()  # no NOTIFY for it

        async with db.autocommit(elsewhere) as session:
            await outbox.fetch_with_events(session, CARRYING, [theirs], n=1)
        assert await asyncio.wait_for(heard.get(), 5) == "msg_a"
        await eventually(lambda: bus.published == [ours.event_id, theirs.event_id], timeout=5)
    assert await _drained(engine, "msg_a")


async def test_while_the_local_relay_fails_its_writers_notify_the_others(
    engine: AsyncEngine, elsewhere: AsyncEngine
) -> None:
    """A relay of this process that cannot publish (its broker connection is down, say)
    is no reason to keep the relays of other processes asleep: writers notify again, and
    one that publishes fine elsewhere takes the rows."""
    await clear_outbox(engine, "msg_a")
    stuck = relay_for(engine, Refusing(sink()), "msg_a", poll_seconds=3600)
    working = Counting(sink())
    other = relay_for(elsewhere, working, "msg_a", poll_seconds=3600)
    first, second = envelope("thing.happened"), envelope("thing.happened")
    async with notifications(engine, "msg_a") as heard, running(stuck, other):
        await write_stream(engine, [first], chunk=1)  # wakes `stuck` only, which fails on it
        await eventually(lambda: not stuck.healthy, timeout=5)
        await write_stream(engine, [second], chunk=1)
        assert await asyncio.wait_for(heard.get(), 5) == "msg_a"
        await eventually(lambda: set(working.published) == {first.event_id, second.event_id}, timeout=10)
    assert await _drained(engine, "msg_a")


async def test_the_relay_purges_by_itself_and_publishes_while_a_purge_runs(engine: AsyncEngine) -> None:
    """`run()` purges sent rows past the retention every `purge_every_seconds`, in a task
    beside the publishing: a slow purge (here, one held until the test lets it go)
    delays no event."""
    await clear_outbox(engine, "msg_a")
    stale = envelope("thing.happened")
    await write_stream(engine, [stale], chunk=1)
    t = outbox.outbox_of("msg_a")
    async with engine.begin() as conn:
        await conn.execute(
            sa.update(t)
            .where(t.c.event_id == stale.event_id)
            .values(sent_at=sa.func.now() - sa.text("interval '2 days'"))
        )
    bus = Counting(sink())
    relay = relay_for(engine, bus, "msg_a", poll_seconds=3600, purge_every_seconds=0.05)
    purging, go_on = asyncio.Event(), asyncio.Event()
    purge = relay.purge

    async def held_purge() -> int:
        purging.set()
        await go_on.wait()
        return await purge()

    relay.purge = held_purge  # type: ignore[method-assign]
    fresh = envelope("thing.happened")
    async with running(relay):
        await asyncio.wait_for(purging.wait(), 5)
        await write_stream(engine, [fresh], chunk=1)
        await eventually(lambda: bus.published == [fresh.event_id], timeout=5)
        go_on.set()
        await eventually(lambda: _gone(engine, stale.event_id), timeout=5)
    assert await _drained(engine, "msg_a")


async def _gone(engine: AsyncEngine, event_id: uuid.UUID) -> bool:
    return not await _outbox_rows(engine, "msg_a", outbox.outbox_of("msg_a").c.event_id == event_id)


async def _new_backend(engine: AsyncEngine, old: int) -> list[int]:
    pids = await _listen_backends(engine)
    return pids if pids and old not in pids else []


async def test_embedded_restart_loses_nothing_the_row_stays_unsent_until_handled(engine: AsyncEngine) -> None:
    await clear_outbox(engine, "msg_a")
    service = "restart"
    release = asyncio.Event()
    first = MemoryBus(max_delivery_attempts=3, retry_base_delay_ms=20)
    await first.connect()
    handled_before_stop: list[uuid.UUID] = []

    async def stuck(env: Envelope) -> None:
        handled_before_stop.append(env.event_id)
        await release.wait()

    await first.consume(service, ["order.*"], stuck)
    event = envelope("order.placed")
    await write_stream(engine, [event], chunk=1)

    async def relay_until_it_claims() -> int:
        """As a running relay does, a claim that found nothing is made again (seen once
        in about thirty loaded runs of the suite, cause not found). A row really lost
        still fails the test: the subscriber never gets it."""
        relay = relay_for(engine, first, "msg_a")
        while (claimed := await relay.relay_once()) == 0:
            await asyncio.sleep(0.05)
        return claimed

    relaying = asyncio.create_task(relay_until_it_claims())
    try:
        await eventually(lambda: handled_before_stop or relaying.done())
    except AssertionError:
        relaying.cancel()  # no relay of this test left claiming the next tests' rows
        raise
    if not handled_before_stop:  # the relay ended without delivering: say how
        pytest.fail(f"the relay ended before the subscriber got the event: {relaying.result()!r}")
    await first.close()  # the process stops while the subscriber is still at work
    with pytest.raises(PublishError):
        await relaying
    assert not await _drained(engine, "msg_a")

    second = MemoryBus(max_delivery_attempts=3, retry_base_delay_ms=20)
    await second.connect()
    try:
        await second.consume(service, ["order.*"], counting_handler(engine, "msg_b", service))
        assert await relay_for(engine, second, "msg_a").relay_once() == 1
        await assert_each_counted_once(engine, "msg_b", service, [event])
        assert await _drained(engine, "msg_a")
    finally:
        await second.close()


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=120)


@pytest.mark.rabbitmq
@pytest.mark.slow
async def test_rabbitmq_stopped_and_started_mid_stream_loses_nothing(engine: AsyncEngine, broker_url: str) -> None:
    if shutil.which("rabbitmqctl") is None:
        pytest.skip("needs rabbitmqctl to stop and start the broker")
    await clear_outbox(engine, "msg_a")
    harness = Harness("rabbitmq", rabbit_maker(broker_url))
    service = harness.service("orders")
    bus = await harness.bus(**PATIENT)
    consumer_bus = await harness.new_bus(**PATIENT)
    try:
        await consumer_bus.consume(service, ["order.*"], counting_handler(engine, "msg_b", service))
        stream = [envelope("order.placed", n=n) for n in range(600)]
        async with running(relay_for(engine, bus, "msg_a", poll_seconds=0.5)):
            await write_stream(engine, stream[:300], chunk=10, pause=0.01)
            await eventually(lambda: all_handled(engine, "msg_b", service, 50), timeout=60)
            try:
                await asyncio.to_thread(_rabbitmqctl, "stop_app")
                await write_stream(engine, stream[300:], chunk=10, pause=0.01)  # the outbox keeps them
            finally:
                await asyncio.to_thread(_rabbitmqctl, "start_app")  # always give the shared broker back
            try:
                await eventually(lambda: all_handled(engine, "msg_b", service, len(stream)), timeout=120, interval=0.5)
            except AssertionError as exc:
                raise AssertionError(await _where_the_stream_stopped(engine, consumer_bus, service)) from exc
            await eventually(lambda: _drained(engine, "msg_a"), timeout=30)
        await assert_each_counted_once(engine, "msg_b", service, stream)
    finally:
        for b in reversed(harness.buses):
            await b.close()


async def _where_the_stream_stopped(engine: AsyncEngine, bus: MessageBus, service: str) -> str:
    """Where the events of a stalled stream are: still in the outbox, or in the queue."""
    unsent = await _outbox_rows(engine, "msg_a", outbox.outbox_of("msg_a").c.sent_at.is_(None))
    handled = len(await effects(engine, "msg_b", service))
    assert isinstance(bus, RabbitMQBus)
    _connection, channel, _exchange = bus._require()
    queue = await channel.declare_queue(service, passive=True)
    found = queue.declaration_result
    return (
        f"stream stalled: {handled} handled, {unsent} rows unsent in the outbox, {found.message_count} "
        f"messages and {found.consumer_count} consumers on {service}, consumer channels closed: "
        f"{[c.is_closed for c in bus._consumer_channels]}"
    )
