"""Messaging benchmark: the whole delivery path against the raw broker, in one run.

    .venv/bin/python bench/messaging.py [--events 6000] [--raw-events 10000] [--paced-seconds 6]

Measures, on this machine's PostgreSQL and RabbitMQ:

1. raw aio-pika: confirmed publishes (many in flight) of a message the size of an
   envelope, consumed with manual acks (prefetch 64): messages per second from the
   first publish to the last ack. This is the ceiling the broker gives us; measured
   before and again right after step 2, the ratio taken against the mean of the two.
2. prost end to end, in the distributed shape: a producing service (a process of its
   own) whose writers commit one event each to its outbox (`add_to_outbox` in
   `db.autocommit`: a unit of work of one statement is its own transaction, as prost's
   hot statements that carry their events are) and whose `OutboxRelay` publishes them
   (confirms); RabbitMQ; a consuming service (this process) whose handler commits an
   effect through the inbox (`handle_once`).
   Events per second at full speed, and p50/p99 latency from the writer's commit to
   the handler's commit; and the CPU an event costs, by process (the producing and
   consuming services, PostgreSQL, RabbitMQ, the rest of the machine).
3. the same at half the measured maximum rate, paced, for p99 latency.
4. the in-process bus (embedded mode) end to end, for comparison.
5. the floor: the work of step 2 written out by hand (`_messaging_floor.py`: asyncpg
   and aio-pika called directly, the same statements on copies of the same tables,
   the same two processes), measured right after step 2, flat out and then at half
   its own maximum. Its ratio to raw, and its p99 at half rate, are what the work
   itself allows on this machine; prost's rate over the floor's is what prost's own
   code keeps of it.

Targets: prost's rate >= 40% of the raw rate; p99 < 50 ms at half the max rate.
The database is a throwaway one (created and dropped); broker objects have unique
names and are deleted at the end. The last line printed is a one-line JSON summary.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aio_pika
import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.ext.asyncio import AsyncEngine

from prost.kit import db, inbox, outbox
from prost.kit.bus.base import MessageBus
from prost.kit.bus.memory import MemoryBus
from prost.kit.bus.rabbitmq import RabbitMQBus
from prost.kit.db import Session, Sql, create_engine, schema_metadata
from prost.kit.messages import Envelope
from prost.kit.migrations import ensure_database
from prost.runtime.loop import run, tune_collector  # uvloop, as the servers run

sys.path.insert(0, str(Path(__file__).parent))
from _messaging_floor import Floor, pace

from _procs import ProcessCpu, cpu_by, processes

SCHEMA = "bench"
metadata = schema_metadata(SCHEMA)
effects = sa.Table(
    "effects",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("event_id", pg.UUID(as_uuid=True), nullable=False),
)
# A handler's statement is `Sql` built once, as the services' hot statements are.
RECORD_EFFECT = Sql(f"INSERT INTO {SCHEMA}.effects (event_id) VALUES (:event_id)")


def sample_envelope(n: int = 0) -> Envelope:
    return Envelope(
        event_type="order.placed",
        producer=SCHEMA,
        correlation_id=str(uuid.uuid4()),
        payload={"order_id": str(uuid.uuid4()), "user_id": str(uuid.uuid4()), "total": "59.97", "n": n},
    )


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# -- 1. the raw broker ----------------------------------------------------------------


async def raw_rate(url: str, n: int, body: bytes) -> dict[str, float]:
    tag = uuid.uuid4().hex[:8]
    connection = await aio_pika.connect_robust(url)
    async with connection:
        pub = await connection.channel(publisher_confirms=True)
        exchange = await pub.declare_exchange(f"bench.raw.{tag}", aio_pika.ExchangeType.TOPIC, auto_delete=True)
        sub = await connection.channel()
        await sub.set_qos(prefetch_count=64)
        queue = await sub.declare_queue(f"bench.raw.{tag}", durable=True)
        await queue.bind(exchange, "order.placed")
        received = 0
        done = asyncio.Event()

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal received
            await message.ack()
            received += 1
            if received >= n:
                done.set()

        consumer_tag = await queue.consume(on_message)
        start = time.perf_counter()
        window = 256
        for first in range(0, n, window):
            await asyncio.gather(
                *(
                    exchange.publish(
                        aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT, message_id=str(i)),
                        routing_key="order.placed",
                    )
                    for i in range(first, min(n, first + window))
                )
            )
        published = time.perf_counter() - start
        await asyncio.wait_for(done.wait(), 120)
        elapsed = time.perf_counter() - start
        await queue.cancel(consumer_tag)
        await queue.delete(if_unused=False, if_empty=False)
    return {"rate": n / elapsed, "publish_rate": n / published, "messages": n}


# -- 2-4. the pipeline -----------------------------------------------------------------

Committed = dict[uuid.UUID, float]


class Producer:
    """A producing service: writers commit one event per transaction, its relay publishes."""

    def __init__(self, engine: AsyncEngine, bus: MessageBus) -> None:
        self.engine, self.bus = engine, bus
        self.relay = outbox.OutboxRelay(engine, bus, SCHEMA, batch_size=200, poll_seconds=1.0, retention_hours=1)

    async def start(self) -> None:
        self._relay_task = asyncio.create_task(self.relay.run())
        await asyncio.wait_for(self.relay.listening.wait(), 10)

    async def stop(self) -> None:
        self._relay_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._relay_task

    async def _write_one(self, n: int, committed: Committed) -> None:
        envelope = sample_envelope(n)
        # A unit of work that is one statement is its own transaction (`db.autocommit`):
        # the event commits as durably, without a `BEGIN` and a `COMMIT` of its own.
        async with db.autocommit(self.engine) as session:
            await outbox.add_to_outbox(session, envelope)
        committed[envelope.event_id] = time.perf_counter()

    async def flat_out(self, n: int, writers: int = 8) -> tuple[float, Committed]:
        committed: Committed = {}
        counter = iter(range(n))

        async def writer() -> None:
            for i in counter:
                await self._write_one(i, committed)

        start = time.perf_counter()
        await asyncio.gather(*(writer() for _ in range(writers)))
        return start, committed

    async def paced(self, rate: float, seconds: float) -> tuple[float, Committed]:
        committed: Committed = {}
        start = time.perf_counter()
        await pace(rate, seconds, lambda i: self._write_one(i, committed))
        return start, committed


class Consumer:
    """A consuming service: its handler commits an effect through the inbox."""

    def __init__(self, engine: AsyncEngine, bus: MessageBus, service: str) -> None:
        self.engine, self.bus, self.service = engine, bus, service
        self.handled: dict[uuid.UUID, float] = {}
        self.expected = 0
        self.done = asyncio.Event()

    async def start(self) -> None:
        async def effect(envelope: Envelope, session: Session) -> None:
            await session.run(RECORD_EFFECT, event_id=envelope.event_id)

        handle = inbox.idempotent(self.engine, self.service, effect, schema=SCHEMA)

        async def timed(envelope: Envelope) -> None:
            await handle(envelope)
            self.handled.setdefault(envelope.event_id, time.perf_counter())
            if len(self.handled) >= self.expected:
                self.done.set()

        await self.bus.consume(self.service, ["order.*"], timed)

    def expect(self, n: int) -> None:
        self.handled.clear()
        self.expected = n
        self.done.clear()

    async def wait(self) -> None:
        await asyncio.wait_for(self.done.wait(), 300)


async def last_effect(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(sa.select(sa.func.coalesce(sa.func.max(effects.c.id), 0))) or 0)


async def consumer_transactions_per_event(engine: AsyncEngine, after_id: int) -> float:
    """How many transactions the consumer's inbox took per event since `after_id`
    (distinct `xmin` of the effects it wrote): 1.0 is one each, lower is group commit."""
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                sa.text("SELECT count(DISTINCT xmin::text), count(*) FROM bench.effects WHERE id > :after"),
                {"after": after_id},
            )
        ).one()
    return row[0] / row[1] if row[1] else 0.0


def measure(start: float, committed: Committed, handled: dict[uuid.UUID, float]) -> dict[str, float]:
    """Rate from the first write to the last handler commit; latency commit → handled.
    (perf_counter is CLOCK_MONOTONIC on Linux: comparable across processes.)"""
    n = len(committed)
    elapsed = max(handled.values()) - start
    latencies = [max(0.0, (handled[i] - t) * 1000) for i, t in committed.items() if i in handled]
    return {
        "events": n,
        "rate": n / elapsed,
        "p50_ms": percentile(latencies, 0.50),
        "p99_ms": percentile(latencies, 0.99),
        "mean_ms": statistics.fmean(latencies),
    }


class InProcess:
    """Producer and consumer in this process (the embedded mode, or a quick run)."""

    def __init__(self, producer: Producer, consumer: Consumer) -> None:
        self.producer, self.consumer = producer, consumer

    async def run(self, mode: str, n: int, rate: float = 0.0, seconds: float = 0.0) -> dict[str, float]:
        self.consumer.expect(n if mode == "flat" else max(1, int(rate * seconds)))
        if mode == "flat":
            start, committed = await self.producer.flat_out(n)
        else:
            start, committed = await self.producer.paced(rate, seconds)
        await self.consumer.wait()
        return measure(start, committed, self.consumer.handled)


def _producer_process(pipe: Connection, database: str, broker: str, exchange: str) -> None:
    run(_producer_main(pipe, database, broker, exchange))


async def _producer_main(pipe: Connection, database: str, broker: str, exchange: str) -> None:
    engine = create_engine(database, pool_size=10, max_overflow=0)
    bus = RabbitMQBus(broker, exchange=exchange, prefetch=64)
    await bus.connect()
    producer = Producer(engine, bus)
    await producer.start()
    tune_collector()  # as a service process does once it has started
    pipe.send("ready")
    try:
        while True:
            command = await asyncio.to_thread(pipe.recv)
            if command[0] == "stop":
                break
            _, mode, n, rate, seconds = command
            result = await (producer.flat_out(n) if mode == "flat" else producer.paced(rate, seconds))
            pipe.send(result)
    finally:
        await producer.stop()
        await bus.close()
        await engine.dispose()


class TwoProcesses:
    """The distributed shape: the producing service (writers + relay) in a process of its
    own, the consuming service here, RabbitMQ between them."""

    def __init__(self, consumer: Consumer, database: str, broker: str, exchange: str) -> None:
        self.consumer = consumer
        ctx = multiprocessing.get_context("spawn")
        self.pipe, child = ctx.Pipe()
        self.process = ctx.Process(target=_producer_process, args=(child, database, broker, exchange), daemon=True)

    async def start(self) -> None:
        self.process.start()
        ready = await asyncio.to_thread(self.pipe.recv)
        assert ready == "ready"

    async def run(self, mode: str, n: int, rate: float = 0.0, seconds: float = 0.0) -> dict[str, Any]:
        self.consumer.expect(n if mode == "flat" else max(1, int(rate * seconds)))
        before = processes()
        self.pipe.send(("run", mode, n, rate, seconds))
        start, committed = await asyncio.to_thread(self.pipe.recv)
        await self.consumer.wait()
        result: dict[str, Any] = dict(measure(start, committed, self.consumer.handled))
        result["cpu_us_per_event"] = cpu_us_per_event(before, self.process.pid, len(committed))
        return result

    async def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.pipe.send(("stop",))
        await asyncio.to_thread(self.process.join, 30)


def cpu_us_per_event(before: dict[int, ProcessCpu], producer: int | None, events: int) -> dict[str, int]:
    """The machine's CPU since `before`, by process (`producer`'s pid, this process as
    the consumer, the servers, the rest), in µs per event."""
    spent = cpu_by(before, processes(), me="consumer", label=lambda pid, _p: "producer" if pid == producer else None)
    return {name: round(1e6 * seconds / events) for name, seconds in spent.items()}


async def floor_rate(database: str, broker: str, n: int, paced_seconds: float) -> dict[str, Any]:
    """The floor (`_messaging_floor`): the same work written by hand, on the same
    tables, in the same two-process shape; its rate and CPU per event, and its
    latency at half that rate (`half`)."""
    floor = Floor(database, broker, SCHEMA)
    await floor.start()
    try:
        await floor.run(min(500, n))  # warm-up
        before = processes()
        start, committed = await floor.run(n)
        cpu = cpu_us_per_event(before, floor.process.pid, n)
        full = measure(start, committed, floor.handled)
        half = measure(*await floor.run_paced(full["rate"] / 2, paced_seconds), floor.handled)
    finally:
        await floor.stop()
    return {**full, "cpu_us_per_event": cpu, "half": half}


async def prepare_database(server: str) -> tuple[str, Callable[[], Awaitable[None]]]:
    name = f"prost_bench_{uuid.uuid4().hex[:8]}"
    url = str(sa.make_url(server).set(database=name).render_as_string(hide_password=False))
    await ensure_database(url)
    engine = create_engine(url, pool_size=1)
    async with engine.begin() as conn:
        await conn.execute(sa.text(f'CREATE SCHEMA "{SCHEMA}"'))
        await conn.run_sync(metadata.create_all)
    await engine.dispose()

    async def drop() -> None:
        admin = create_engine(str(sa.make_url(server).set(database="postgres").render_as_string(hide_password=False)))
        async with admin.connect() as conn:
            auto = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await auto.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()

    return url, drop


async def delete_broker_objects(url: str, bus: RabbitMQBus, service: str) -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        names = [service, bus.dead_queue(service)] + [bus.retry_queue(service, d) for d in set(bus.retry_delays_ms())]
        for name in names:
            with contextlib.suppress(Exception):
                await channel.queue_delete(name)
        with contextlib.suppress(Exception):
            await channel.exchange_delete(bus.exchange_name)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=6000, help="events for the full-speed run")
    parser.add_argument("--raw-events", type=int, default=10000, help="messages for the raw aio-pika run")
    parser.add_argument("--paced-seconds", type=float, default=6.0, help="length of the half-rate run")
    parser.add_argument(
        "--database",
        default=os.environ.get("PROST_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
    )
    parser.add_argument(
        "--broker", default=os.environ.get("PROST_BENCH_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/")
    )
    args = parser.parse_args()

    body = sample_envelope().to_json()
    print(f"message size: {len(body)} bytes; machine: {os.cpu_count()} cores")

    before = processes()
    raw_before = await raw_rate(args.broker, args.raw_events, body)
    raw_cpu = cpu_by(before, processes(), me="publisher and consumer")
    print(f"raw aio-pika (confirmed publish + manual-ack consume): {raw_before['rate']:.0f} msg/s")

    url, drop = await prepare_database(args.database)
    engine = create_engine(url, pool_size=16, max_overflow=0)
    summary: dict[str, Any] = {
        "bench": "messaging",
        "message_bytes": len(body),
    }
    try:
        tag = uuid.uuid4().hex[:8]
        service, exchange = f"bench_{tag}", f"bench.events.{tag}"
        rabbit = RabbitMQBus(args.broker, exchange=exchange, prefetch=64)
        await rabbit.connect()
        try:
            consumer = Consumer(engine, rabbit, service)
            await consumer.start()
            shape = TwoProcesses(consumer, url, args.broker, exchange)
            await shape.start()
            tune_collector()
            try:
                await shape.run("flat", min(500, args.events))  # warm-up: connections, prepared statements
                mark = await last_effect(engine)
                full = await shape.run("flat", args.events)
                full["consumer_transactions_per_event"] = await consumer_transactions_per_event(engine, mark)
                floor = await floor_rate(url, args.broker, args.events, args.paced_seconds)
                # The raw figure again, right after: on a shared machine it drifts
                # within a run; the ratio is taken against the mean of the two.
                raw_after = await raw_rate(args.broker, args.raw_events, body)
                raw = (raw_before["rate"] + raw_after["rate"]) / 2
                print(f"raw aio-pika again: {raw_after['rate']:.0f} msg/s (mean {raw:.0f})")
                print(
                    f"prost end to end (RabbitMQ, producer and consumer processes): {full['rate']:.0f} events/s "
                    f"= {full['rate'] / raw:.0%} of raw; latency p50 {full['p50_ms']:.1f} ms, "
                    f"p99 {full['p99_ms']:.1f} ms; consumer transactions per event "
                    f"{full['consumer_transactions_per_event']:.2f}"
                )
                print(
                    f"floor (the same work by hand): {floor['rate']:.0f} events/s = {floor['rate'] / raw:.0%} of raw; "
                    f"prost does {full['rate'] / floor['rate']:.0%} of it"
                )
                half_rate = full["rate"] / 2
                half = await shape.run("paced", 0, half_rate, args.paced_seconds)
                print(
                    f"prost at half max ({half_rate:.0f} events/s offered): p50 {half['p50_ms']:.1f} ms, p99 {half['p99_ms']:.1f} ms; "
                    f"the floor at half its max: p50 {floor['half']['p50_ms']:.1f} ms, p99 {floor['half']['p99_ms']:.1f} ms"
                )
            finally:
                await shape.stop()
        finally:
            await rabbit.close()
            await delete_broker_objects(args.broker, rabbit, service)

        memory = MemoryBus(max_delivery_attempts=5, retry_base_delay_ms=200)
        await memory.connect()
        try:
            producer = Producer(engine, memory)
            mem_consumer = Consumer(engine, memory, f"bench_mem_{tag}")
            await mem_consumer.start()
            await producer.start()
            embedded = InProcess(producer, mem_consumer)
            await embedded.run("flat", min(500, args.events))
            mem_full = await embedded.run("flat", args.events)
            mem_half = await embedded.run("paced", 0, mem_full["rate"] / 2, args.paced_seconds)
            print(
                f"prost end to end (in-process bus, one process): {mem_full['rate']:.0f} events/s, "
                f"p99 {mem_full['p99_ms']:.1f} ms; at half max p99 {mem_half['p99_ms']:.1f} ms"
            )
            await producer.stop()
        finally:
            await memory.close()

        ratio = full["rate"] / raw
        summary.update(
            {
                "raw_aio_pika_msg_s": round(raw),
                "raw_aio_pika_runs_msg_s": [round(raw_before["rate"]), round(raw_after["rate"])],
                "raw_cpu_us_per_message": {name: round(1e6 * s / args.raw_events) for name, s in raw_cpu.items()},
                "prost_events_s": round(full["rate"]),
                "ratio_to_raw": round(ratio, 3),
                "p50_ms": round(full["p50_ms"], 2),
                "p99_ms": round(full["p99_ms"], 2),
                "consumer_transactions_per_event": round(full["consumer_transactions_per_event"], 3),
                "cpu_us_per_event": full["cpu_us_per_event"],
                "floor_events_s": round(floor["rate"]),
                "floor_ratio_to_raw": round(floor["rate"] / raw, 3),
                "ratio_to_floor": round(full["rate"] / floor["rate"], 3),
                "floor_cpu_us_per_event": floor["cpu_us_per_event"],
                "floor_half_rate_p50_ms": round(floor["half"]["p50_ms"], 2),
                "floor_half_rate_p99_ms": round(floor["half"]["p99_ms"], 2),
                "half_rate_events_s": round(half_rate),
                "half_rate_p50_ms": round(half["p50_ms"], 2),
                "half_rate_p99_ms": round(half["p99_ms"], 2),
                "memory_bus_events_s": round(mem_full["rate"]),
                "memory_bus_half_rate_p99_ms": round(mem_half["p99_ms"], 2),
                "target_ratio_met": ratio >= 0.40,
                "target_p99_met": half["p99_ms"] < 50,
            }
        )
    finally:
        await engine.dispose()
        await drop()
    print(orjson.dumps(summary).decode())


if __name__ == "__main__":
    run(main())
