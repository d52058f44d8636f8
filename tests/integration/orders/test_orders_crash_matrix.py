"""The crash matrix: for each step of the saga, the service that owns it stops right
after its transaction committed (before it acknowledged the event, before its relay
may have published what it wrote); a new process starts on the same database; the
saga must end in the same final state as without the crash.

A crash is a System whose chosen handler commits, signals, then never returns (so the
event is never acknowledged and the producer's outbox row stays unsent), stopped at
once; the restart is a fresh System on the same database. Each case has a database
of its own and a generous step timeout, so no timeout hides a lost step.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from orders_support import DECLINED, final, make_product, place, settled_saga, stock_becomes

from prost.kit.settings import Settings
from prost.runtime import host
from prost.runtime.embedded import System

from helpers import ADMIN_EMAIL, ADMIN_PASSWORD, GOOD_CARD, register

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Path:
    card: dict[str, Any]
    quantity: int
    status: str
    reason: str | None
    saga: str
    stock_after: int


STOCK = 3
CONFIRMED = Path(GOOD_CARD, 2, "confirmed", None, "completed", STOCK - 2)
DECLINED_PATH = Path(DECLINED, 2, "cancelled", "payment_declined", "compensated", STOCK)
REJECTED = Path(GOOD_CARD, STOCK + 1, "rejected", "out_of_stock", "failed", STOCK)

CASES = [
    # (owner, event it handles, path)
    ("catalog", "order.placed", CONFIRMED),
    ("orders", "stock.reserved", CONFIRMED),
    ("catalog", "payment.requested", CONFIRMED),
    ("payments", "payment.requested", CONFIRMED),
    ("orders", "payment.processed", CONFIRMED),
    ("catalog", "order.confirmed", CONFIRMED),
    ("payments", "payment.requested", DECLINED_PATH),
    ("orders", "payment.failed", DECLINED_PATH),
    ("catalog", "order.cancelled", DECLINED_PATH),
    ("orders", "stock.released", DECLINED_PATH),
    ("catalog", "order.placed", REJECTED),
    ("orders", "stock.reservation_failed", REJECTED),
]


def crash_after(service: str, event_type: str, crashed: asyncio.Event) -> Callable[..., Any]:
    real = host.handler_for

    def handler_for(ctx: Any, box: Any, routing_key: str, target: Any) -> Any:
        inner = real(ctx, box, routing_key, target)
        if ctx.name != service or routing_key != event_type:
            return inner

        async def committed_then_dead(envelope: Any) -> None:
            await inner(envelope)
            crashed.set()
            await asyncio.Event().wait()  # never acknowledges: the process is gone

        return committed_then_dead

    return handler_for


@pytest.mark.parametrize(
    ("service", "event_type", "path"),
    CASES,
    ids=[f"{s}-{e}-{p.status}" for s, e, p in CASES],
)
async def test_a_crash_right_after_a_step_commits_ends_in_the_same_final_state(
    server_url: str,
    settings_factory: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
    service: str,
    event_type: str,
    path: Path,
) -> None:
    from helpers import fresh_database

    async with fresh_database(server_url) as url:
        settings = settings_factory(
            database_url=url,
            admin_email=ADMIN_EMAIL,
            admin_password=ADMIN_PASSWORD,
            saga_step_timeout_seconds=120,
            saga_payment_timeout_seconds=120,
        )
        crashed = asyncio.Event()
        with monkeypatch.context() as patch:
            patch.setattr(host, "handler_for", crash_after(service, event_type, crashed))
            first = System(settings)
            await first.start()
            try:
                async with httpx.AsyncClient(base_url=first.url, timeout=30) as client:
                    item = await make_product(client, stock=STOCK)
                    _, token = await register(client)
                    order = await place(client, token, (item["id"], path.quantity), card=path.card)
                    await asyncio.wait_for(crashed.wait(), timeout=60)
            finally:
                await first.stop()

        async with System(settings) as second, httpx.AsyncClient(base_url=second.url, timeout=30) as client:
            done = await final(client, token, order["id"], timeout=60)
            assert (done["status"], done["failure_reason"]) == (path.status, path.reason)
            view = await settled_saga(client, token, order["id"], timeout=60)
            assert view["status"] == path.saga, view
            await stock_becomes(client, item["id"], stock=path.stock_after, available=path.stock_after)


async def test_orders_stopping_right_after_accepting_an_order_loses_nothing(
    server_url: str, settings_factory: Callable[..., Settings]
) -> None:
    """The 202 is committed with `order.placed` in the outbox; whether or not the relay
    published it before the stop, the order completes after the restart."""
    from helpers import fresh_database

    async with fresh_database(server_url) as url:
        settings = settings_factory(
            database_url=url,
            admin_email=ADMIN_EMAIL,
            admin_password=ADMIN_PASSWORD,
            saga_step_timeout_seconds=120,
            saga_payment_timeout_seconds=120,
        )
        async with System(settings) as first, httpx.AsyncClient(base_url=first.url, timeout=30) as client:
            item = await make_product(client, stock=STOCK)
            _, token = await register(client)
            orders = [await place(client, token, (item["id"], 1)) for _ in range(2)]
        async with System(settings) as second, httpx.AsyncClient(base_url=second.url, timeout=30) as client:
            for order in orders:
                assert (await final(client, token, order["id"], timeout=60))["status"] == "confirmed"
            await stock_becomes(client, item["id"], stock=STOCK - 2, available=STOCK - 2)
