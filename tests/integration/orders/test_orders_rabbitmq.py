"""The key saga flows with events on RabbitMQ (a vhost of the test run's own):
confirmed, declined and released, rejected, and a cancel while payment runs whose
late payment is refunded. Skips when RabbitMQ is unreachable (fails under
PROST_REQUIRE_SERVICES=1)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from orders_support import DECLINED, compensations_become, final, make_product, place, settled_saga, stock_becomes

from prost.kit.settings import Settings

from helpers import ADMIN_EMAIL, ADMIN_PASSWORD, GOOD_CARD, bearer, eventually, register

pytestmark = [pytest.mark.rabbitmq, pytest.mark.slow]


@pytest.fixture
async def on_rabbitmq(
    server_url: str, broker_url: str, settings_factory: Callable[..., Settings]
) -> AsyncIterator[Any]:
    from prost.runtime.embedded import System

    from helpers import fresh_database

    async with fresh_database(server_url) as url:
        settings = settings_factory(
            database_url=url,
            broker_url=broker_url,
            admin_email=ADMIN_EMAIL,
            admin_password=ADMIN_PASSWORD,
            payment_latency_ms=1000,
            saga_step_timeout_seconds=60,
            saga_payment_timeout_seconds=60,
        )
        async with System(settings) as running:
            yield running


@pytest.fixture
async def rclient(on_rabbitmq: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=on_rabbitmq.url, timeout=30) as client:
        yield client


async def test_over_rabbitmq_orders_confirm_fail_and_reject_as_on_the_memory_bus(rclient: httpx.AsyncClient) -> None:
    item = await make_product(rclient, stock=4)
    _, token = await register(rclient)
    good, declined, too_many = await asyncio.gather(
        place(rclient, token, (item["id"], 1), card=GOOD_CARD),
        place(rclient, token, (item["id"], 1), card=DECLINED),
        place(rclient, token, (item["id"], 9)),
    )
    assert (await final(rclient, token, good["id"]))["status"] == "confirmed"
    assert (await final(rclient, token, declined["id"]))["failure_reason"] == "payment_declined"
    assert (await final(rclient, token, too_many["id"]))["failure_reason"] == "out_of_stock"
    assert (await settled_saga(rclient, token, declined["id"]))["status"] == "compensated"
    await stock_becomes(rclient, item["id"], stock=3, available=3)


async def test_over_rabbitmq_a_cancel_during_payment_releases_stock_and_refunds(rclient: httpx.AsyncClient) -> None:
    item = await make_product(rclient, stock=2)
    _, token = await register(rclient)
    order = await place(rclient, token, (item["id"], 2))

    async def payment_running() -> bool:
        r = await rclient.get(f"/api/v1/orders/{order['id']}", headers=bearer(token))
        return bool(r.json()["status"] == "stock_reserved")

    await eventually(payment_running)
    r = await rclient.post(f"/api/v1/orders/{order['id']}/cancel", headers=bearer(token))
    assert r.status_code == 202, r.text
    both = {"release_stock": "acknowledged", "refund_payment": "acknowledged"}
    await compensations_become(rclient, token, order["id"], both)
    assert (await final(rclient, token, order["id"]))["status"] == "cancelled"
    await stock_becomes(rclient, item["id"], stock=2, available=2)
