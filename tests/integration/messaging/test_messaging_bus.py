"""The bus contract (kit/bus/base.py), run against the memory bus and real RabbitMQ."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from prost.kit.bus.base import Unroutable
from prost.kit.messages import Envelope

from helpers import eventually
from messaging_support import ATTEMPTS, Harness, envelope


async def test_events_are_routed_by_pattern(harness: Harness) -> None:
    bus = await harness.bus()
    got: dict[str, list[str]] = {"orders": [], "audit": [], "payments": []}

    def collector(name: str):  # type: ignore[no-untyped-def]
        async def handle(env: Envelope) -> None:
            got[name].append(env.event_type)

        return handle

    await bus.consume(harness.service("orders"), ["stock.*"], collector("orders"))
    await bus.consume(harness.service("audit"), ["#"], collector("audit"))
    await bus.consume(harness.service("payments"), ["payment.#", "order.placed"], collector("payments"))

    await bus.publish(
        [envelope("stock.reserved"), envelope("order.placed"), envelope("payment.refund.done"), envelope("stock.a.b")]
    )

    await eventually(lambda: len(got["audit"]) == 4)
    await eventually(lambda: len(got["orders"]) == 1 and len(got["payments"]) == 2)
    assert got["orders"] == ["stock.reserved"]
    assert sorted(got["payments"]) == ["order.placed", "payment.refund.done"]
    assert sorted(got["audit"]) == ["order.placed", "payment.refund.done", "stock.a.b", "stock.reserved"]


async def test_an_event_no_service_is_bound_for_is_unroutable(harness: Harness) -> None:
    bus = await harness.bus()
    await bus.declare(harness.service("orders"), ["order.*"])

    with pytest.raises(Unroutable) as caught:
        await bus.publish([envelope("nobody.listens")])
    assert caught.value.sent == []


async def test_unroutable_envelope_does_not_fail_the_rest_of_its_batch(harness: Harness) -> None:
    bus = await harness.bus()
    seen: list[uuid.UUID] = []

    async def handle(env: Envelope) -> None:
        seen.append(env.event_id)

    await bus.consume(harness.service("orders"), ["order.*"], handle)
    good, bad = envelope("order.placed"), envelope("nobody.listens")

    with pytest.raises(Unroutable) as caught:
        await bus.publish([good, bad])

    assert list(caught.value.sent) == [good.event_id]
    assert set(caught.value.failed) == {bad.event_id}
    await eventually(lambda: seen == [good.event_id])


async def test_an_announcement_nobody_binds_is_published_and_dropped(harness: Harness) -> None:
    bus = await harness.bus(announcements={"thing.announced"})
    await bus.declare(harness.service("orders"), ["order.*"])
    announced, unheard = envelope("thing.announced"), envelope("nobody.listens")

    with pytest.raises(Unroutable) as caught:
        await bus.publish([announced, unheard])  # only the type nobody announced is a fault

    assert list(caught.value.sent) == [announced.event_id]
    assert set(caught.value.failed) == {unheard.event_id}


async def test_an_announcement_reaches_whoever_binds_it(harness: Harness) -> None:
    bus = await harness.bus(announcements={"thing.announced"})
    seen: list[uuid.UUID] = []

    async def handle(env: Envelope) -> None:
        seen.append(env.event_id)

    await bus.publish([envelope("thing.announced")])  # nobody bound yet: dropped
    await bus.consume(harness.service("audit"), ["thing.*"], handle)
    later = envelope("thing.announced")
    await bus.publish([later])

    await eventually(lambda: seen == [later.event_id])


async def test_declared_queue_keeps_messages_until_a_consumer_starts(harness: Harness) -> None:
    bus = await harness.bus()
    service = harness.service("late")
    await bus.declare(service, ["order.placed"])
    await bus.declare(service, ["order.placed"])  # idempotent
    first = envelope("order.placed")
    publishing = asyncio.create_task(bus.publish([first]))
    if harness.kind == "rabbitmq":
        await publishing  # confirmed by the broker, sitting in the queue

    seen: list[uuid.UUID] = []

    async def handle(env: Envelope) -> None:
        seen.append(env.event_id)

    await bus.consume(service, ["order.placed"], handle)
    await publishing
    await eventually(lambda: seen == [first.event_id])


async def test_failing_handler_is_retried_then_dead_lettered_and_replay_then_succeeds(harness: Harness) -> None:
    bus = await harness.bus()
    service = harness.service("payments")
    calls: list[int] = []
    healthy = False

    async def handle(env: Envelope) -> None:
        calls.append(env.payload["n"])
        if not healthy:
            raise RuntimeError("provider unavailable")

    await bus.consume(service, ["payment.requested"], handle)
    failing = envelope("payment.requested", n=1)
    await bus.publish([failing])

    dead = await eventually(lambda: bus.dead_letters(service))
    assert len(calls) == ATTEMPTS
    assert [d.envelope.event_id for d in dead] == [failing.event_id]
    assert "RuntimeError: provider unavailable" in dead[0].reason
    assert dead[0].attempts == ATTEMPTS
    assert dead[0].service == service

    healthy = True
    assert await bus.replay(service, [dead[0].id]) == 1
    await eventually(lambda: len(calls) == ATTEMPTS + 1)
    assert await bus.dead_letters(service) == []


async def test_replay_selects_dead_letters_by_event_id_and_leaves_the_others(harness: Harness) -> None:
    bus = await harness.bus()
    service = harness.service("orders")

    async def handle(env: Envelope) -> None:
        raise ValueError(f"bad {env.payload['n']}")

    await bus.consume(service, ["order.*"], handle)
    first, second = envelope("order.placed", n=1), envelope("order.placed", n=2)
    await bus.publish([first, second])
    await eventually(lambda: _count(bus.dead_letters(service), 2))

    assert await bus.replay(service, [str(second.event_id)]) == 1
    # it fails again and comes back; the first one never left
    await eventually(lambda: _count(bus.dead_letters(service), 2))
    remaining = {d.envelope.event_id: d.reason for d in await bus.dead_letters(service)}
    assert remaining == {first.event_id: "ValueError: bad 1", second.event_id: "ValueError: bad 2"}


async def _count(dead, n: int) -> bool:  # type: ignore[no-untyped-def]
    return len(await dead) == n


async def test_poison_message_does_not_hold_up_the_ones_behind_it(harness: Harness) -> None:
    bus = await harness.bus(prefetch=1)
    service = harness.service("catalog")
    handled: list[int] = []

    async def handle(env: Envelope) -> None:
        if env.payload["n"] == 0:
            raise RuntimeError("poison")
        handled.append(env.payload["n"])

    await bus.consume(service, ["product.*"], handle)
    batch = [envelope("product.created", n=n) for n in range(20)]
    await bus.publish(batch)

    await eventually(lambda: len(handled) == 19)
    dead = await eventually(lambda: bus.dead_letters(service))
    assert [d.envelope.payload["n"] for d in dead] == [0]
    assert sorted(handled) == list(range(1, 20))


async def test_two_consumers_of_one_queue_get_distinct_messages(harness: Harness) -> None:
    service = harness.service("catalog")
    first_bus, second_bus = await harness.bus(), await harness.new_bus()
    by_consumer: dict[str, list[uuid.UUID]] = {"a": [], "b": []}

    def consumer(name: str):  # type: ignore[no-untyped-def]
        async def handle(env: Envelope) -> None:
            by_consumer[name].append(env.event_id)
            await asyncio.sleep(0.002)  # let the other consumer take its share

        return handle

    await first_bus.consume(service, ["order.placed"], consumer("a"))
    await second_bus.consume(service, ["order.placed"], consumer("b"))
    batch = [envelope("order.placed") for _ in range(200)]
    await first_bus.publish(batch)

    await eventually(lambda: len(by_consumer["a"]) + len(by_consumer["b"]) >= 200)
    await asyncio.sleep(0.1)
    a, b = by_consumer["a"], by_consumer["b"]
    assert len(a) + len(b) == 200
    assert set(a).isdisjoint(b)
    assert set(a) | set(b) == {e.event_id for e in batch}
    assert a, "the first consumer took part"
    assert b, "the second consumer took part"


async def test_consumer_accepts_unknown_envelope_fields(harness: Harness) -> None:
    bus = await harness.bus()
    seen: list[dict[str, object]] = []

    async def handle(env: Envelope) -> None:
        seen.append(env.payload)

    await bus.consume(harness.service("users"), ["user.registered"], handle)
    raw = envelope("user.registered", user_id="u1").model_dump(mode="json")
    raw["shiny_new_field"] = {"from": "a newer producer"}
    await bus.publish([Envelope.model_validate(raw)])
    await eventually(lambda: seen == [{"user_id": "u1"}])


async def test_a_batch_is_handled_concurrently_not_one_after_another(harness: Harness) -> None:
    bus = await harness.bus()
    running, most = 0, 0
    gate = asyncio.Event()

    async def handle(env: Envelope) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        if running >= 4:
            gate.set()
        try:
            await asyncio.wait_for(gate.wait(), 5)  # hold on until others run beside this one
        finally:
            running -= 1

    await bus.consume(harness.service("catalog"), ["product.*"], handle)
    await bus.publish([envelope("product.updated", n=n) for n in range(8)])
    await eventually(lambda: running == 0 and most > 0)
    assert most >= 4


async def test_every_listening_process_hears_every_event(harness: Harness) -> None:
    first, second = await harness.bus(), await harness.new_bus()
    heard: dict[str, list[str]] = {"first": [], "second": [], "queue": []}

    def recorder(name: str):  # type: ignore[no-untyped-def]
        async def handle(env: Envelope) -> None:
            heard[name].append(env.event_type)

        return handle

    key = f"user.credentials_changed_{harness.tag}"
    await first.listen([key], recorder("first"))
    await second.listen([key, "other.*"], recorder("second"))
    await first.consume(harness.service("users"), ["other.thing"], recorder("queue"))

    # Bound only by listeners: still routable, and each listener (not one of them) hears it.
    await first.publish([envelope(key), envelope(key)])
    await first.publish([envelope("other.thing")])
    await eventually(lambda: len(heard["first"]) == 2 and len(heard["second"]) == 3 and len(heard["queue"]) == 1)
    assert heard["first"] == [key, key]
    assert sorted(heard["second"]) == sorted([key, key, "other.thing"])
