"""What only the RabbitMQ bus has: its queue layout, quorum queues, foreign bodies, the CLI."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from pathlib import Path

import aio_pika
import httpx
import pytest

from prost.kit.bus.rabbitmq import RabbitMQBus
from prost.kit.http import create_service_app
from prost.kit.messages import Envelope

from helpers import eventually
from messaging_support import ATTEMPTS, RETRY_MS, envelope

pytestmark = pytest.mark.rabbitmq


def unique(name: str) -> str:
    return f"{name}_{uuid.uuid4().hex[:8]}"


async def make_bus(url: str, **options: object) -> RabbitMQBus:
    settings: dict[str, object] = {
        "exchange": unique("prost.events"),
        "max_delivery_attempts": ATTEMPTS,
        "retry_base_delay_ms": RETRY_MS,
    }
    settings.update(options)
    bus = RabbitMQBus(url, **settings)  # type: ignore[arg-type]
    await bus.connect()
    return bus


async def test_declare_lays_out_service_retry_and_dead_queues_and_is_idempotent(broker_url: str) -> None:
    bus = await make_bus(broker_url)
    service = unique("orders")
    try:
        await bus.declare(service, ["order.*"])
        await bus.declare(service, ["order.*", "order.placed"])
        connection = await aio_pika.connect(broker_url)
        async with connection:
            channel = await connection.channel()
            names = [service, f"{service}.dead"] + [f"{service}.retry.{RETRY_MS * 2**n}" for n in range(ATTEMPTS - 1)]
            for name in names:
                await channel.get_queue(name, ensure=True)  # passive: raises if missing
        assert bus.retry_delays_ms() == [RETRY_MS, RETRY_MS * 2]
    finally:
        await bus.close()


async def test_quorum_queues_retry_and_dead_letter_the_same_way(broker_url: str) -> None:
    bus = await make_bus(broker_url, quorum=True)
    service = unique("payments")
    calls: list[int] = []
    try:

        async def handle(env: Envelope) -> None:
            calls.append(1)
            raise RuntimeError("declined")

        await bus.consume(service, ["payment.*"], handle)
        await bus.publish([envelope("payment.requested")])
        dead = await eventually(lambda: bus.dead_letters(service))
        assert len(calls) == ATTEMPTS
        assert dead[0].reason == "RuntimeError: declined"
    finally:
        await bus.close()


async def test_a_body_that_is_not_an_envelope_is_parked_at_once(broker_url: str) -> None:
    bus = await make_bus(broker_url)
    service = unique("catalog")
    calls: list[Envelope] = []
    try:

        async def handle(env: Envelope) -> None:
            calls.append(env)

        await bus.consume(service, ["product.*"], handle)
        connection = await aio_pika.connect(broker_url)
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            exchange = await channel.get_exchange(bus.exchange_name)
            await exchange.publish(
                aio_pika.Message(b"{not json", type="product.created"), routing_key="product.created"
            )
        dead = await eventually(lambda: bus.dead_letters(service))
        assert "not an envelope" in dead[0].reason
        assert dead[0].envelope.payload["raw"] == "{not json"
        await bus.publish([envelope("product.created")])
        await eventually(lambda: len(calls) == 1)
    finally:
        await bus.close()


async def test_listing_dead_letters_leaves_them_in_place(broker_url: str) -> None:
    bus = await make_bus(broker_url)
    service = unique("cart")
    try:

        async def handle(env: Envelope) -> None:
            raise ValueError("nope")

        await bus.consume(service, ["cart.*"], handle)
        await bus.publish([envelope("cart.checked_out", n=n) for n in range(3)])
        await eventually(lambda: _count(bus, service, 3))
        first = await bus.dead_letters(service)
        second = await bus.dead_letters(service)
        assert [d.id for d in first] == [d.id for d in second]
        assert len({d.id for d in first}) == 3
    finally:
        await bus.close()


async def _count(bus: RabbitMQBus, service: str, n: int) -> bool:
    return len(await bus.dead_letters(service)) == n


async def _prost(env: dict[str, str], *args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("prost")),
        *args,
        env={**os.environ, **env, "COLUMNS": "250"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await process.communicate()
    return process.returncode or 0, out.decode()


async def test_cli_lists_and_replays_a_services_dead_letters(broker_url: str) -> None:
    bus = await make_bus(broker_url, exchange="prost.events")  # the CLI talks to the default exchange
    service = unique("orders")
    healthy = False
    handled: list[uuid.UUID] = []
    try:

        async def handle(env: Envelope) -> None:
            if not healthy:
                raise RuntimeError("saga store down")
            handled.append(env.event_id)

        await bus.consume(service, ["order.placed"], handle)
        keep, replayed = envelope("order.placed"), envelope("order.placed")
        await bus.publish([keep, replayed])
        await eventually(lambda: _count(bus, service, 2))

        env = {"PROST_BROKER_URL": broker_url, "PROST_MAX_DELIVERY_ATTEMPTS": str(ATTEMPTS)}
        code, out = await _prost(env, "dlq", "list", service)
        assert code == 0, out
        assert str(keep.event_id) in out
        assert str(replayed.event_id) in out
        assert "saga store down" in out

        healthy = True
        code, out = await _prost(env, "dlq", "replay", service, "--id", str(replayed.event_id))
        assert code == 0, out
        assert "replayed 1 message" in out
        await eventually(lambda: handled == [replayed.event_id])
        assert [d.envelope.event_id for d in await bus.dead_letters(service)] == [keep.event_id]
    finally:
        await bus.close()


async def test_cli_refuses_dlq_without_a_broker() -> None:
    env = {k: v for k, v in os.environ.items() if k != "PROST_BROKER_URL"}
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("prost")),
        "dlq",
        "list",
        "orders",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await process.communicate()
    assert process.returncode == 2
    assert b"PROST_BROKER_URL is not set" in out


async def test_ready_says_whether_the_broker_connection_is_up(broker_url: str) -> None:
    """`/ready` of a distributed service has a `bus` check: 503 while it is not connected."""
    bus = RabbitMQBus(broker_url)
    app = create_service_app("things", ready_checks={"bus": bus.is_ready})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://prost") as client:
        before = await client.get("/ready")
        assert (before.status_code, before.json()["checks"]) == (503, {"bus": "down"})
        await bus.connect()
        try:
            up = await client.get("/ready")
            assert (up.status_code, up.json()["checks"]) == (200, {"bus": "ok"})
        finally:
            await bus.close()
        after = await client.get("/ready")
        assert (after.status_code, after.json()["error"]) == (503, "unavailable")


async def test_a_queue_left_without_its_consumer_is_consumed_again(broker_url: str) -> None:
    """What aio-pika's restore can leave after an unlucky broker restart: the connection
    is up, the bus believes it consumes, and the broker has no consumer on the queue.
    Made here by cancelling the consumer behind aio-pika's back; the watchdog notices
    and consumes the queue again, so the event waiting there is handled."""
    bus = await make_bus(broker_url, consumer_check_seconds=0.2)
    service = unique("orders")
    handled: list[uuid.UUID] = []

    async def handler(e: Envelope) -> None:
        handled.append(e.event_id)

    try:
        await bus.consume(service, ["order.*"], handler)
        first = envelope("order.placed")
        await bus.publish([first])
        await eventually(lambda: handled == [first.event_id])

        [channel] = bus._consumer_channels
        underlay = await channel.get_underlay_channel()
        for tag in list(underlay.consumers):
            await underlay.basic_cancel(tag)
        assert await bus._consumer_count(service) == 0
        second = envelope("order.placed")
        await bus.publish([second])
        await eventually(lambda: handled == [first.event_id, second.event_id], timeout=10)
        assert await bus._consumer_count(service) == 1  # consumed again, once
        assert len(bus._consumer_channels) == 1  # on a fresh channel, the old one dropped
    finally:
        await bus.close()


async def _ready_count(url: str, queue: str) -> int:
    """Messages ready in a queue (after a consumer closed, its unacked ones are back)."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        return int(declared.declaration_result.message_count or 0)


async def test_messages_handled_together_are_acknowledged_in_one_frame(
    broker_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Thirty handlers that return in the same turn of the event loop (as a batch of the
    inbox does) give one `multiple` ack, not thirty; every message is acknowledged."""
    acks: list[bool] = []
    real_ack = aio_pika.IncomingMessage.ack

    async def counted(self: aio_pika.IncomingMessage, multiple: bool = False) -> None:
        acks.append(multiple)
        await real_ack(self, multiple=multiple)

    monkeypatch.setattr(aio_pika.IncomingMessage, "ack", counted)
    bus = await make_bus(broker_url, prefetch=64)
    service = unique("orders")
    gate = asyncio.Event()
    handled: list[uuid.UUID] = []

    async def handler(e: Envelope) -> None:
        handled.append(e.event_id)
        if len(handled) == 30:
            gate.set()
        await gate.wait()

    try:
        await bus.consume(service, ["order.*"], handler)
        await bus.publish([envelope("order.placed") for _ in range(30)])
        await eventually(lambda: len(handled) == 30)
        await eventually(lambda: len(acks) > 0)
        await asyncio.sleep(0.2)
        assert acks == [True]
    finally:
        await bus.close()
    assert await _ready_count(broker_url, service) == 0  # all acked: nothing came back


async def test_a_message_still_being_handled_holds_no_other_acknowledgement(broker_url: str) -> None:
    """With 5 messages in flight at most, a first one that takes its time leaves the
    other four slots turning: the messages after it are acked as they are handled, not
    when it is. Once it is handled too, every message was handled once and acked."""
    bus = await make_bus(broker_url, prefetch=5)
    service = unique("orders")
    gate = asyncio.Event()
    handled: list[uuid.UUID] = []
    first = envelope("order.placed")
    rest = [envelope("order.placed") for _ in range(11)]

    async def handler(e: Envelope) -> None:
        if e.event_id == first.event_id:
            await gate.wait()
        handled.append(e.event_id)

    try:
        await bus.consume(service, ["order.*"], handler)
        await bus.publish([first])
        await bus.publish(rest)
        await eventually(lambda: len(handled) == 11)
        assert first.event_id not in handled
        gate.set()
        await eventually(lambda: len(handled) == 12)
        await asyncio.sleep(0.2)
    finally:
        await bus.close()
    assert sorted(handled) == sorted([first.event_id, *(e.event_id for e in rest)])
    assert await _ready_count(broker_url, service) == 0
