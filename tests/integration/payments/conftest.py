"""Fixtures of the payments suite (the parts they use are in `payments_support`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from payments_support import context, simulated
from sqlalchemy.ext.asyncio import AsyncEngine

from prost.kit.service import ServiceContext
from prost.kit.settings import Settings
from prost.payments.provider import PaymentProvider, SimulatedProvider


@pytest.fixture
def provider(engine: AsyncEngine) -> SimulatedProvider:
    return simulated(engine)


@pytest.fixture
def make_ctx(
    engine: AsyncEngine, settings_factory: Callable[..., Settings], provider: SimulatedProvider
) -> Callable[..., ServiceContext]:
    """A payments context on the run's database; keyword arguments override settings,
    `provider=` replaces the simulated provider. Handlers wait for their provider work
    here unless a test says otherwise, so a test sees the outcome when they return."""

    def make(*, provider: PaymentProvider = provider, **overrides: Any) -> ServiceContext:
        values: dict[str, Any] = {"payment_retry_base_ms": 10, "payment_handler_wait_seconds": 60}
        values.update(overrides)
        return context(engine, settings_factory(**values), provider)

    return make


@pytest.fixture
def ctx(make_ctx: Callable[..., ServiceContext]) -> ServiceContext:
    return make_ctx()
