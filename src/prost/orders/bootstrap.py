"""The orders service, wired: the one place that names concrete things.

Routers (public and internal), the saga's event subscriptions, and two loops: the
saga reconciler and the purge of expired Idempotency-Keys. Nothing connects here;
the runtime builds the context and starts it all.
"""

from __future__ import annotations

from prost.kit import idempotency
from prost.kit.service import ServiceDefinition
from prost.orders import api, handlers
from prost.orders.reconciler import reconcile_sagas


def definition() -> ServiceDefinition:
    return ServiceDefinition(
        name="orders",
        public_routers=[api.router],
        internal_routers=[api.internal_router],
        subscriptions=handlers.SUBSCRIPTIONS,
        background=[reconcile_sagas, idempotency.purge_loop(api.IDEMPOTENCY)],
    )
