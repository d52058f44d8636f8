"""The RabbitMQ bus of the distributed mode (aio-pika), same semantics as `MemoryBus`.

Layout in the broker, for an exchange `prost.events` and a service `orders` with
`max_delivery_attempts = 5`, `retry_base_delay_ms = 200`:

    prost.events          durable topic exchange; routing key = event_type
      └─(bindings)─► orders             durable queue (quorum with quorum=True), manual acks
    (default exchange)
      ├─► orders.retry.200   x-message-ttl 200 ms,  dead-letters to "" / orders
      ├─► orders.retry.400   x-message-ttl 400 ms,  dead-letters to "" / orders
      ├─► orders.retry.800   ...
      ├─► orders.retry.1600  ...
      └─► orders.dead        parked messages, kept until replayed

- Publishing uses one channel with publisher confirms and `mandatory`: `publish`
  returns once the broker confirmed every message (persistent); a message no queue is
  bound for comes back (basic.return) and fails with `Unroutable`. Announcements go
  without `mandatory`: the broker drops them when no queue is bound. A batch is sent with
  all its messages in flight at once and the outcome is told per envelope.
- Consuming: one channel per `consume` call with `prefetch` unacknowledged messages;
  consumers of one service share its queue (competing consumers). A handled message
  is acknowledged once its handler returned; the handled messages of one turn of the
  event loop go together, as one `multiple` ack where their delivery tags allow it
  (`_Acks`): the inbox commits its events in batches, and a frame per event would be
  a write and a broker wake-up per event.
- A handler that raises: the message is republished (confirmed) to the retry queue of
  its attempt, with header `x-prost-attempts` counting failures, then acked. When the
  per-queue TTL expires the broker dead-letters it back to the service queue only
  (default exchange, routing key = the service), not to the other subscribers. One
  queue per delay keeps expiry first-in first-out; the delay is in the name, so a
  changed setting adds queues instead of clashing with the old arguments.
- After `max_delivery_attempts` failures (or at once, for a body that is not an
  envelope) the message goes to `<service>.dead` with headers `x-prost-reason`,
  `x-prost-attempts`, `x-prost-parked-at` and `x-prost-dead-id`.
- `dead_letters` reads the dead queue with basic.get without acking, then gives every
  message back (channel close requeues them in order); `replay` republishes the chosen
  ones to the service queue with a fresh attempt count and acks them once confirmed.
- The connection is robust: after a broker restart aio-pika reconnects and restores
  channels, declarations and consumers. Publishes during the outage fail (the outbox
  keeps the rows); deliveries that were not acked come again (the inbox absorbs them).
- A watchdog checks every `consumer_check_seconds` that each queue this process
  consumes has a consumer at the broker (`consumer_count` of a passive declare) and,
  when it has none, consumes it again on a fresh channel: after a broker restart
  aio-pika's restore can leave a consumer channel closed, and then the connection is
  back, nothing consumes, and events wait in the queue for good. With replicas, a
  queue another process still consumes is left alone; its events keep flowing.

A process that dies while handling a message gets it redelivered without an attempt
being counted (classic queues keep no delivery count).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
    DeliveryMode,
    ExchangeType,
)
from pydantic import ValidationError

from prost.kit.bus.base import DeadLetter, Handler, MessageBus, PublishError, Unroutable, retry_delay_ms
from prost.kit.logs import correlation_id_var
from prost.kit.messages import Envelope

log = logging.getLogger("prost.bus.rabbitmq")

ATTEMPTS = "x-prost-attempts"
REASON = "x-prost-reason"
PARKED_AT = "x-prost-parked-at"
DEAD_ID = "x-prost-dead-id"

_TRANSIENT = (
    aiormq.exceptions.AMQPError,
    ConnectionError,
    OSError,
    RuntimeError,
    TimeoutError,
)


class RabbitMQBus(MessageBus):
    def __init__(
        self,
        url: str,
        *,
        exchange: str = "prost.events",
        quorum: bool = False,
        prefetch: int = 64,
        max_delivery_attempts: int = 5,
        retry_base_delay_ms: int = 200,
        publish_timeout: float = 10.0,
        reconnect_interval: float = 1.0,
        announcements: Collection[str] = frozenset(),
        consumer_check_seconds: float = 5.0,
    ) -> None:
        self.url = url
        self.announcements = frozenset(announcements)
        self.exchange_name = exchange
        self.quorum = quorum
        self.prefetch = max(1, prefetch)
        self.max_delivery_attempts = max(1, max_delivery_attempts)
        self.retry_base_delay_ms = max(1, retry_base_delay_ms)
        self.publish_timeout = publish_timeout
        self.reconnect_interval = reconnect_interval
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None  # publisher confirms, mandatory returns
        self._exchange: AbstractExchange | None = None
        self._topology: AbstractChannel | None = None
        self._consumer_channels: list[AbstractChannel] = []
        self._consumers: list[_Consumer] = []
        self._declared: set[tuple[str, tuple[str, ...]]] = set()
        self._connect_lock = asyncio.Lock()
        self.consumer_check_seconds = consumer_check_seconds
        self._watchdog: asyncio.Task[None] | None = None

    # -- lifecycle -------------------------------------------------------------------

    async def connect(self) -> None:
        async with self._connect_lock:
            if self._connection is not None:
                return
            connection = await aio_pika.connect_robust(
                self.url,
                reconnect_interval=self.reconnect_interval,
                client_properties={"connection_name": "prost"},
            )
            self._channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            self._topology = await connection.channel()
            self._exchange = await self._channel.declare_exchange(self.exchange_name, ExchangeType.TOPIC, durable=True)
            self._connection = connection

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None:
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog
        self._consumer_channels.clear()
        self._consumers.clear()
        self._declared.clear()
        if connection is not None:
            with contextlib.suppress(*_TRANSIENT):
                await connection.close()

    async def is_ready(self) -> bool:
        connection = self._connection
        return connection is not None and not connection.is_closed and connection.connected.is_set()

    def _require(self) -> tuple[AbstractRobustConnection, AbstractChannel, AbstractExchange]:
        if self._connection is None or self._channel is None or self._exchange is None:
            raise PublishError("the RabbitMQ bus is not connected")
        return self._connection, self._channel, self._exchange

    # -- topology --------------------------------------------------------------------

    def _queue_arguments(self) -> dict[str, Any]:
        return {"x-queue-type": "quorum"} if self.quorum else {}

    def retry_delays_ms(self) -> list[int]:
        """The delay after failure 1, 2, ..., max-1: base, 2×base, 4×base, ... (capped)."""
        return [retry_delay_ms(n, self.retry_base_delay_ms) for n in range(1, self.max_delivery_attempts)]

    @staticmethod
    def retry_queue(service: str, delay_ms: int) -> str:
        return f"{service}.retry.{delay_ms}"

    @staticmethod
    def dead_queue(service: str) -> str:
        return f"{service}.dead"

    async def _declare_queue(self, channel: AbstractChannel, name: str, **extra: Any) -> AbstractQueue:
        return await channel.declare_queue(name, durable=True, arguments={**self._queue_arguments(), **extra})

    async def declare(self, service: str, bindings: Sequence[str]) -> None:
        key = (service, tuple(sorted(set(bindings))))
        if key in self._declared:
            return
        _connection, _channel, exchange = self._require()
        topology = self._topology
        assert topology is not None
        queue = await self._declare_queue(topology, service)
        for pattern in key[1]:
            await queue.bind(exchange, routing_key=pattern)
        for delay in sorted(set(self.retry_delays_ms())):
            await self._declare_queue(
                topology,
                self.retry_queue(service, delay),
                **{"x-message-ttl": delay, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": service},
            )
        await self._declare_queue(topology, self.dead_queue(service))
        self._declared.add(key)

    async def consume(self, service: str, bindings: Sequence[str], handler: Handler) -> None:
        await self.declare(service, bindings)
        consumer = _Consumer(service, handler)
        await self._start(consumer)
        self._consumers.append(consumer)
        if self._watchdog is None:  # only a bus that consumes has consumers to look after
            self._watchdog = asyncio.create_task(self._watch_consumers(), name="rabbitmq.consumer-watchdog")

    async def _start(self, consumer: _Consumer) -> None:
        """Consume the service's queue on a channel of its own (a fresh one each time)."""
        connection, _channel, _exchange = self._require()
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=self.prefetch)
        queue = await self._declare_queue(channel, consumer.service)

        acks = _Acks()

        async def on_message(message: AbstractIncomingMessage) -> None:
            await self._on_message(consumer.service, consumer.handler, message, acks)

        await queue.consume(on_message, no_ack=False)
        if consumer.channel is not None:
            with contextlib.suppress(ValueError):
                self._consumer_channels.remove(consumer.channel)
        consumer.channel = channel
        self._consumer_channels.append(channel)

    async def _watch_consumers(self) -> None:
        """Every `consumer_check_seconds`, consume again each queue of this process that
        has no consumer at the broker (see the module's docstring)."""
        while True:
            await asyncio.sleep(self.consumer_check_seconds)
            if not await self.is_ready():
                continue  # reconnecting: aio-pika restores first, we look afterwards
            for service in sorted({c.service for c in self._consumers}):
                try:
                    consumers = await self._consumer_count(service)
                    if consumers > 0:
                        continue
                    log.warning("%s: the broker has no consumer on its queue; consuming it again", service)
                    for consumer in [c for c in self._consumers if c.service == service]:
                        old = consumer.channel
                        await self._start(consumer)
                        if old is not None:
                            with contextlib.suppress(*_TRANSIENT, aiormq.exceptions.AMQPError):
                                await old.close()
                except Exception as exc:  # a watchdog outlives any surprise: it tries again later
                    log.info("%s: could not check its consumers (%r); trying again later", service, exc)

    async def _consumer_count(self, service: str) -> int:
        """How many consumers the broker has on the service's queue (a passive declare
        on a short-lived channel: a channel that fails it is closed by the broker)."""
        connection, _channel, _exchange = self._require()
        channel = await connection.channel()
        try:
            queue = await channel.declare_queue(service, passive=True)
            return int(queue.declaration_result.consumer_count or 0)
        finally:
            with contextlib.suppress(*_TRANSIENT):
                await channel.close()

    async def listen(self, bindings: Sequence[str], handler: Handler) -> None:
        connection, _channel, exchange = self._require()
        channel = await connection.channel()
        # Exclusive and auto-deleted: it lives exactly as long as this process's connection
        # (the robust connection declares it again, with its bindings, after a reconnect).
        queue = await channel.declare_queue(
            f"prost.listen.{uuid.uuid4().hex}", exclusive=True, auto_delete=True, durable=False
        )
        for pattern in sorted(set(bindings)):
            await queue.bind(exchange, routing_key=pattern)

        async def on_message(message: AbstractIncomingMessage) -> None:
            try:
                await handler(Envelope.from_json(message.body))
            except Exception:
                log.exception("listener for %s failed", message.routing_key)

        await queue.consume(on_message, no_ack=True)
        self._consumer_channels.append(channel)

    # -- publishing ------------------------------------------------------------------

    @staticmethod
    def _message(envelope: Envelope, headers: dict[str, Any] | None = None) -> aio_pika.Message:
        return aio_pika.Message(
            body=envelope.to_json(),
            message_id=str(envelope.event_id),
            type=envelope.event_type,
            correlation_id=envelope.correlation_id,
            timestamp=envelope.occurred_at,
            content_type="application/json",
            delivery_mode=DeliveryMode.PERSISTENT,
            headers=headers or {},
        )

    async def publish(self, envelopes: Sequence[Envelope]) -> None:
        _connection, _channel, exchange = self._require()

        async def one(envelope: Envelope) -> None:
            try:
                await exchange.publish(
                    self._message(envelope),
                    routing_key=envelope.event_type,
                    mandatory=envelope.event_type not in self.announcements,
                    timeout=self.publish_timeout,
                )
            except aiormq.exceptions.PublishError as exc:
                raise Unroutable(f"no queue is bound for {envelope.event_type!r} on {self.exchange_name}") from exc
            except aiormq.exceptions.DeliveryError as exc:
                raise PublishError(f"the broker refused {envelope.event_id}: {exc}") from exc
            except _TRANSIENT as exc:
                raise PublishError(f"publishing {envelope.event_id} failed: {exc!r}") from exc

        results = await asyncio.gather(*(one(e) for e in envelopes), return_exceptions=True)
        sent: list[uuid.UUID] = []
        failed: dict[uuid.UUID, PublishError] = {}
        for envelope, result in zip(envelopes, results, strict=True):
            if isinstance(result, PublishError):
                failed[envelope.event_id] = result
            elif isinstance(result, BaseException):
                raise result
            else:
                sent.append(envelope.event_id)
        if failed:
            kind = Unroutable if all(isinstance(e, Unroutable) for e in failed.values()) else PublishError
            first = next(iter(failed.values()))
            raise kind(f"{len(failed)} of {len(envelopes)} envelopes not confirmed: {first}", sent=sent, failed=failed)

    async def _send_to_queue(self, queue: str, message: aio_pika.Message) -> None:
        """Put a message straight on one queue (default exchange), confirmed."""
        _connection, channel, _exchange = self._require()
        await channel.default_exchange.publish(message, routing_key=queue, mandatory=True, timeout=self.publish_timeout)

    # -- consuming -------------------------------------------------------------------

    async def _on_message(self, service: str, handler: Handler, message: AbstractIncomingMessage, acks: _Acks) -> None:
        acks.received(message)
        headers = dict(message.headers or {})
        attempts = _int(headers.get(ATTEMPTS))
        try:
            envelope = Envelope.from_json(message.body)
        except (ValidationError, ValueError) as exc:
            await self._settle_failure(
                service, message, headers, attempts, f"not an envelope: {exc}", park=True, acks=acks
            )
            return
        token = correlation_id_var.set(envelope.correlation_id)
        try:
            await handler(envelope)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            attempts += 1
            reason = f"{type(exc).__name__}: {exc}"
            park = attempts >= self.max_delivery_attempts
            extra = {"service": service, "event_type": envelope.event_type, "event_id": str(envelope.event_id)}
            if park:
                log.error(
                    "%s: %s failed %d times, parking it: %s",
                    service,
                    envelope.event_type,
                    attempts,
                    reason,
                    extra=extra,
                )
            else:
                log.warning(
                    "%s: %s failed (attempt %d of %d), retrying: %s",
                    service,
                    envelope.event_type,
                    attempts,
                    self.max_delivery_attempts,
                    reason,
                    extra=extra,
                )
            await self._settle_failure(service, message, headers, attempts, reason, park=park, acks=acks)
        else:
            acks.handled(message)  # a lost ack means a redelivery the inbox absorbs
        finally:
            correlation_id_var.reset(token)

    async def _settle_failure(
        self,
        service: str,
        message: AbstractIncomingMessage,
        headers: dict[str, Any],
        attempts: int,
        reason: str,
        *,
        park: bool,
        acks: _Acks,
    ) -> None:
        """Move a failed message to its retry queue or to the dead queue, then ack it.
        If the move is not confirmed the message is given back to its queue instead.
        Told to `acks` once that frame went out (not if it failed: then no `multiple`
        ack may cover the message)."""
        headers = {k: v for k, v in headers.items() if k != "x-death"}
        headers[ATTEMPTS] = attempts
        headers[REASON] = reason[:2000]
        if park:
            headers[PARKED_AT] = datetime.now(UTC).isoformat()
            headers[DEAD_ID] = uuid.uuid4().hex
            target = self.dead_queue(service)
        else:
            target = self.retry_queue(service, retry_delay_ms(attempts, self.retry_base_delay_ms))
        moved = True
        try:
            await self._send_to_queue(target, _copy(message, headers))
        except (aiormq.exceptions.PublishError, *_TRANSIENT) as exc:
            log.warning("%s: could not move a failed message to %s (%r); requeueing it", service, target, exc)
            moved = False
        with contextlib.suppress(*_TRANSIENT):
            await (message.ack() if moved else message.nack(requeue=True))
            acks.settled(message)  # only once its own frame went out

    # -- dead letters ----------------------------------------------------------------

    async def _drain_dead(self, service: str) -> tuple[AbstractChannel | None, list[AbstractIncomingMessage]]:
        """Take every parked message, unacknowledged; closing the channel gives them back."""
        connection, _channel, _exchange = self._require()
        channel = await connection.channel()
        try:
            queue = await channel.get_queue(self.dead_queue(service), ensure=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            with contextlib.suppress(*_TRANSIENT):
                await channel.close()
            return None, []
        messages: list[AbstractIncomingMessage] = []
        while (message := await queue.get(no_ack=False, fail=False)) is not None:
            messages.append(message)
        return channel, messages

    async def dead_letters(self, service: str) -> list[DeadLetter]:
        channel, messages = await self._drain_dead(service)
        try:
            return [_dead_letter(service, m) for m in messages]
        finally:
            if channel is not None:
                with contextlib.suppress(*_TRANSIENT):
                    await channel.close()

    async def replay(self, service: str, ids: Sequence[str] | None = None) -> int:
        """Send parked messages back to the service's queue; `ids` match a dead letter's
        id or its event id, None replays all. Returns how many were sent."""
        wanted = None if ids is None else set(ids)
        channel, messages = await self._drain_dead(service)
        replayed = 0
        try:
            for message in messages:
                headers = dict(message.headers or {})
                dead_id = str(headers.get(DEAD_ID) or message.message_id or "")
                if wanted is not None and dead_id not in wanted and str(message.message_id) not in wanted:
                    continue
                fresh = {k: v for k, v in headers.items() if k not in (ATTEMPTS, REASON, PARKED_AT, DEAD_ID, "x-death")}
                fresh["x-prost-replayed-from"] = dead_id
                await self._send_to_queue(service, _copy(message, fresh))
                await message.ack()
                replayed += 1
        finally:
            if channel is not None:
                with contextlib.suppress(*_TRANSIENT):
                    await channel.close()
        return replayed


@dataclass(slots=True)
class _Consumer:
    """One `consume` call of this process: what to consume again should it be lost."""

    service: str
    handler: Handler
    channel: AbstractChannel | None = None


@dataclass
class _Tags:
    """One channel's delivery tags: those whose fate has not gone out yet (being
    handled, or failed and not settled), and those handled and waiting for their ack."""

    open: set[int]
    handled: dict[int, AbstractIncomingMessage]


class _Acks:
    """The acknowledgements of one consumer, sent a turn of the event loop at a time:
    `received(message)` notes a delivery before its handler runs, `handled(message)` one
    whose handler returned, and a task then acks every handled message noted so far.

    A `multiple` ack of tag T acknowledges every unacknowledged delivery of the channel
    up to T. So the handled messages below the lowest open tag (a delivery still being
    handled, or being retried) go as ONE frame, the ack of the highest of them with
    `multiple`; those above it are acked one by one at once, so none holds a prefetch
    slot while it waits. Every tag below a handled one was received first (deliveries
    start their handlers in order), so the open set is exact, and it never holds more
    than the channel's prefetch: the broker sends no more than that unacknowledged.
    A failed message settles itself (moved to its retry or dead queue, then acked or
    given back, one frame) and is reported with `settled` after its frame went out (not
    at all if it failed: then it stays open and no `multiple` ack covers it). A handler
    that never returns keeps its tag open, and costs nothing else. The frames go out in
    order, one task at a time, through the channel's writer.

    One instance per `consume`. Tags count per channel: a channel restored after a
    reconnect (a new channel underneath) starts from 1, and the tags of a closed channel
    are dropped; a message of a closed channel is not acked at all (the broker gives it
    again, as it would after a single ack that failed)."""

    def __init__(self) -> None:
        self._channels: dict[aiormq.abc.AbstractChannel, _Tags] = {}  # by the channel underneath, open ones only
        self._sender: asyncio.Task[None] | None = None

    def received(self, message: AbstractIncomingMessage) -> None:
        if found := self._tags(message):
            tags, tag = found
            tags.open.add(tag)

    def handled(self, message: AbstractIncomingMessage) -> None:
        if found := self._tags(message):
            tags, tag = found
            tags.open.discard(tag)
            tags.handled[tag] = message
            if self._sender is None:
                self._sender = asyncio.create_task(self._send(), name="rabbitmq.acks")

    def settled(self, message: AbstractIncomingMessage) -> None:
        if found := self._tags(message):
            tags, tag = found
            tags.open.discard(tag)

    def _tags(self, message: AbstractIncomingMessage) -> tuple[_Tags, int] | None:
        """The tags of the message's channel and its own tag; None when the channel is
        closed."""
        channel = message.channel
        if channel.is_closed or message.delivery_tag is None:
            return None
        tags = self._channels.get(channel)
        if tags is None:
            self._channels = {c: t for c, t in self._channels.items() if not c.is_closed}
            tags = self._channels[channel] = _Tags(open=set(), handled={})
        return tags, message.delivery_tag

    async def _send(self) -> None:
        try:
            while waiting := [tags for tags in self._channels.values() if tags.handled]:
                for tags in waiting:
                    handled, tags.handled = tags.handled, {}
                    lowest_open = min(tags.open, default=max(handled) + 1)
                    covered = [tag for tag in handled if tag < lowest_open]
                    alone = [message for tag, message in handled.items() if tag >= lowest_open]
                    with contextlib.suppress(*_TRANSIENT):
                        if covered:
                            await handled[max(covered)].ack(multiple=True)
                        for message in alone:
                            await message.ack()
        finally:
            self._sender = None


def _copy(message: AbstractIncomingMessage, headers: dict[str, Any]) -> aio_pika.Message:
    """The same persistent message with new headers (to a retry, dead or service queue)."""
    return aio_pika.Message(
        body=message.body,
        message_id=message.message_id,
        type=message.type,
        correlation_id=message.correlation_id,
        timestamp=message.timestamp,
        content_type=message.content_type,
        delivery_mode=DeliveryMode.PERSISTENT,
        headers=headers,
    )


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _dead_letter(service: str, message: AbstractIncomingMessage) -> DeadLetter:
    headers = dict(message.headers or {})
    try:
        envelope = Envelope.from_json(message.body)
    except (ValidationError, ValueError):
        # Parked because it was not an envelope: show what came, as well as we can.
        envelope = Envelope(
            event_type=message.type or "unknown",
            producer="unknown",
            payload={"raw": message.body.decode("utf-8", errors="replace")[:10_000]},
        )
    parked_at_raw = headers.get(PARKED_AT)
    try:
        parked_at = datetime.fromisoformat(str(parked_at_raw))
    except ValueError:
        parked_at = datetime.now(UTC)
    return DeadLetter(
        id=str(headers.get(DEAD_ID) or message.message_id or ""),
        service=service,
        envelope=envelope,
        reason=str(headers.get(REASON, "")),
        attempts=_int(headers.get(ATTEMPTS)),
        parked_at=parked_at,
    )
