"""Every Cart row of API.md, through the running system (embedded mode, real PostgreSQL):
one open cart per user, lines holding stock in the catalog, prices and totals, errors
in the contract shape, privacy between users, and concurrency."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import httpx
import pytest
from cart_support import admin, available, get_cart, lines, make_product, money, shopper

from prost.cart.repository import CartRepository

from helpers import bearer


def assert_error(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"] == code, body
    assert body["code"] == status
    assert isinstance(body["message"], str)
    assert body["message"]


# -- GET /api/v1/cart -----------------------------------------------------------------


async def test_a_new_user_gets_an_empty_open_cart_and_the_same_one_again(client: httpx.AsyncClient) -> None:
    user, h = await shopper(client)
    cart = await get_cart(client, h)
    assert cart == {
        "id": cart["id"],
        "user_id": user["id"],
        "status": "open",
        "items": [],
        "total_amount": "0.00",
        "currency": "USD",
    }
    uuid.UUID(cart["id"])
    assert (await get_cart(client, h))["id"] == cart["id"]


async def test_the_cart_needs_a_valid_token(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/api/v1/cart"), 401, "unauthorized")
    assert_error(await client.get("/api/v1/cart", headers=bearer("not-a-token")), 401, "unauthorized")
    assert_error(await client.post("/api/v1/cart/items", json={}), 401, "unauthorized")
    assert_error(await client.post("/api/v1/cart/checkout", json={}), 401, "unauthorized")


async def test_first_use_from_many_requests_at_once_makes_one_cart(client: httpx.AsyncClient) -> None:
    _, h = await shopper(client)
    carts = await asyncio.gather(*(get_cart(client, h) for _ in range(8)))
    assert len({c["id"] for c in carts}) == 1


# -- POST /api/v1/cart/items ----------------------------------------------------------


async def test_adding_a_product_holds_its_stock_and_shows_the_line(client: httpx.AsyncClient) -> None:
    product = await make_product(client, stock=10, price="19.99")
    _, h = await shopper(client)
    r = await client.post("/api/v1/cart/items", headers=h, json={"product_id": product["id"], "quantity": 3})
    assert r.status_code == 200, r.text
    cart = r.json()
    assert cart["status"] == "open"
    [item] = cart["items"]
    assert item["product_id"] == product["id"]
    assert item["sku"] == product["sku"]
    assert item["name"] == product["name"]
    assert item["quantity"] == 3
    assert money(item["unit_price"]) == Decimal("19.99")
    assert money(item["line_total"]) == Decimal("59.97")
    assert money(cart["total_amount"]) == Decimal("59.97")
    assert datetime.fromisoformat(item["hold_expires_at"]) > datetime.now(UTC)
    assert item["available"] is True
    assert await available(client, product["id"]) == 7
    assert await get_cart(client, h) == cart


async def test_adding_the_same_product_again_grows_the_line_and_its_hold(client: httpx.AsyncClient) -> None:
    product = await make_product(client, stock=10)
    _, h = await shopper(client)
    for _ in range(2):
        r = await client.post("/api/v1/cart/items", headers=h, json={"product_id": product["id"], "quantity": 2})
        assert r.status_code == 200, r.text
    assert lines(r.json()) == {product["id"]: 4}
    assert await available(client, product["id"]) == 6


async def test_totals_are_exact_decimals_over_several_lines(client: httpx.AsyncClient) -> None:
    a = await make_product(client, stock=50, price="0.10")
    b = await make_product(client, stock=50, price="0.20")
    _, h = await shopper(client)
    await client.post("/api/v1/cart/items", headers=h, json={"product_id": a["id"], "quantity": 3})
    r = await client.post("/api/v1/cart/items", headers=h, json={"product_id": b["id"], "quantity": 1})
    assert r.status_code == 200, r.text
    cart = r.json()
    assert [i["product_id"] for i in cart["items"]] == [a["id"], b["id"]]
    assert cart["items"][0]["line_total"] == "0.30"
    assert cart["total_amount"] == "0.50"


async def test_not_enough_stock_is_409_and_changes_nothing(client: httpx.AsyncClient) -> None:
    product = await make_product(client, stock=3)
    _, h = await shopper(client)
    await client.post("/api/v1/cart/items", headers=h, json={"product_id": product["id"], "quantity": 2})
    before = await get_cart(client, h)
    r = await client.post("/api/v1/cart/items", headers=h, json={"product_id": product["id"], "quantity": 2})
    assert_error(r, 409, "insufficient_stock")
    assert lines(await get_cart(client, h)) == lines(before) == {product["id"]: 2}
    assert await available(client, product["id"]) == 1


async def test_an_unknown_product_is_404_and_no_line_appears(client: httpx.AsyncClient) -> None:
    _, h = await shopper(client)
    r = await client.post("/api/v1/cart/items", headers=h, json={"product_id": str(uuid.uuid4()), "quantity": 1})
    assert_error(r, 404, "not_found")
    assert (await get_cart(client, h))["items"] == []


async def test_an_inactive_product_is_404(client: httpx.AsyncClient) -> None:
    product = await make_product(client, stock=5)
    assert (await admin(client, "DELETE", f"/api/v1/products/{product['id']}")).status_code == 204
    _, h = await shopper(client)
    r = await client.post("/api/v1/cart/items", headers=h, json={"product_id": product["id"], "quantity": 1})
    assert_error(r, 404, "not_found")


@pytest.mark.parametrize(
    "body",
    [
        {"quantity": 0},
        {"quantity": -1},
        {"quantity": 1001},
        {"quantity": "2"},
        {"quantity": 1.5},
        {"quantity": None},
        {},
        {"quantity": 1, "colour": "red"},
    ],
)
async def test_a_bad_line_body_is_422(client: httpx.AsyncClient, body: dict[str, object]) -> None:
    product = await make_product(client, stock=5)
    _, h = await shopper(client)
    r = await client.post("/api/v1/cart/items", headers=h, json={"product_id": product["id"], **body})
    assert_error(r, 422, "validation_error")
    assert (await get_cart(client, h))["items"] == []


async def test_a_bad_product_id_or_malformed_json_is_422(client: httpx.AsyncClient) -> None:
    _, h = await shopper(client)
    assert_error(
        await client.post("/api/v1/cart/items", headers=h, json={"product_id": "nope", "quantity": 1}),
        422,
        "validation_error",
    )
    r = await client.post("/api/v1/cart/items", headers={**h, "content-type": "application/json"}, content=b"{not json")
    assert_error(r, 422, "validation_error")


async def test_a_line_never_grows_past_1000_units(client: httpx.AsyncClient) -> None:
    product = await make_product(client, stock=5000)
    _, h = await shopper(client)
    assert (
        await client.post("/api/v1/cart/items", headers=h, json={"product_id": product["id"], "quantity": 1000})
    ).status_code == 200
    r = await client.post("/api/v1/cart/items", headers=h, json={"product_id": product["id"], "quantity": 1})
    assert_error(r, 422, "validation_error")
    assert lines(await get_cart(client, h)) == {product["id"]: 1000}
    assert await available(client, product["id"]) == 4000


async def test_prices_shown_are_the_catalogs_current_prices(client: httpx.AsyncClient) -> None:
    product = await make_product(client, stock=5, price="10.00")
    _, h = await shopper(client)
    await client.post("/api/v1/cart/items", headers=h, json={"product_id": product["id"], "quantity": 2})
    r = await admin(client, "PATCH", f"/api/v1/products/{product['id']}", json={"price": "12.50"})
    assert r.status_code == 200, r.text
    cart = await get_cart(client, h)
    assert cart["items"][0]["unit_price"] == "12.50"
    assert cart["total_amount"] == "25.00"


# -- PUT /api/v1/cart/items/{product_id} ------------------------------------------------


async def test_setting_a_quantity_resizes_the_hold_both_ways(client: httpx.AsyncClient) -> None:
    product = await make_product(client, stock=10)
    _, h = await shopper(client)
    await client.post("/api/v1/cart/items", headers=h, json={"product_id": product["id"], "quantity": 2})
    r = await client.put(f"/api/v1/cart/items/{product['id']}", headers=h, json={"quantity": 7})
    assert r.status_code == 200, r.text
    assert lines(r.json()) == {product["id"]: 7}
    assert await available(client, product["id"]) == 3
    r = await client.put(f"/api/v1/cart/items/{product['id']}", headers=h, json={"quantity": 1})
    assert lines(r.json()) == {product["id"]: 1}
    assert await available(client, product["id"]) == 9


async def test_setting_more_than_is_free_is_409_and_keeps_the_line(client: httpx.AsyncClient) -> None:
    product = await make_product(client, stock=4)
    _, h = await shopper(client)
    await client.post("/api/v1/cart/items", headers=h, json={"product_id": product["id"], "quantity": 2})
    r = await client.put(f"/api/v1/cart/items/{product['id']}", headers=h, json={"quantity": 5})
    assert_error(r, 409, "insufficient_stock")
    assert lines(await get_cart(client, h)) == {product["id"]: 2}
    assert await available(client, product["id"]) == 2


async def test_setting_zero_removes_the_line_and_releases_the_hold(client: httpx.AsyncClient) -> None:
    product = await make_product(client, stock=4)
    _, h = await shopper(client)
    await client.post("/api/v1/cart/items", headers=h, json={"product_id": product["id"], "quantity": 3})
    r = await client.put(f"/api/v1/cart/items/{product['id']}", headers=h, json={"quantity": 0})
    assert r.status_code == 200, r.text
    assert r.json()["items"] == []
    assert await available(client, product["id"]) == 4


async def test_setting_a_product_that_is_not_in_the_cart_is_404(client: httpx.AsyncClient) -> None:
    product = await make_product(client, stock=4)
    _, h = await shopper(client)
    assert_error(
        await client.put(f"/api/v1/cart/items/{product['id']}", headers=h, json={"quantity": 1}), 404, "not_found"
    )
    assert await available(client, product["id"]) == 4


@pytest.mark.parametrize("body", [{"quantity": -1}, {"quantity": 1001}, {}, {"quantity": "1"}])
async def test_a_bad_quantity_update_is_422(client: httpx.AsyncClient, body: dict[str, object]) -> None:
    product = await make_product(client, stock=4)
    _, h = await shopper(client)
    await client.post("/api/v1/cart/items", headers=h, json={"product_id": product["id"], "quantity": 1})
    assert_error(await client.put(f"/api/v1/cart/items/{product['id']}", headers=h, json=body), 422, "validation_error")
    assert lines(await get_cart(client, h)) == {product["id"]: 1}


# -- DELETE /api/v1/cart/items/{product_id} ---------------------------------------------


async def test_deleting_a_line_releases_its_hold_and_keeps_the_others(client: httpx.AsyncClient) -> None:
    a = await make_product(client, stock=5)
    b = await make_product(client, stock=5)
    _, h = await shopper(client)
    await client.post("/api/v1/cart/items", headers=h, json={"product_id": a["id"], "quantity": 2})
    await client.post("/api/v1/cart/items", headers=h, json={"product_id": b["id"], "quantity": 1})
    r = await client.delete(f"/api/v1/cart/items/{a['id']}", headers=h)
    assert r.status_code == 200, r.text
    assert lines(r.json()) == {b["id"]: 1}
    assert await available(client, a["id"]) == 5
    assert await available(client, b["id"]) == 4
    again = await client.delete(f"/api/v1/cart/items/{a['id']}", headers=h)
    assert again.status_code == 200, again.text
    assert lines(again.json()) == {b["id"]: 1}


async def test_any_change_extends_the_other_lines_holds(client: httpx.AsyncClient) -> None:
    a = await make_product(client, stock=5)
    b = await make_product(client, stock=5)
    _, h = await shopper(client)
    first = (await client.post("/api/v1/cart/items", headers=h, json={"product_id": a["id"], "quantity": 1})).json()
    await asyncio.sleep(0.05)
    after = (await client.post("/api/v1/cart/items", headers=h, json={"product_id": b["id"], "quantity": 1})).json()
    held = {i["product_id"]: datetime.fromisoformat(i["hold_expires_at"]) for i in after["items"]}
    assert held[a["id"]] > datetime.fromisoformat(first["items"][0]["hold_expires_at"])


# -- privacy ----------------------------------------------------------------------------


async def test_one_user_never_sees_or_changes_anothers_cart(client: httpx.AsyncClient) -> None:
    product = await make_product(client, stock=10)
    alice, ha = await shopper(client)
    bob, hb = await shopper(client)
    await client.post("/api/v1/cart/items", headers=ha, json={"product_id": product["id"], "quantity": 3})
    alice_cart = await get_cart(client, ha)
    bob_cart = await get_cart(client, hb)
    assert bob_cart["id"] != alice_cart["id"]
    assert bob_cart["user_id"] == bob["id"]
    assert bob_cart["items"] == []
    # Bob works on his own cart only: Alice's line and hold stay as they were.
    assert (await client.delete(f"/api/v1/cart/items/{product['id']}", headers=hb)).status_code == 200
    assert_error(
        await client.put(f"/api/v1/cart/items/{product['id']}", headers=hb, json={"quantity": 1}), 404, "not_found"
    )
    r = await client.post(
        "/api/v1/cart/checkout",
        headers=hb,
        json={"payment": {"card_number": "4242424242424242", "exp_month": 12, "exp_year": 2035, "cvc": "123"}},
    )
    assert_error(r, 409, "cart_empty")
    assert await get_cart(client, ha) == {**alice_cart, "items": alice_cart["items"]}
    assert alice_cart["user_id"] == alice["id"]
    assert await available(client, product["id"]) == 7


# -- concurrency ------------------------------------------------------------------------


async def test_twenty_users_racing_for_five_units_exactly_five_get_one(client: httpx.AsyncClient) -> None:
    product = await make_product(client, stock=5)
    shoppers = await asyncio.gather(*(shopper(client) for _ in range(20)))
    results = await asyncio.gather(
        *(
            client.post("/api/v1/cart/items", headers=h, json={"product_id": product["id"], "quantity": 1})
            for _, h in shoppers
        )
    )
    codes = sorted(r.status_code for r in results)
    assert codes.count(200) == 5, [r.text for r in results if r.status_code not in (200, 409)]
    assert codes.count(409) == 15
    assert all(r.json()["error"] == "insufficient_stock" for r in results if r.status_code == 409)
    assert await available(client, product["id"]) == 0
    carts = await asyncio.gather(*(get_cart(client, h) for _, h in shoppers))
    assert sum(lines(c).get(product["id"], 0) for c in carts) == 5


async def test_concurrent_adds_by_one_user_all_count(client: httpx.AsyncClient) -> None:
    product = await make_product(client, stock=50)
    _, h = await shopper(client)
    results = await asyncio.gather(
        *(
            client.post("/api/v1/cart/items", headers=h, json={"product_id": product["id"], "quantity": 1})
            for _ in range(10)
        )
    )
    assert [r.status_code for r in results] == [200] * 10
    assert lines(await get_cart(client, h)) == {product["id"]: 10}
    assert await available(client, product["id"]) == 40


async def test_a_local_failure_after_the_catalog_said_yes_gives_the_hold_back(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    product = await make_product(client, stock=5)
    _, h = await shopper(client)
    await client.post("/api/v1/cart/items", headers=h, json={"product_id": product["id"], "quantity": 1})

    async def database_fails(*_args: object, **_kw: object) -> None:
        raise RuntimeError("the database went away")

    # The catalog grows the hold to 3, then recording it fails.
    monkeypatch.setattr(CartRepository, "record_hold", staticmethod(database_fails))
    r = await client.post("/api/v1/cart/items", headers=h, json={"product_id": product["id"], "quantity": 2})
    monkeypatch.undo()
    assert_error(r, 500, "internal_error")
    assert lines(await get_cart(client, h)) == {product["id"]: 1}
    assert await available(client, product["id"]) == 4
