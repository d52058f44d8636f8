"""The catalog's internal API (for the cart and orders services): quotes and a
cart's holds — placed, resized, released, extended, listed — and who may call it."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from catalog_support import admin_headers, counters, expire_now, make_product, service_headers
from sqlalchemy.ext.asyncio import AsyncEngine

from helpers import bearer, register


def hold_path(cart_id: uuid.UUID, product_id: uuid.UUID) -> str:
    return f"/internal/catalog/holds/{cart_id}/{product_id}"


async def put_hold(
    client: httpx.AsyncClient, system: Any, cart_id: uuid.UUID, product_id: uuid.UUID, quantity: int, **extra: Any
) -> httpx.Response:
    return await client.put(
        hold_path(cart_id, product_id), json={"quantity": quantity, **extra}, headers=service_headers(system)
    )


# -- quote ---------------------------------------------------------------------------


async def test_a_quote_gives_price_and_availability_of_known_products_in_the_order_asked(
    client: httpx.AsyncClient, system: Any, engine: AsyncEngine
) -> None:
    a = await make_product(engine, stock=4, price="2.50")
    b = await make_product(engine, stock=9, price="7.00")
    await put_hold(client, system, uuid.uuid4(), b, 2)
    unknown = uuid.uuid4()
    r = await client.post(
        "/internal/catalog/quote",
        json={"product_ids": [str(b), str(unknown), str(a), str(b)]},
        headers=service_headers(system, "orders"),
    )
    assert r.status_code == 200
    items = r.json()["items"]
    assert [i["product_id"] for i in items] == [str(b), str(a)]
    assert set(items[0]) == {"product_id", "sku", "name", "price", "currency", "active", "available"}
    assert (items[0]["price"], items[0]["available"], items[0]["active"]) == ("7.00", 7, True)
    assert (items[1]["price"], items[1]["available"]) == ("2.50", 4)


async def test_a_quote_counts_availability_as_the_product_page_does(
    client: httpx.AsyncClient, system: Any, engine: AsyncEngine
) -> None:
    """The quote reads products with a statement of its own: a live hold is promised,
    one past its expiry is free again (before any sweeper ends it), as on the product."""
    pid = await make_product(engine, stock=5)
    live, lapsed = uuid.uuid4(), uuid.uuid4()
    await put_hold(client, system, live, pid, 1)
    await put_hold(client, system, lapsed, pid, 2)
    async with engine.connect() as holder, holder.begin():
        # The sweeper skips a product another transaction holds: the lapsed hold stays
        # `active` (and counted in `reserved`) while both reads are made.
        await holder.execute(sa.text("SELECT 1 FROM catalog.products WHERE id = :p FOR UPDATE"), {"p": pid})
        await expire_now(engine, owner_id=lapsed)
        r = await client.post(
            "/internal/catalog/quote", json={"product_ids": [str(pid)]}, headers=service_headers(system)
        )
        product = (await client.get(f"/api/v1/products/{pid}")).json()
        assert (await counters(engine, pid))["reserved"] == 3
    [item] = r.json()["items"]
    assert item["available"] == product["available"] == 4


async def test_a_quote_marks_an_inactive_product_unavailable(
    client: httpx.AsyncClient, system: Any, engine: AsyncEngine
) -> None:
    pid = await make_product(engine, stock=4)
    assert (await client.delete(f"/api/v1/products/{pid}", headers=await admin_headers(client))).status_code == 204
    r = await client.post("/internal/catalog/quote", json={"product_ids": [str(pid)]}, headers=service_headers(system))
    [item] = r.json()["items"]
    assert (item["active"], item["available"]) == (False, 0)


# -- who may call --------------------------------------------------------------------


async def test_internal_routes_need_a_service_token_and_holds_need_the_cart_service(
    client: httpx.AsyncClient, system: Any, engine: AsyncEngine
) -> None:
    pid = await make_product(engine)
    cart = uuid.uuid4()
    _, user_token = await register(client)
    calls = [
        ("POST", "/internal/catalog/quote", {"product_ids": [str(pid)]}),
        ("PUT", hold_path(cart, pid), {"quantity": 1}),
        ("DELETE", hold_path(cart, pid), None),
        ("POST", f"/internal/catalog/holds/{cart}/extend", {}),
        ("GET", f"/internal/catalog/holds/{cart}", None),
    ]
    for method, path, body in calls:
        anonymous = await client.request(method, path, json=body)
        assert anonymous.status_code == 401, (method, path)
        for token in (user_token, (await admin_headers(client))["Authorization"].split()[1]):
            as_user = await client.request(method, path, json=body, headers=bearer(token))
            assert (as_user.status_code, as_user.json()["error"]) == (403, "forbidden"), (method, path)
    for method, path, body in calls[1:]:
        as_orders = await client.request(method, path, json=body, headers=service_headers(system, "orders"))
        assert as_orders.status_code == 403, (method, path)
    assert (await counters(engine, pid))["reserved"] == 0


async def test_internal_routes_are_not_in_the_public_openapi(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert "/api/v1/products" in paths
    assert not [p for p in paths if p.startswith("/internal")]


# -- holds ---------------------------------------------------------------------------


async def test_a_hold_is_placed_grown_shrunk_and_removed(
    client: httpx.AsyncClient, system: Any, engine: AsyncEngine
) -> None:
    pid = await make_product(engine, stock=10)
    cart = uuid.uuid4()
    placed = await put_hold(client, system, cart, pid, 3)
    assert placed.status_code == 200
    body = placed.json()
    assert set(body) == {"product_id", "quantity", "expires_at", "product"}
    assert (body["product_id"], body["quantity"], body["product"]["available"], body["product"]["stock"]) == (
        str(pid),
        3,
        7,
        10,
    )
    assert datetime.fromisoformat(body["expires_at"]) > datetime.fromisoformat(body["product"]["created_at"])
    assert (await put_hold(client, system, cart, pid, 8)).json()["product"]["available"] == 2
    assert (await put_hold(client, system, cart, pid, 1)).json()["product"]["available"] == 9
    removed = await put_hold(client, system, cart, pid, 0)
    assert (removed.json()["quantity"], removed.json()["expires_at"], removed.json()["product"]["available"]) == (
        0,
        None,
        10,
    )
    assert await counters(engine, pid) == {
        "stock": 10,
        "reserved": 0,
        "active_units": 0,
        "live_units": 0,
        "committed_units": 0,
        "available": 10,
    }


async def test_a_hold_beyond_what_is_available_is_409_and_changes_nothing(
    client: httpx.AsyncClient, system: Any, engine: AsyncEngine
) -> None:
    pid = await make_product(engine, stock=5)
    cart, other = uuid.uuid4(), uuid.uuid4()
    assert (await put_hold(client, system, other, pid, 3)).status_code == 200
    assert (await put_hold(client, system, cart, pid, 2)).status_code == 200
    refused = await put_hold(client, system, cart, pid, 3)
    assert refused.status_code == 409
    assert refused.json()["error"] == "insufficient_stock"
    assert "2 available" in refused.json()["message"]
    assert (await counters(engine, pid))["reserved"] == 5
    holds = (await client.get(f"/internal/catalog/holds/{cart}", headers=service_headers(system))).json()["holds"]
    assert [(h["quantity"], h["status"]) for h in holds] == [(2, "active")]


async def test_a_hold_on_an_unknown_product_is_404(client: httpx.AsyncClient, system: Any) -> None:
    r = await put_hold(client, system, uuid.uuid4(), uuid.uuid4(), 1)
    assert (r.status_code, r.json()["error"]) == (404, "not_found")


@pytest.mark.parametrize(
    "body",
    [
        {"quantity": -1},
        {"quantity": "1"},
        {"quantity": 1.5},
        {},
        {"quantity": 1, "ttl_seconds": 0},
        {"quantity": 1, "ttl_seconds": "60"},
    ],
)
async def test_a_bad_hold_body_is_422(
    client: httpx.AsyncClient, system: Any, engine: AsyncEngine, body: dict[str, Any]
) -> None:
    pid = await make_product(engine)
    r = await client.put(hold_path(uuid.uuid4(), pid), json=body, headers=service_headers(system))
    assert r.status_code == 422


async def test_releasing_a_hold_is_idempotent(client: httpx.AsyncClient, system: Any, engine: AsyncEngine) -> None:
    pid = await make_product(engine, stock=4)
    cart = uuid.uuid4()
    await put_hold(client, system, cart, pid, 4)
    for _ in range(2):
        r = await client.delete(hold_path(cart, pid), headers=service_headers(system))
        assert (r.status_code, r.content) == (204, b"")
    assert (await counters(engine, pid))["available"] == 4
    assert (
        await client.delete(hold_path(uuid.uuid4(), uuid.uuid4()), headers=service_headers(system))
    ).status_code == 204


async def test_extending_moves_live_holds_forward_and_leaves_expired_ones(
    client: httpx.AsyncClient, system: Any, engine: AsyncEngine
) -> None:
    a = await make_product(engine, stock=4)
    b = await make_product(engine, stock=4)
    cart = uuid.uuid4()
    first = (await put_hold(client, system, cart, a, 1, ttl_seconds=60)).json()
    await put_hold(client, system, cart, b, 2, ttl_seconds=60)
    async with engine.begin() as conn:
        await conn.execute(
            sa.text(
                "UPDATE catalog.inventory_reservations SET expires_at = now() - interval '1 second' WHERE owner_id = :c AND product_id = :p"
            ),
            {"c": cart, "p": b},
        )
    r = await client.post(
        f"/internal/catalog/holds/{cart}/extend", json={"ttl_seconds": 600}, headers=service_headers(system)
    )
    assert r.status_code == 200
    [extended] = r.json()["holds"]
    assert (extended["product_id"], extended["quantity"]) == (str(a), 1)
    assert datetime.fromisoformat(extended["expires_at"]) > datetime.fromisoformat(first["expires_at"])
    listed = {
        h["product_id"]: h
        for h in (await client.get(f"/internal/catalog/holds/{cart}", headers=service_headers(system))).json()["holds"]
    }
    assert (listed[str(a)]["status"], listed[str(b)]["status"]) == ("active", "expired")
    assert (await counters(engine, b))["available"] == 4
    no_body = await client.post(f"/internal/catalog/holds/{cart}/extend", headers=service_headers(system))
    assert [h["product_id"] for h in no_body.json()["holds"]] == [str(a)]


async def test_an_expired_hold_counts_no_more_and_its_cart_may_place_it_again(
    client: httpx.AsyncClient, system: Any, engine: AsyncEngine
) -> None:
    pid = await make_product(engine, stock=3)
    cart, other = uuid.uuid4(), uuid.uuid4()
    await put_hold(client, system, cart, pid, 3)
    await expire_now(engine, owner_id=cart)
    assert (await counters(engine, pid))["available"] == 3
    assert (await put_hold(client, system, other, pid, 2)).status_code == 200
    again = await put_hold(client, system, cart, pid, 1)
    assert (again.status_code, again.json()["product"]["available"]) == (200, 0)
    c = await counters(engine, pid)
    assert (c["reserved"], c["active_units"]) == (3, 3)
