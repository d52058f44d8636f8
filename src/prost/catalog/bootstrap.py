"""The catalog service, wired: public and internal routes, the saga subscriptions,
and the reservation sweeper."""

from __future__ import annotations

from prost.catalog import api, handlers
from prost.catalog.sweeper import sweep_expired_reservations
from prost.kit.service import ServiceDefinition


def definition() -> ServiceDefinition:
    return ServiceDefinition(
        name="catalog",
        public_routers=[api.router],
        internal_routers=[api.internal_router],
        subscriptions=handlers.SUBSCRIPTIONS,
        background=[sweep_expired_reservations],
    )
