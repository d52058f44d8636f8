"""Holds that lapse, on a system of the suite's own with a one-second hold TTL (and its
own database, so its sweeper and relays never touch the shared system's rows); and a
catalog that cannot be reached (the shared system, with the cart pointed at a closed
port for the length of a test)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from cart_support import admin, available, get_cart, lines, make_product, peer_unreachable, shopper, stock

from prost.cart.tables import inventory_locks
from prost.kit.settings import Settings

from helpers import ADMIN_EMAIL, ADMIN_PASSWORD, GOOD_CARD, eventually


@pytest.fixture(scope="module")
async def short_holds(own_database: str, settings_factory: Callable[..., Settings]) -> AsyncIterator[Any]:
    """The whole system on the module's own database, holds lasting one second."""
    from prost.runtime.embedded import System

    settings = settings_factory(
        database_url=own_database,
        admin_email=ADMIN_EMAIL,
        admin_password=ADMIN_PASSWORD,
        cart_hold_ttl_seconds=1,
        sweep_interval_seconds=0.2,
    )
    async with System(settings) as running:
        yield running


@pytest.fixture
async def quick(short_holds: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=short_holds.url, timeout=30) as c:
        yield c


def past(value: str | None) -> bool:
    return value is not None and datetime.fromisoformat(value) <= datetime.now(UTC)


async def lock_status(system: Any, cart_id: str, product_id: str) -> str | None:
    async with system.engine.connect() as conn:
        status: str | None = await conn.scalar(
            sa.select(inventory_locks.c.status).where(
                inventory_locks.c.cart_id == cart_id, inventory_locks.c.product_id == product_id
            )
        )
    return status


async def lapsed_cart(
    quick: httpx.AsyncClient, *, stock: int, quantity: int
) -> tuple[dict[str, str], dict[str, Any], dict[str, Any]]:
    product = await make_product(quick, stock=stock)
    _, h = await shopper(quick)
    r = await quick.post("/api/v1/cart/items", headers=h, json={"product_id": product["id"], "quantity": quantity})
    assert r.status_code == 200, r.text

    async def lapsed() -> dict[str, Any] | None:
        cart = await get_cart(quick, h)
        return cart if past(cart["items"][0]["hold_expires_at"]) else None

    return h, product, await eventually(lapsed)


async def test_a_lapsed_hold_shows_in_the_cart_and_frees_the_stock(short_holds: Any, quick: httpx.AsyncClient) -> None:
    h, product, cart = await lapsed_cart(quick, stock=4, quantity=3)
    assert lines(cart) == {product["id"]: 3}

    async def swept() -> bool:
        return await available(quick, product["id"]) == 4

    await eventually(swept)

    # The catalog's sweeper announced it (`stock.released`, expired): the cart's view agrees.
    async def announced() -> bool:
        return await lock_status(short_holds, cart["id"], product["id"]) == "expired"

    await eventually(announced)
    item = (await get_cart(quick, h))["items"][0]
    assert past(item["hold_expires_at"])
    assert item["available"] is True  # nobody took the units meanwhile


async def test_checkout_holds_a_lapsed_line_again_when_stock_allows(short_holds: Any, quick: httpx.AsyncClient) -> None:
    h, product, cart = await lapsed_cart(quick, stock=5, quantity=2)
    r = await quick.post("/api/v1/cart/checkout", headers=h, json={"payment": GOOD_CARD})
    assert r.status_code == 202, r.text
    order_id = r.json()["order_id"]

    async def confirmed() -> bool:
        got = await quick.get(f"/api/v1/orders/{order_id}", headers=h)
        return bool(got.json()["status"] == "confirmed")

    await eventually(confirmed)
    assert await stock(quick, product["id"]) == 3

    async def fresh() -> bool:
        return (await get_cart(quick, h))["id"] != cart["id"]

    await eventually(fresh)


async def test_checkout_reports_insufficient_stock_when_a_lapsed_lines_units_are_gone(
    short_holds: Any, quick: httpx.AsyncClient
) -> None:
    h, product, cart = await lapsed_cart(quick, stock=5, quantity=4)

    async def freed() -> bool:
        return await available(quick, product["id"]) == 5

    await eventually(freed)
    # Meanwhile the shop sold most of them elsewhere.
    r = await admin(quick, "PUT", f"/api/v1/products/{product['id']}/stock", json={"stock": 2})
    assert r.status_code == 200, r.text
    r = await quick.post("/api/v1/cart/checkout", headers=h, json={"payment": GOOD_CARD})
    assert r.status_code == 409, r.text
    assert r.json()["error"] == "insufficient_stock"
    after = await get_cart(quick, h)
    assert after["id"] == cart["id"]
    assert after["status"] == "open"
    assert lines(after) == {product["id"]: 4}
    assert after["items"][0]["hold_expires_at"] is None
    assert after["items"][0]["available"] is False
    assert (await quick.get("/api/v1/orders", headers=h)).json()["items"] == []
    # Lowering the line to what is there makes it buyable again.
    r = await quick.put(f"/api/v1/cart/items/{product['id']}", headers=h, json={"quantity": 2})
    assert r.status_code == 200, r.text
    assert r.json()["items"][0]["available"] is True


# -- the catalog cannot be reached (shared system) --------------------------------------


async def test_catalog_unreachable_is_503_and_nothing_changes(system: Any, client: httpx.AsyncClient) -> None:
    a = await make_product(client, stock=10)
    b = await make_product(client, stock=10)
    _, h = await shopper(client)
    await client.post("/api/v1/cart/items", headers=h, json={"product_id": a["id"], "quantity": 2})
    before = await get_cart(client, h)
    async with peer_unreachable(system, "cart", "catalog"):
        attempts = [
            await client.get("/api/v1/cart", headers=h),
            await client.post("/api/v1/cart/items", headers=h, json={"product_id": a["id"], "quantity": 1}),
            await client.post("/api/v1/cart/items", headers=h, json={"product_id": b["id"], "quantity": 1}),
            await client.put(f"/api/v1/cart/items/{a['id']}", headers=h, json={"quantity": 5}),
            await client.delete(f"/api/v1/cart/items/{a['id']}", headers=h),
            await client.post("/api/v1/cart/checkout", headers=h, json={"payment": GOOD_CARD}),
        ]
    for r in attempts:
        assert r.status_code == 503, r.text
        assert r.json() == {"error": "unavailable", "message": r.json()["message"], "code": 503}
    assert await get_cart(client, h) == before
    assert await available(client, a["id"]) == 8
    assert await available(client, b["id"]) == 10
    assert (await client.get("/api/v1/orders", headers=h)).json()["items"] == []


async def test_an_empty_cart_is_shown_without_the_catalog(system: Any, client: httpx.AsyncClient) -> None:
    _, h = await shopper(client)
    async with peer_unreachable(system, "cart", "catalog"):
        r = await client.get("/api/v1/cart", headers=h)
    assert r.status_code == 200, r.text
    assert r.json()["items"] == []
