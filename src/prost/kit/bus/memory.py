"""The in-process bus of the embedded mode, with the semantics of the RabbitMQ one.

Layout (all in memory, one process):
- a service = an `asyncio.Queue` of deliveries + its binding patterns (`*`, `#`);
- `consume` starts one worker per call; workers of one service take from the same
  queue (competing consumers), each handling up to `prefetch` messages at once;
- a failed delivery leaves the worker free and comes back after
  `retry_base_delay_ms * 2**(attempt-1)` (at most 5 minutes); after `max_delivery_attempts` it is parked
  as a `DeadLetter` (with the reason) for `dead_letters` / `replay`.

`publish` returns only when every service bound for each envelope has handled it or
parked it as dead, so the outbox marks a row sent only after the whole fan-out is
done: if the process stops first, the row stays unsent and is published again at the
next start (the inbox absorbs what had already been handled). A batch is fanned out
at once and handled concurrently, not one envelope after another. An envelope no
service is bound for fails with `Unroutable` while the rest of its batch goes on
(an announcement nobody listens to is dropped instead).

Dead letters live in memory only; events parked as dead have their outbox row marked
sent, so after a restart they are gone (RabbitMQ keeps them in `<service>.dead`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from prost.kit.bus.base import (
    DeadLetter,
    Handler,
    MessageBus,
    PublishError,
    Unroutable,
    retry_delay_ms,
    topic_matches,
)
from prost.kit.logs import correlation_id_var
from prost.kit.messages import Envelope

log = logging.getLogger("prost.bus.memory")


class _Fanout:
    """Counts the services still to finish one published envelope."""

    __slots__ = ("future", "remaining")

    def __init__(self, future: asyncio.Future[None] | None, remaining: int) -> None:
        self.future = future
        self.remaining = remaining

    def one_done(self) -> None:
        self.remaining -= 1
        if self.remaining <= 0 and self.future is not None and not self.future.done():
            self.future.set_result(None)

    def fail(self, error: BaseException) -> None:
        if self.future is not None and not self.future.done():
            self.future.set_exception(error)


@dataclass(slots=True)
class _Delivery:
    envelope: Envelope
    fanout: _Fanout
    attempts: int = 0  # failed attempts so far


@dataclass
class _Service:
    name: str
    bindings: set[str] = field(default_factory=set)
    queue: asyncio.Queue[_Delivery] = field(default_factory=asyncio.Queue)
    dead: dict[str, DeadLetter] = field(default_factory=dict)

    def wants(self, routing_key: str) -> bool:
        return any(topic_matches(pattern, routing_key) for pattern in self.bindings)


class MemoryBus(MessageBus):
    def __init__(
        self,
        *,
        max_delivery_attempts: int = 5,
        retry_base_delay_ms: int = 200,
        prefetch: int = 16,
        announcements: Collection[str] = frozenset(),
    ) -> None:
        self.announcements = frozenset(announcements)
        self.max_delivery_attempts = max(1, max_delivery_attempts)
        self.retry_base_delay_ms = retry_base_delay_ms
        self.prefetch = max(1, prefetch)
        self._services: dict[str, _Service] = {}
        self._workers: list[asyncio.Task[None]] = []
        self._inflight: set[asyncio.Task[None]] = set()
        self._timers: set[asyncio.TimerHandle] = set()
        self._fanouts: set[_Fanout] = set()
        self._listeners: list[tuple[tuple[str, ...], Handler]] = []
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------

    async def connect(self) -> None:
        self._closed = False

    async def close(self) -> None:
        """Stop every consumer; publishes still waiting fail (their rows stay unsent)."""
        self._closed = True
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        tasks = [*self._workers, *self._inflight]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._workers.clear()
        self._inflight.clear()
        error = PublishError("the bus closed before every subscriber handled the event")
        for fanout in list(self._fanouts):
            fanout.fail(error)
        self._fanouts.clear()
        for service in self._services.values():
            service.queue = asyncio.Queue()

    async def is_ready(self) -> bool:
        return not self._closed

    # -- topology --------------------------------------------------------------------

    def _service(self, name: str) -> _Service:
        service = self._services.get(name)
        if service is None:
            service = self._services[name] = _Service(name)
        return service

    async def declare(self, service: str, bindings: Sequence[str]) -> None:
        self._service(service).bindings.update(bindings)

    async def listen(self, bindings: Sequence[str], handler: Handler) -> None:
        self._listeners.append((tuple(bindings), handler))

    def _notify_listeners(self, envelope: Envelope) -> bool:
        matched = False
        for bindings, handler in self._listeners:
            if any(topic_matches(p, envelope.event_type) for p in bindings):
                matched = True
                task = asyncio.create_task(self._call_listener(handler, envelope))
                self._inflight.add(task)
                task.add_done_callback(self._inflight.discard)
        return matched

    @staticmethod
    async def _call_listener(handler: Handler, envelope: Envelope) -> None:
        try:
            await handler(envelope)
        except Exception:
            log.exception("listener for %s failed", envelope.event_type)

    async def consume(self, service: str, bindings: Sequence[str], handler: Handler) -> None:
        await self.declare(service, bindings)
        worker = asyncio.create_task(self._work(self._service(service), handler), name=f"memorybus:{service}")
        self._workers.append(worker)

    # -- publishing ------------------------------------------------------------------

    async def publish(self, envelopes: Sequence[Envelope]) -> None:
        if self._closed:
            raise PublishError("the bus is closed")
        loop = asyncio.get_running_loop()
        failed: dict[uuid.UUID, PublishError] = {}
        sent: list[uuid.UUID] = []
        waits: list[tuple[uuid.UUID, asyncio.Future[None]]] = []
        for envelope in envelopes:
            targets = [s for s in self._services.values() if s.wants(envelope.event_type)]
            listened = self._notify_listeners(envelope)
            if not targets:
                if listened or envelope.event_type in self.announcements:
                    sent.append(envelope.event_id)
                else:
                    failed[envelope.event_id] = Unroutable(f"no service is bound for {envelope.event_type!r}")
                continue
            future: asyncio.Future[None] = loop.create_future()
            fanout = _Fanout(future, len(targets))
            self._fanouts.add(fanout)
            future.add_done_callback(self._forget(fanout))
            for service in targets:
                service.queue.put_nowait(_Delivery(envelope, fanout))
            waits.append((envelope.event_id, future))

        if waits:
            results = await asyncio.gather(*(f for _, f in waits), return_exceptions=True)
            for (event_id, _), result in zip(waits, results, strict=True):
                if isinstance(result, BaseException):
                    failed[event_id] = result if isinstance(result, PublishError) else PublishError(str(result))
                else:
                    sent.append(event_id)
        if failed:
            kind = Unroutable if all(isinstance(e, Unroutable) for e in failed.values()) else PublishError
            first = next(iter(failed.values()))
            raise kind(f"{len(failed)} of {len(envelopes)} envelopes not delivered: {first}", sent=sent, failed=failed)

    def _forget(self, fanout: _Fanout) -> Callable[[asyncio.Future[None]], None]:
        return lambda _future: self._fanouts.discard(fanout)

    # -- consuming -------------------------------------------------------------------

    async def _work(self, service: _Service, handler: Handler) -> None:
        slots = asyncio.Semaphore(self.prefetch)
        while True:
            # Take a slot before a message, so a busy worker leaves messages to its peers.
            await slots.acquire()
            try:
                delivery = await service.queue.get()
            except BaseException:
                slots.release()
                raise
            task = asyncio.create_task(self._deliver(service, handler, delivery, slots))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)

    async def _deliver(
        self, service: _Service, handler: Handler, delivery: _Delivery, slots: asyncio.Semaphore
    ) -> None:
        envelope = delivery.envelope
        token = correlation_id_var.set(envelope.correlation_id)
        try:
            await handler(envelope)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._failed(service, delivery, exc)
        else:
            delivery.fanout.one_done()
        finally:
            correlation_id_var.reset(token)
            slots.release()

    def _failed(self, service: _Service, delivery: _Delivery, exc: Exception) -> None:
        attempts = delivery.attempts + 1
        reason = f"{type(exc).__name__}: {exc}"
        envelope = delivery.envelope
        if attempts >= self.max_delivery_attempts:
            log.error(
                "%s: %s %s failed %d times, parked in %s.dead: %s",
                service.name,
                envelope.event_type,
                envelope.event_id,
                attempts,
                service.name,
                reason,
                extra={"service": service.name, "event_type": envelope.event_type, "event_id": str(envelope.event_id)},
            )
            dead = DeadLetter(
                id=uuid.uuid4().hex,
                service=service.name,
                envelope=envelope,
                reason=reason,
                attempts=attempts,
                parked_at=datetime.now(UTC),
            )
            service.dead[dead.id] = dead
            delivery.fanout.one_done()
            return
        delay = retry_delay_ms(attempts, self.retry_base_delay_ms) / 1000
        log.warning(
            "%s: %s %s failed (attempt %d of %d), retrying in %.3f s: %s",
            service.name,
            envelope.event_type,
            envelope.event_id,
            attempts,
            self.max_delivery_attempts,
            delay,
            reason,
            extra={"service": service.name, "event_type": envelope.event_type, "event_id": str(envelope.event_id)},
        )
        retry = replace(delivery, attempts=attempts)

        def again() -> None:
            self._timers.discard(timer)
            if not self._closed:
                service.queue.put_nowait(retry)

        timer = asyncio.get_running_loop().call_later(delay, again)
        self._timers.add(timer)

    # -- dead letters ----------------------------------------------------------------

    async def dead_letters(self, service: str) -> list[DeadLetter]:
        return list(self._service(service).dead.values())

    async def replay(self, service: str, ids: Sequence[str] | None = None) -> int:
        """Put parked messages back on the service's queue with a fresh attempt count.
        `ids` match a dead letter's id or its event id; None replays all."""
        svc = self._service(service)
        wanted = None if ids is None else set(ids)
        chosen = [
            key
            for key, dead in svc.dead.items()
            if wanted is None or dead.id in wanted or str(dead.envelope.event_id) in wanted
        ]
        for key in chosen:
            dead = svc.dead.pop(key)
            # The original publish already returned; nobody waits on a replay's outcome.
            svc.queue.put_nowait(_Delivery(dead.envelope, _Fanout(None, 1)))
        return len(chosen)
