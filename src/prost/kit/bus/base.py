"""The message-bus port. Two adapters implement it with the same semantics:
`memory.MemoryBus` (embedded mode) and `rabbitmq.RabbitMQBus` (distributed mode).

Semantics both keep:
- `publish` returns only once every envelope is safely accepted (RabbitMQ: publisher
  confirm; memory: every subscribed service handled it or parked it as dead). An
  envelope no queue is bound for raises `Unroutable`; nothing is acknowledged on error.
  Except an *announcement* (a type in the bus's `announcements`, one no service of
  the system consumes): it goes to whoever bound a queue to it, and is dropped when
  nobody has.
- Each service has one queue bound to routing-key patterns (`*` one word, `#` any);
  several consumers of one service compete for its messages (replicas).
- A handler that raises is retried with growing delays; after
  `max_delivery_attempts` the message is parked in `<service>.dead` with the reason.
- Delivery is at least once: handlers must be idempotent (see `kit.inbox`).
"""

from __future__ import annotations

import abc
import uuid
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

from prost.kit.messages import Envelope

Handler = Callable[[Envelope], Awaitable[None]]


MAX_RETRY_DELAY_MS = 5 * 60 * 1000
"""Retry delays double per attempt up to this (RabbitMQ's TTL must stay sane too)."""


def retry_delay_ms(attempt: int, base_ms: int) -> int:
    """How long a message waits after its `attempt`-th failure: base, 2×base, 4×base, ..."""
    return min(base_ms * (1 << max(0, min(attempt - 1, 40))), MAX_RETRY_DELAY_MS)


@lru_cache(maxsize=4096)
def topic_matches(pattern: str, key: str) -> bool:
    """AMQP topic matching: words split on `.`, `*` is exactly one word, `#` zero or more."""
    p, k = pattern.split("."), key.split(".")

    def match(i: int, j: int) -> bool:
        if i == len(p):
            return j == len(k)
        if p[i] == "#":
            return any(match(i + 1, jj) for jj in range(j, len(k) + 1))
        return j < len(k) and p[i] in ("*", k[j]) and match(i + 1, j + 1)

    return match(0, 0)


class PublishError(Exception):
    """Some envelopes were not confirmed; the caller keeps them for a later try.

    For a batch, `sent` names the envelopes that *were* confirmed (the caller may mark
    them done) and `failed` maps each failed event id to its own error (`Unroutable`
    or another `PublishError`). Both empty: nothing is known to be confirmed.
    """

    def __init__(
        self,
        message: str = "",
        *,
        sent: Collection[uuid.UUID] = (),
        failed: Mapping[uuid.UUID, PublishError] | None = None,
    ) -> None:
        super().__init__(message)
        self.sent: Collection[uuid.UUID] = sent
        self.failed: Mapping[uuid.UUID, PublishError] = failed or {}


class Unroutable(PublishError):
    """No queue is bound for this routing key: the event stays in the outbox."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: str
    service: str
    envelope: Envelope
    reason: str
    attempts: int
    parked_at: datetime


class MessageBus(abc.ABC):
    @abc.abstractmethod
    async def connect(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def publish(self, envelopes: Sequence[Envelope]) -> None: ...

    @abc.abstractmethod
    async def declare(self, service: str, bindings: Sequence[str]) -> None:
        """Make the service's queue (and its retry/dead queues) exist and bind it."""

    @abc.abstractmethod
    async def consume(self, service: str, bindings: Sequence[str], handler: Handler) -> None:
        """Declare, then start consuming the service's queue in the background."""

    @abc.abstractmethod
    async def listen(self, bindings: Sequence[str], handler: Handler) -> None:
        """Every listening process gets every matching message: a per-process, non-durable
        subscription for in-memory views such as token revocations. No retries and no dead
        letters (a failing handler is logged); what is published while a process is not
        listening is not replayed to it, so such views also load a snapshot at start."""

    @abc.abstractmethod
    async def is_ready(self) -> bool: ...

    @abc.abstractmethod
    async def dead_letters(self, service: str) -> list[DeadLetter]: ...

    @abc.abstractmethod
    async def replay(self, service: str, ids: Sequence[str] | None = None) -> int:
        """Send parked messages back to the service's queue; returns how many."""
