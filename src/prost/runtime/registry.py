"""Which services exist, and where each one's definition comes from.

The runtimes are the only code that imports service packages (besides the services
themselves); they do so through this table.
"""

from __future__ import annotations

import importlib

from prost import contracts
from prost.kit.bus.base import topic_matches
from prost.kit.service import ServiceDefinition
from prost.kit.settings import SERVICES


def definition(service: str) -> ServiceDefinition:
    if service not in SERVICES:
        raise ValueError(f"unknown service {service!r}; one of {', '.join(SERVICES)}")
    bootstrap = importlib.import_module(f"prost.{service}.bootstrap")
    result: ServiceDefinition = bootstrap.definition()
    return result


def available() -> list[str]:
    """Services whose bootstrap exists (all of them, once the system is complete)."""
    found = []
    for service in SERVICES:
        try:
            importlib.import_module(f"prost.{service}.bootstrap")
        except ModuleNotFoundError as exc:
            if exc.name != f"prost.{service}.bootstrap":
                raise
            continue
        found.append(service)
    return found


def definitions(services: list[str] | None = None) -> list[ServiceDefinition]:
    return [definition(s) for s in (services or available())]


def announcements(services: list[ServiceDefinition] | None = None) -> frozenset[str]:
    """The event types of the catalogue that no service consumes (`user.registered`,
    `product.created`, `stock.committed`...): published for whoever binds a queue to
    them, and dropped by the bus when nobody has. Computed from every service's
    subscriptions, whichever of them this process runs. A subscription that matches no
    event of the catalogue is refused: it would turn the event it meant into an
    announcement nobody hears."""
    bindings = [key for d in (services if services is not None else definitions()) for key in d.subscriptions]
    unknown = [b for b in bindings if not any(topic_matches(b, t) for t in contracts.EVENT_TYPES)]
    if unknown:
        raise ValueError(f"subscriptions to no event of the catalogue: {', '.join(sorted(unknown))}")
    return frozenset(t for t in contracts.EVENT_TYPES if not any(topic_matches(b, t) for b in bindings))
