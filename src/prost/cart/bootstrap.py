"""The cart service, wired: its public routes, its subscriptions, its loops.

The cart calls the catalog (holds, quotes) and orders (checkout) over HTTP; the
runtime gives it the clients. Loops: the re-hold loop (lines of a reopened cart
waiting for stock) and the purge of expired Idempotency-Key records. A start-up step
sizes the limit on cart operations that wait for a peer while holding a connection.
"""

from __future__ import annotations

from prost.cart import api, handlers, operations
from prost.kit import idempotency
from prost.kit.service import ServiceContext, ServiceDefinition


async def install_outbound_limit(ctx: ServiceContext) -> None:
    operations.install_outbound_limit(ctx)


def definition() -> ServiceDefinition:
    return ServiceDefinition(
        name="cart",
        public_routers=[api.router],
        subscriptions=handlers.SUBSCRIPTIONS,
        background=[operations.hold_pending_lines_forever, idempotency.purge_loop(api.STORE)],
        on_startup=[install_outbound_limit],
    )
