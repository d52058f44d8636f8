"""Which services exist, and where each one's definition comes from.

The runtimes are the only code that imports service packages (besides the services
themselves); they do so through this table.
"""

from __future__ import annotations

import importlib

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
