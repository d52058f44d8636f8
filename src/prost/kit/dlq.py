"""Dead letters, for operators: what `prost dlq list|replay <service>` calls.

A message whose handler failed `max_delivery_attempts` times is parked in the
service's dead-letter queue `<service>.dead` with the reason (see `kit.bus.rabbitmq`
for the layout). Listing leaves the queue as it was; replaying sends the chosen
messages back to the service's own queue (not to the exchange, so no other
subscriber sees them twice) with a fresh attempt count.

In the embedded mode the in-process bus keeps dead letters in the running process,
so there these are reached through that process's bus (`System.bus`), not the CLI.
"""

from __future__ import annotations

from collections.abc import Sequence

from prost.kit.bus.base import DeadLetter, MessageBus
from prost.kit.settings import Settings


async def list_dead(bus: MessageBus, service: str) -> list[DeadLetter]:
    """The service's parked messages, oldest first; the queue is left unchanged."""
    return await bus.dead_letters(service)


async def replay(bus: MessageBus, service: str, ids: Sequence[str] | None = None) -> int:
    """Send parked messages back to the service's queue: those whose dead-letter id or
    event id is in `ids`, or all of them when `ids` is None. Returns how many."""
    return await bus.replay(service, list(ids) if ids is not None else None)


def broker_bus(settings: Settings) -> MessageBus:
    """The RabbitMQ bus the CLI talks to (PROST_BROKER_URL must be set)."""
    if not settings.broker_url:
        raise LookupError(
            "PROST_BROKER_URL is not set: in the embedded mode dead letters live in the running process's "
            "in-process bus (they are listed in its logs when parked)"
        )
    from prost.kit.bus.rabbitmq import RabbitMQBus

    return RabbitMQBus(
        settings.broker_url,
        quorum=settings.rabbitmq_quorum,
        prefetch=settings.rabbitmq_prefetch,
        max_delivery_attempts=settings.max_delivery_attempts,
        retry_base_delay_ms=settings.retry_base_delay_ms,
    )
