"""Hosting services: the part both runtimes share.

`ServiceHost` takes the `ServiceDefinition`s a process runs and, on `start()`:
builds each service's `ServiceContext`, runs its start-up steps, declares its queue
and starts its consumers (every handler wrapped in the inbox unless marked `Raw`; one
marked `Only` just for the events it applies to),
starts the outbox relay for its schema and its background loops. `stop()` cancels
loops and consumers in reverse order. `mount()` puts the services' routers on an app.

A crashed background loop is logged and started again after a pause: a sweeper or
relay that dies must not silently stop the system.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable, Sequence

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from prost.kit import inbox, outbox
from prost.kit.auth import TokenAuthority
from prost.kit.bus.base import MessageBus, topic_matches
from prost.kit.clients import ServiceClients
from prost.kit.logs import correlation_id_var
from prost.kit.messages import Envelope
from prost.kit.service import EventHandler, Only, Raw, ServiceContext, ServiceDefinition, Subscription
from prost.kit.settings import Settings
from prost.runtime import revocations as revocations_feed

log = logging.getLogger("prost.runtime")


def handler_for(
    ctx: ServiceContext, box: inbox.Inbox, routing_key: str, target: Subscription
) -> Callable[[Envelope], Awaitable[None]]:
    only = target if isinstance(target, Only) else None
    handler: EventHandler | Raw = target.handler if isinstance(target, Only) else target

    async def on_message(envelope: Envelope) -> None:
        token = correlation_id_var.set(envelope.correlation_id)
        try:
            if isinstance(handler, Raw):
                await handler.handler(envelope, ctx)
            elif only is None or only.applies(envelope):
                await box.handle(envelope, lambda session: handler(envelope, session, ctx))
        finally:
            correlation_id_var.reset(token)

    on_message.__name__ = f"{ctx.name}:{routing_key}"
    return on_message


def dispatcher(ctx: ServiceContext, definition: ServiceDefinition) -> Callable[[Envelope], Awaitable[None]]:
    """One consumer callback for the service's queue: picks the handler by routing key.

    Bindings may be patterns; the first subscription whose pattern matches wins. The
    service's handlers share one `Inbox`, so events that arrive together commit together.
    """
    box = inbox.Inbox(ctx.engine, ctx.name)
    handlers = {key: handler_for(ctx, box, key, target) for key, target in definition.subscriptions.items()}

    async def dispatch(envelope: Envelope) -> None:
        handler = handlers.get(envelope.event_type)
        if handler is None:
            for pattern, candidate in handlers.items():
                if topic_matches(pattern, envelope.event_type):
                    handler = candidate
                    break
        if handler is None:
            log.warning("no handler for %s in %s; acknowledged", envelope.event_type, ctx.name)
            return
        await handler(envelope)

    return dispatch


class ServiceHost:
    def __init__(
        self,
        definitions: Sequence[ServiceDefinition],
        *,
        settings: Settings,
        engine: AsyncEngine,
        bus: MessageBus,
        auth: TokenAuthority,
        urls: dict[str, str],
        consumers_per_service: int = 1,
        declare_also: Sequence[ServiceDefinition] = (),
    ) -> None:
        self.definitions = list(definitions)
        self.declare_also = list(declare_also)
        self.settings = settings
        self.engine = engine
        self.bus = bus
        self.auth = auth
        self.urls = urls
        self.consumers_per_service = consumers_per_service
        self.contexts: dict[str, ServiceContext] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def build_contexts(self) -> dict[str, ServiceContext]:
        for d in self.definitions:
            clients = ServiceClients(
                caller=d.name, urls=self.urls, auth=self.auth, timeout=self.settings.http_client_timeout_seconds
            )
            self.contexts[d.name] = ServiceContext(
                name=d.name, settings=self.settings, engine=self.engine, bus=self.bus, auth=self.auth, clients=clients
            )
        return self.contexts

    def mount(self, app: FastAPI, *, internal: bool = True) -> None:
        if not self.contexts:
            self.build_contexts()
        services = getattr(app.state, "services", {})
        services.update(self.contexts)
        app.state.services = services
        for d in self.definitions:
            for router in d.public_routers:
                app.include_router(router)
            if internal:
                for router in d.internal_routers:
                    app.include_router(router)

    async def declare(self) -> None:
        """Bind every service's queue before anything is published: this process's
        services, and `declare_also` (in the distributed mode, every service), so an
        event is never unroutable just because its consumer has not started yet."""
        for d in [*self.definitions, *self.declare_also]:
            if d.subscriptions:
                await self.bus.declare(d.name, list(d.subscriptions))

    async def start(self) -> None:
        if not self.contexts:
            self.build_contexts()
        for d in self.definitions:
            ctx = self.contexts[d.name]
            for step in d.on_startup:
                await step(ctx)
        await self.declare()
        await self._follow_revocations()
        for d in self.definitions:
            ctx = self.contexts[d.name]
            if d.subscriptions:
                dispatch = dispatcher(ctx, d)
                for _ in range(self.consumers_per_service):
                    await self.bus.consume(d.name, list(d.subscriptions), dispatch)
            # PROST_OUTBOX_RELAYS relays per schema (SKIP LOCKED keeps their batches apart).
            for n in range(self.settings.outbox_relays):
                relay = outbox.OutboxRelay(
                    self.engine,
                    self.bus,
                    d.name,
                    batch_size=self.settings.outbox_batch_size,
                    poll_seconds=self.settings.outbox_poll_seconds,
                    retention_hours=self.settings.outbox_retention_hours,
                )
                self._spawn(f"{d.name}.relay.{n}", relay.run)
            for loop in d.background:
                self._spawn(f"{d.name}.{getattr(loop, '__name__', 'loop')}", functools.partial(loop, ctx))

    async def _follow_revocations(self) -> None:
        """One revocation feed per process: events from the bus, and (unless the users
        service lives here and loaded them itself) snapshots from the users service."""
        revocations = self.auth.revocations
        if revocations is None:
            return
        await revocations_feed.listen_for_revocations(self.bus, revocations)
        if "users" not in self.contexts:
            clients = next(iter(self.contexts.values())).clients
            self._spawn("revocations", functools.partial(revocations_feed.keep_snapshot_fresh, clients, revocations))

    def _spawn(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        async def supervised() -> None:
            while True:
                try:
                    await run()
                    return
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("background task %s crashed; restarting in 1 s", name)
                    await asyncio.sleep(1)

        self._tasks.append(asyncio.create_task(supervised(), name=name))

    async def stop(self) -> None:
        for task in reversed(self._tasks):
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        for ctx in self.contexts.values():
            await ctx.clients.close()
