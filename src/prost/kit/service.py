"""What a service is, to the runtimes that host it.

Each service's `bootstrap.py` returns a `ServiceDefinition`: its HTTP routers, its
subscription table (routing key → handler), its background loops (sweepers,
reconcilers) and its start-up steps. A runtime (embedded: all in one process on a
memory bus; distributed: one per process on RabbitMQ) builds a `ServiceContext` for
it and wires the rest: consumers wrapped in the inbox, the outbox relay for its
schema, the loops. Route handlers reach their context with `context_dependency`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from sqlalchemy.ext.asyncio import AsyncEngine

from prost.kit.auth import TokenAuthority
from prost.kit.db import Session
from prost.kit.messages import Envelope
from prost.kit.settings import Settings

if TYPE_CHECKING:
    from prost.kit.bus.base import MessageBus
    from prost.kit.clients import ServiceClients


@dataclass
class ServiceContext:
    """Everything a service's code may use at run time; made by the runtime."""

    name: str
    settings: Settings
    engine: AsyncEngine
    bus: MessageBus
    auth: TokenAuthority
    clients: ServiceClients
    extras: dict[str, Any] = field(default_factory=dict)


EventHandler = Callable[[Envelope, Session, ServiceContext], Awaitable[None]]
"""Runs inside the inbox transaction: its writes and outbox rows commit together with
the `(event_id, service)` record, or not at all. The transaction may be shared with
other events of the service that arrived at the same time (group commit, `kit.inbox`)
and, if it rolls back, the handler runs again alone: database work only, nothing it
could not do twice (no calls to other services, no side effects outside the session)."""

RawEventHandler = Callable[[Envelope, ServiceContext], Awaitable[None]]
"""Manages its own transactions (and its own inbox use); for handlers that must call
something slow outside a transaction, like a payment provider."""

BackgroundLoop = Callable[[ServiceContext], Awaitable[None]]
"""Runs until cancelled; must be safe with several replicas (SKIP LOCKED)."""


@dataclass(frozen=True)
class Raw:
    """Marks a subscription whose handler is a `RawEventHandler`."""

    handler: RawEventHandler


@dataclass(frozen=True)
class Only:
    """Marks an inbox handler that has work for some events of its routing key only:
    an event `applies` refuses is acknowledged at once, with no transaction and no
    inbox record (nothing was done, so there is nothing to remember)."""

    applies: Callable[[Envelope], bool]
    handler: EventHandler


Subscription = EventHandler | Raw | Only
"""What a routing key of a service's subscription table is bound to."""


@dataclass
class ServiceDefinition:
    name: str
    public_routers: Sequence[APIRouter] = ()
    internal_routers: Sequence[APIRouter] = ()
    subscriptions: Mapping[str, Subscription] = field(default_factory=dict)
    background: Sequence[BackgroundLoop] = ()
    on_startup: Sequence[Callable[[ServiceContext], Awaitable[None]]] = ()


def context_dependency(service: str) -> Callable[[Request], Awaitable[ServiceContext]]:
    async def get_context(request: Request) -> ServiceContext:  # async: no worker thread
        ctx: ServiceContext = request.app.state.services[service]
        return ctx

    get_context.__name__ = f"{service}_context"
    return get_context
