"""Checkout and the cart's part of the saga, through the whole running system: the
cart becomes read-only, the order is started with its lines, a confirmed order
leaves the user a fresh cart, a failed one opens the cart again with its lines, and
an Idempotency-Key makes a retried checkout one order."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from cart_support import available, get_cart, lines, make_product, peer_unreachable, shopper, stock

from helpers import GOOD_CARD, eventually

DECLINED_CARD = {**GOOD_CARD, "card_number": "4000000000000002"}
SILENT_CARD = {**GOOD_CARD, "card_number": "4000000000000341"}  # the saga waits for its step timeout


async def order_of(client: httpx.AsyncClient, headers: dict[str, str], order_id: str) -> dict[str, Any]:
    r = await client.get(f"/api/v1/orders/{order_id}", headers=headers)
    assert r.status_code == 200, r.text
    order: dict[str, Any] = r.json()
    return order


async def orders_of(client: httpx.AsyncClient, headers: dict[str, str]) -> list[dict[str, Any]]:
    r = await client.get("/api/v1/orders", headers=headers, params={"page_size": 100})
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["items"]
    return items


async def filled_cart(
    client: httpx.AsyncClient, *, stock: int = 10, quantity: int = 2
) -> tuple[dict[str, str], dict[str, Any], dict[str, Any]]:
    product = await make_product(client, stock=stock, price="12.50")
    _, h = await shopper(client)
    r = await client.post("/api/v1/cart/items", headers=h, json={"product_id": product["id"], "quantity": quantity})
    assert r.status_code == 200, r.text
    return h, product, r.json()


async def assert_read_only(client: httpx.AsyncClient, h: dict[str, str], cart_id: str, product_id: str) -> None:
    """Changes to a checked-out cart are 409 `conflict`; one that succeeds went into
    another (fresh) cart."""
    attempts = [
        client.post("/api/v1/cart/items", headers=h, json={"product_id": product_id, "quantity": 1}),
        client.put(f"/api/v1/cart/items/{product_id}", headers=h, json={"quantity": 1}),
        client.delete(f"/api/v1/cart/items/{product_id}", headers=h),
    ]
    for attempt in attempts:
        r = await attempt
        if r.status_code == 200:
            assert r.json()["id"] != cart_id, r.text
        elif r.status_code == 404:  # PUT of a line the fresh cart does not have
            assert r.json()["error"] == "not_found"
        else:
            assert r.status_code == 409, r.text
            assert r.json()["error"] == "conflict"


async def test_checking_out_an_empty_cart_is_409_cart_empty(client: httpx.AsyncClient) -> None:
    _, h = await shopper(client)
    r = await client.post("/api/v1/cart/checkout", headers=h, json={"payment": GOOD_CARD})
    assert r.status_code == 409, r.text
    assert r.json() == {"error": "cart_empty", "message": r.json()["message"], "code": 409}


@pytest.mark.parametrize(
    "payment",
    [
        {**GOOD_CARD, "card_number": "4242424242424241"},
        {**GOOD_CARD, "exp_year": 2020},
        {**GOOD_CARD, "cvc": "12"},
        {**GOOD_CARD, "exp_month": 13},
        {"card_number": "4242424242424242"},
    ],
)
async def test_a_bad_card_is_422_and_nothing_changes(client: httpx.AsyncClient, payment: dict[str, Any]) -> None:
    h, product, cart = await filled_cart(client)
    r = await client.post(
        "/api/v1/cart/checkout", headers={**h, "Idempotency-Key": uuid.uuid4().hex}, json={"payment": payment}
    )
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "validation_error"
    assert "4242424242424241" not in r.text
    after = await get_cart(client, h)
    assert after["status"] == "open"
    assert after["items"] == cart["items"]
    assert await orders_of(client, h) == []
    assert await available(client, product["id"]) == 8


async def test_a_successful_checkout_makes_the_order_and_then_gives_a_fresh_cart(client: httpx.AsyncClient) -> None:
    h, product, cart = await filled_cart(client, stock=10, quantity=2)
    r = await client.post("/api/v1/cart/checkout", headers=h, json={"payment": GOOD_CARD})
    assert r.status_code == 202, r.text
    body = r.json()
    assert body == {"order_id": body["order_id"], "status": "pending"}
    order = await order_of(client, h, body["order_id"])
    assert [(i["product_id"], i["quantity"]) for i in order["items"]] == [(product["id"], 2)]
    assert order["total_amount"] == "25.00"

    # Read-only while the order runs: a change lands only in a fresh cart, once the
    # order is confirmed (which may already be the case, the saga is quick).
    during = await get_cart(client, h)
    assert during["id"] != cart["id"] or during["status"] == "checked_out"
    await assert_read_only(client, h, cart["id"], product["id"])

    async def confirmed() -> bool:
        return (await order_of(client, h, body["order_id"]))["status"] == "confirmed"

    await eventually(confirmed)

    async def fresh() -> dict[str, Any] | None:
        now = await get_cart(client, h)
        return now if now["id"] != cart["id"] else None

    new = await eventually(fresh)
    assert new["status"] == "open"
    assert new["items"] == []
    assert new["total_amount"] == "0.00"
    # The two held units were sold, never free in between.
    assert await stock(client, product["id"]) == 8
    assert await available(client, product["id"]) == 8


async def test_while_its_order_runs_the_cart_reads_checked_out(client: httpx.AsyncClient) -> None:
    h, product, cart = await filled_cart(client, quantity=2)
    r = await client.post("/api/v1/cart/checkout", headers=h, json={"payment": SILENT_CARD})
    assert r.status_code == 202, r.text
    during = await get_cart(client, h)
    assert (during["id"], during["status"]) == (cart["id"], "checked_out")
    assert lines(during) == {product["id"]: 2}
    assert (await order_of(client, h, r.json()["order_id"]))["status"] in ("pending", "stock_reserved")


async def test_a_declined_card_opens_the_cart_again_with_its_items_held(client: httpx.AsyncClient) -> None:
    h, product, cart = await filled_cart(client, stock=5, quantity=3)
    r = await client.post("/api/v1/cart/checkout", headers=h, json={"payment": DECLINED_CARD})
    assert r.status_code == 202, r.text
    order_id = r.json()["order_id"]

    async def cancelled() -> bool:
        order = await order_of(client, h, order_id)
        return order["status"] == "cancelled" and order["failure_reason"] == "payment_declined"

    await eventually(cancelled)

    async def reopened_and_held() -> dict[str, Any] | None:
        now = await get_cart(client, h)
        if now["status"] != "open" or not now["items"] or now["items"][0]["hold_expires_at"] is None:
            return None
        return now

    again = await eventually(reopened_and_held)
    assert again["id"] == cart["id"]
    assert lines(again) == {product["id"]: 3}
    assert datetime.fromisoformat(again["items"][0]["hold_expires_at"]) > datetime.now(UTC)
    assert again["items"][0]["available"] is True
    assert await stock(client, product["id"]) == 5
    assert await available(client, product["id"]) == 2
    # Open again means editable again, and checkable out again.
    r = await client.put(f"/api/v1/cart/items/{product['id']}", headers=h, json={"quantity": 1})
    assert r.status_code == 200, r.text
    r = await client.post("/api/v1/cart/checkout", headers=h, json={"payment": GOOD_CARD})
    assert r.status_code == 202, r.text
    assert r.json()["order_id"] != order_id


async def test_a_checkout_retried_with_the_same_key_makes_one_order(client: httpx.AsyncClient) -> None:
    h, _product, _cart = await filled_cart(client)
    key = {"Idempotency-Key": f"checkout-{uuid.uuid4()}"}
    first = await client.post("/api/v1/cart/checkout", headers={**h, **key}, json={"payment": GOOD_CARD})
    assert first.status_code == 202, first.text
    again = await client.post("/api/v1/cart/checkout", headers={**h, **key}, json={"payment": GOOD_CARD})
    assert again.status_code == 202, again.text
    assert again.json() == first.json()
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert [o["id"] for o in await orders_of(client, h)] == [first.json()["order_id"]]


async def test_concurrent_checkouts_with_one_key_make_one_order(client: httpx.AsyncClient) -> None:
    h, _product, _cart = await filled_cart(client)
    key = {"Idempotency-Key": f"checkout-{uuid.uuid4()}"}
    results = await asyncio.gather(
        *(client.post("/api/v1/cart/checkout", headers={**h, **key}, json={"payment": GOOD_CARD}) for _ in range(5))
    )
    accepted = [r for r in results if r.status_code == 202]
    assert accepted, [r.text for r in results]
    assert all(r.status_code in (202, 409) for r in results), [r.text for r in results]
    assert all(r.json()["error"] == "conflict" for r in results if r.status_code == 409)
    assert len({r.json()["order_id"] for r in accepted}) == 1
    assert len(await orders_of(client, h)) == 1


async def test_another_users_identical_key_is_a_request_of_its_own(client: httpx.AsyncClient) -> None:
    key = {"Idempotency-Key": f"checkout-{uuid.uuid4()}"}
    answers = []
    for _ in range(2):
        h, _product, _cart = await filled_cart(client)
        r = await client.post("/api/v1/cart/checkout", headers={**h, **key}, json={"payment": GOOD_CARD})
        assert r.status_code == 202, r.text
        assert "Idempotent-Replayed" not in r.headers
        answers.append(r.json()["order_id"])
    assert answers[0] != answers[1]


async def test_the_same_key_with_another_body_is_422_idempotency_key_reused(client: httpx.AsyncClient) -> None:
    h, _product, _cart = await filled_cart(client)
    key = {"Idempotency-Key": f"checkout-{uuid.uuid4()}"}
    assert (
        await client.post("/api/v1/cart/checkout", headers={**h, **key}, json={"payment": GOOD_CARD})
    ).status_code == 202
    other = {**GOOD_CARD, "card_number": "5555555555554444"}
    r = await client.post("/api/v1/cart/checkout", headers={**h, **key}, json={"payment": other})
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "idempotency_key_reused"
    assert len(await orders_of(client, h)) == 1


@pytest.mark.parametrize("key", ["", "x" * 256, "bad\tkey"])
async def test_a_malformed_idempotency_key_is_422(client: httpx.AsyncClient, key: str) -> None:
    h, _product, _cart = await filled_cart(client)
    r = await client.post(
        "/api/v1/cart/checkout", headers=[*h.items(), ("Idempotency-Key", key)], json={"payment": GOOD_CARD}
    )
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "validation_error"
    assert (await get_cart(client, h))["status"] == "open"


async def test_a_repeated_checkout_without_a_key_answers_with_the_same_order(client: httpx.AsyncClient) -> None:
    h, product, cart = await filled_cart(client, quantity=1)
    first = await client.post(
        "/api/v1/cart/checkout", headers=h, json={"payment": {**GOOD_CARD, "card_number": "4000000000000341"}}
    )
    assert first.status_code == 202, first.text
    # That card never answers, so the order stays in flight (until the saga's timeout).
    await assert_read_only(client, h, cart["id"], product["id"])
    again = await client.post(
        "/api/v1/cart/checkout", headers=h, json={"payment": {**GOOD_CARD, "card_number": "4000000000000341"}}
    )
    assert again.status_code == 202, again.text
    assert again.json()["order_id"] == first.json()["order_id"]
    assert len(await orders_of(client, h)) == 1


async def test_orders_unreachable_is_503_and_the_cart_stays_open_with_its_holds(
    system: Any, client: httpx.AsyncClient
) -> None:
    h, product, cart = await filled_cart(client, quantity=2)
    async with peer_unreachable(system, "cart", "orders"):
        r = await client.post("/api/v1/cart/checkout", headers=h, json={"payment": GOOD_CARD})
    assert r.status_code == 503, r.text
    assert r.json()["error"] == "unavailable"
    after = await get_cart(client, h)
    assert after["status"] == "open"
    assert lines(after) == lines(cart)
    assert after["items"][0]["available"] is True
    assert await available(client, product["id"]) == 8
    assert await orders_of(client, h) == []
    # A retry once orders is back makes exactly one order.
    r = await client.post("/api/v1/cart/checkout", headers=h, json={"payment": GOOD_CARD})
    assert r.status_code == 202, r.text
    assert len(await orders_of(client, h)) == 1
