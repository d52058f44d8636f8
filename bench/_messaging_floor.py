"""The floor of `bench/messaging.py`: prost's delivery path written out by hand.

The same work as prost's distributed pipeline, on the same tables, with nothing of
prost on the hot path: asyncpg and aio-pika called directly, one connection held per
writer, no pool checkout, no envelope model between the database and the broker.

- producing process: 8 writers, each inserting one outbox row as a statement of its
  own (its own transaction, as prost's writer's `db.autocommit`), then waking the
  relay, flat out or paced against the clock; the relay claims up to 200 unsent rows
  (`UPDATE ... FOR UPDATE SKIP LOCKED ... RETURNING`, its own transaction, committed
  without waiting for the WAL flush as prost's is), publishes them persistent,
  mandatory, with publisher confirms, and commits;
- consuming process (the caller's): deliveries wait for one transaction at a time,
  which takes up to 32 of them: `BEGIN` / one inbox insert for all (`ON CONFLICT DO
  NOTHING RETURNING`) / the effect of each new one / `COMMIT`; then each is acked
  (one by one: prost acks a batch in one frame, an advantage the floor does not copy).

What prost adds to this is what it is for: the unit of work, the outbox's and the
inbox's rules, retries, dead letters, validation, logs. The floor prices the work the
issue asks for apart from that, so a ratio to raw can be read as "the machine" or as
"prost". It is a measuring stick, not a second implementation: it has no retries and
no failure handling, and nothing uses it but the benchmark.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from typing import Any

import aio_pika
import asyncpg
import orjson
from aio_pika.abc import AbstractIncomingMessage

from prost.runtime.loop import run

WRITERS = 8
CLAIM_BATCH = 200
INBOX_BATCH = 32


def _statements(schema: str) -> dict[str, str]:
    return {
        "insert": f"INSERT INTO {schema}.outbox (event_id, event_type, envelope) VALUES ($1, $2, $3::jsonb)",
        "claim": (
            f"UPDATE {schema}.outbox SET sent_at = now(), attempts = attempts + 1 WHERE seq IN ("
            f"SELECT seq FROM {schema}.outbox WHERE sent_at IS NULL ORDER BY seq LIMIT {CLAIM_BATCH} "
            "FOR UPDATE SKIP LOCKED) AND set_config('synchronous_commit', 'off', true) IS NOT NULL "
            "RETURNING event_id, event_type, envelope::text"
        ),
        "record": (
            f"INSERT INTO {schema}.idempotency_records (kind, event_id, service_name, completed_at) "
            "SELECT 'event', e, $2, now() FROM unnest($1::uuid[]) AS e "
            "ON CONFLICT (event_id, service_name) DO NOTHING RETURNING event_id"
        ),
        "effect": f"INSERT INTO {schema}.effects (event_id) VALUES ($1)",
    }


# -- the producing process ---------------------------------------------------------------


async def pace(rate: float, seconds: float, write: Callable[[int], Awaitable[None]]) -> None:
    """Start `write(i)` for `rate` × `seconds` events, each when the clock says (so a
    slow write does not lower the offered rate), and wait for them all. prost's
    paced writers use it too."""
    pending: set[asyncio.Task[None]] = set()
    start = time.perf_counter()
    for i in range(max(1, int(rate * seconds))):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(write(i))
        pending.add(task)
        task.add_done_callback(pending.discard)
    await asyncio.gather(*pending)


def _envelope(event_id: uuid.UUID, n: int) -> dict[str, Any]:
    """The envelope of `messaging.sample_envelope`, as a plain dict."""
    return {
        "event_id": event_id,
        "event_type": "order.placed",
        "occurred_at": datetime.now(UTC).isoformat(),
        "producer": "bench",
        "correlation_id": str(uuid.uuid4()),
        "causation_id": None,
        "version": 1,
        "payload": {"order_id": str(uuid.uuid4()), "user_id": str(uuid.uuid4()), "total": "59.97", "n": n},
    }


def producer_process(pipe: Connection, dsn: str, broker: str, exchange: str, schema: str) -> None:
    run(_producer_main(pipe, dsn, broker, exchange, schema))


async def _producer_main(pipe: Connection, dsn: str, broker: str, exchange_name: str, schema: str) -> None:
    sql = _statements(schema)
    relay_db = await asyncpg.connect(dsn)
    writer_dbs = [await asyncpg.connect(dsn) for _ in range(WRITERS)]
    amqp = await aio_pika.connect(broker)
    channel = await amqp.channel(publisher_confirms=True)
    exchange = await channel.get_exchange(exchange_name)
    wake = asyncio.Event()

    async def relay() -> None:
        while True:
            wake.clear()
            async with relay_db.transaction():
                rows = await relay_db.fetch(sql["claim"])
                await asyncio.gather(
                    *(
                        exchange.publish(
                            aio_pika.Message(
                                envelope.encode(),
                                message_id=str(event_id),
                                content_type="application/json",
                                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                            ),
                            routing_key=event_type,
                            mandatory=True,
                        )
                        for event_id, event_type, envelope in rows
                    )
                )
            if len(rows) < CLAIM_BATCH:
                await wake.wait()

    async def write_one(conn: asyncpg.Connection, n: int, committed: dict[uuid.UUID, float]) -> None:
        event_id = uuid.uuid4()
        body = orjson.dumps(_envelope(event_id, n)).decode()
        await conn.execute(sql["insert"], event_id, "order.placed", body)  # its own transaction
        wake.set()
        committed[event_id] = time.perf_counter()

    async def flat_out(n: int, committed: dict[uuid.UUID, float]) -> None:
        numbers = iter(range(n))

        async def writer(conn: asyncpg.Connection) -> None:
            for i in numbers:
                await write_one(conn, i, committed)

        await asyncio.gather(*(writer(conn) for conn in writer_dbs))

    async def paced(rate: float, seconds: float, committed: dict[uuid.UUID, float]) -> None:
        """As `messaging.Producer.paced`: writes scheduled against the clock, each on
        whichever writer connection is free."""
        free: asyncio.Queue[asyncpg.Connection] = asyncio.Queue()
        for conn in writer_dbs:
            free.put_nowait(conn)

        async def one(i: int) -> None:
            conn = await free.get()
            try:
                await write_one(conn, i, committed)
            finally:
                free.put_nowait(conn)

        await pace(rate, seconds, one)

    relaying = asyncio.create_task(relay())
    pipe.send("ready")
    try:
        while (command := await asyncio.to_thread(pipe.recv))[0] != "stop":
            committed: dict[uuid.UUID, float] = {}
            start = time.perf_counter()
            if command[0] == "flat":
                await flat_out(command[1], committed)
            else:
                await paced(command[1], command[2], committed)
            pipe.send((start, committed))
    finally:
        relaying.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await relaying
        await amqp.close()
        for conn in [relay_db, *writer_dbs]:
            await conn.close()


# -- the consuming side (the caller's process) -------------------------------------------


class Floor:
    """Both halves: `start()` spawns the producing process and consumes here."""

    def __init__(self, dsn: str, broker: str, schema: str) -> None:
        """`schema` is prost's bench schema; the floor works on copies of its tables in a
        schema of its own, out of reach of prost's relay."""
        self.dsn, self.broker, self.template, self.schema = dsn, broker, schema, f"{schema}_floor"
        tag = uuid.uuid4().hex[:8]
        self.exchange_name, self.queue_name = f"bench.floor.{tag}", f"bench_floor_{tag}"
        self.handled: dict[uuid.UUID, float] = {}
        self._expected = 0
        self._done = asyncio.Event()
        self._waiting: list[tuple[AbstractIncomingMessage, asyncio.Future[None]]] = []
        self._drainer: asyncio.Task[None] | None = None
        ctx = multiprocessing.get_context("spawn")
        self._pipe, child = ctx.Pipe()
        self.process = ctx.Process(
            target=producer_process,
            args=(child, dsn, broker, self.exchange_name, self.schema),
            daemon=True,
        )

    async def start(self) -> None:
        self._sql = _statements(self.schema)
        self._db = await asyncpg.connect(self.dsn)
        await self._db.execute(f"CREATE SCHEMA IF NOT EXISTS {self.schema}")
        for table in ("outbox", "idempotency_records", "effects"):
            await self._db.execute(
                f"CREATE TABLE IF NOT EXISTS {self.schema}.{table} (LIKE {self.template}.{table} INCLUDING ALL)"
            )
        self._amqp = await aio_pika.connect(self.broker)
        channel = await self._amqp.channel()
        await channel.set_qos(prefetch_count=64)
        self._exchange = await channel.declare_exchange(self.exchange_name, aio_pika.ExchangeType.TOPIC)
        self._queue = await channel.declare_queue(self.queue_name, durable=True)
        await self._queue.bind(self._exchange, "order.*")
        await self._queue.consume(self._on_message)
        self.process.start()
        ready = await asyncio.to_thread(self._pipe.recv)
        assert ready == "ready"

    async def run(self, n: int) -> tuple[float, dict[uuid.UUID, float]]:
        """Write `n` events flat out; returns (start, commit time of each) once every
        one was handled (`self.handled` has the handling times)."""
        return await self._run(("flat", n), n)

    async def run_paced(self, rate: float, seconds: float) -> tuple[float, dict[uuid.UUID, float]]:
        """Write `rate` events a second for `seconds`; as `run`."""
        return await self._run(("paced", rate, seconds), max(1, int(rate * seconds)))

    async def _run(self, command: tuple[Any, ...], n: int) -> tuple[float, dict[uuid.UUID, float]]:
        self.handled.clear()
        self._expected = n
        self._done.clear()
        self._pipe.send(command)
        start, committed = await asyncio.to_thread(self._pipe.recv)
        await asyncio.wait_for(self._done.wait(), 300)
        return start, committed

    async def stop(self) -> None:
        with contextlib.suppress(OSError):
            self._pipe.send(("stop",))
        await asyncio.to_thread(self.process.join, 30)
        with contextlib.suppress(Exception):
            await self._queue.delete(if_unused=False, if_empty=False)
            await self._exchange.delete()
        await self._amqp.close()
        await self._db.close()

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((message, done))
        if self._drainer is None:
            self._drainer = asyncio.create_task(self._drain())
        await done
        await message.ack()
        self.handled.setdefault(uuid.UUID(message.message_id), time.perf_counter())
        if len(self.handled) >= self._expected:
            self._done.set()

    async def _drain(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting[:INBOX_BATCH], self._waiting[INBOX_BATCH:]
                ids = [uuid.UUID(orjson.loads(message.body)["event_id"]) for message, _ in batch]
                async with self._db.transaction():
                    fresh: set[Any] = {
                        row[0] for row in await self._db.fetch(self._sql["record"], ids, self.queue_name)
                    }
                    for event_id in ids:
                        if event_id in fresh:
                            await self._db.execute(self._sql["effect"], event_id)
                for _, done in batch:
                    done.set_result(None)
        finally:
            self._drainer = None
