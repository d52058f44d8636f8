"""Which events of the catalogue are announcements (consumed by no service), and a
subscription that names no event of the catalogue is refused."""

from __future__ import annotations

from dataclasses import replace

import pytest

from prost.kit.service import Raw
from prost.runtime import registry


def test_the_announcements_are_the_events_no_service_consumes() -> None:
    assert registry.announcements() == {
        "user.registered",
        "user.credentials_changed",  # applied by every process through its revocation feed
        "product.created",
        "product.updated",
        "stock.committed",
        "cart.checked_out",
    }


def test_the_saga_events_are_not_announcements() -> None:
    saga = {"order.placed", "stock.reserved", "payment.requested", "payment.processed", "order.confirmed"}
    assert saga.isdisjoint(registry.announcements())


def test_a_subscription_to_no_event_of_the_catalogue_is_refused() -> None:
    async def nothing(envelope: object, ctx: object) -> None: ...

    catalog = registry.definition("catalog")
    typo = replace(catalog, subscriptions={**catalog.subscriptions, "order.plcaed": Raw(nothing)})
    with pytest.raises(ValueError, match=r"order\.plcaed"):
        registry.announcements([*registry.definitions(), typo])


def test_every_service_has_a_definition() -> None:
    assert [d.name for d in registry.definitions()] == ["users", "catalog", "cart", "orders", "payments"]
