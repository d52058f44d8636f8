"""Every event of the catalogue has a consumer, so none is kept in an outbox as unroutable."""

from __future__ import annotations

from prost import contracts
from prost.kit.bus.base import topic_matches
from prost.runtime import registry


def test_every_event_type_is_bound_by_some_service() -> None:
    bindings = [key for d in registry.definitions() for key in d.subscriptions]
    unbound = [t for t in contracts.EVENT_TYPES if not any(topic_matches(b, t) for b in bindings)]
    assert unbound == []


def test_every_service_has_a_definition() -> None:
    assert [d.name for d in registry.definitions()] == ["users", "catalog", "cart", "orders", "payments"]
