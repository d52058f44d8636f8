"""Every Orders row of API.md on the running system (embedded mode, in-process bus)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime
from typing import Any

import httpx
import orjson
import pytest
import sqlalchemy as sa
from orders_support import (
    DECLINED,
    final,
    make_product,
    order_body,
    outbox_events,
    place,
    raw_post,
    saga,
    scalar,
    settled_saga,
    stock_becomes,
)
from sqlalchemy.ext.asyncio import AsyncEngine

from helpers import GOOD_CARD, admin_token, bearer, register

pytestmark = pytest.mark.usefixtures("system")


async def count_orders(engine: AsyncEngine, user_id: str) -> int:
    return int(await scalar(engine, "SELECT count(*) FROM orders.orders WHERE user_id = :u", u=uuid.UUID(user_id)))


async def count_keys(engine: AsyncEngine, user_id: str) -> int:
    sql = "SELECT count(*) FROM orders.idempotency_records WHERE kind = 'http' AND user_id = :u"
    return int(await scalar(engine, sql, u=uuid.UUID(user_id)))


# -- placing an order ----------------------------------------------------------------------------


async def test_an_order_is_accepted_pending_priced_by_the_catalog_and_confirmed(client: httpx.AsyncClient) -> None:
    item = await make_product(client, price="19.99", stock=5)
    user, token = await register(client)
    body = order_body((item["id"], 2), unit_price="0.01", total_amount="0.02", status="confirmed")
    body["items"][0]["unit_price"] = "0.01"
    r = await client.post("/api/v1/orders", json=body, headers=bearer(token))
    assert r.status_code == 202, r.text
    order = r.json()
    assert order["status"] == "pending"
    assert order["failure_reason"] is None
    assert order["user_id"] == user["id"]
    assert order["total_amount"] == "39.98"
    assert order["currency"] == "USD"
    [line] = order["items"]
    assert line == {
        "product_id": item["id"],
        "sku": item["sku"],
        "name": item["name"],
        "quantity": 2,
        "unit_price": "19.99",
        "line_total": "39.98",
    }
    assert set(order) == {
        "id",
        "user_id",
        "status",
        "failure_reason",
        "items",
        "total_amount",
        "currency",
        "created_at",
        "updated_at",
    }
    done = await final(client, token, order["id"])
    assert done["status"] == "confirmed"
    assert done["failure_reason"] is None
    await stock_becomes(client, item["id"], stock=3, available=3)


async def test_no_card_number_is_stored_anywhere_in_orders(client: httpx.AsyncClient, engine: AsyncEngine) -> None:
    item = await make_product(client)
    _, token = await register(client)
    card = {**GOOD_CARD, "card_number": "5555555555554444"}
    order = await place(client, token, (item["id"], 1), card=card)
    await final(client, token, order["id"])
    async with engine.connect() as conn:
        dump = await conn.scalar(
            __import__("sqlalchemy").text(
                "SELECT concat(o::text, (SELECT string_agg(x.envelope::text, '') FROM orders.outbox x"
                " WHERE x.envelope->>'correlation_id' = o.id::text)) FROM orders.orders o WHERE o.id = :id"
            ),
            {"id": uuid.UUID(order["id"])},
        )
    assert "5555555555554444" not in dump
    assert "4444" in dump  # the last four are kept


@pytest.mark.parametrize(
    ("change", "where"),
    [
        (lambda b: b.update(items=[]), "items"),
        (lambda b: b["items"][0].update(quantity=0), "quantity"),
        (lambda b: b["items"][0].update(quantity=-3), "quantity"),
        (lambda b: b["items"].append(dict(b["items"][0])), "more than one line"),
        (lambda b: b["payment"].update(card_number="4242424242424241"), "Luhn"),
        (lambda b: b["payment"].update(exp_year=2020), "expired"),
        (lambda b: b["payment"].update(exp_month=13), "exp_month"),
        (lambda b: b["payment"].update(cvc="12"), "cvc"),
        (lambda b: b["payment"].update(cvc="12345"), "cvc"),
        (lambda b: b.pop("payment"), "payment"),
        (lambda b: b["items"][0].update(product_id="not-a-uuid"), "product_id"),
    ],
    ids=[
        "empty",
        "zero",
        "negative",
        "duplicate",
        "luhn",
        "expired",
        "month",
        "cvc-short",
        "cvc-long",
        "no-card",
        "bad-id",
    ],
)
async def test_invalid_orders_are_422_and_store_nothing(
    client: httpx.AsyncClient, engine: AsyncEngine, change: Any, where: str
) -> None:
    item = await make_product(client)
    user, token = await register(client)
    body = order_body((item["id"], 1))
    change(body)
    headers = {**bearer(token), "Idempotency-Key": f"k-{uuid.uuid4()}"}
    r = await client.post("/api/v1/orders", json=body, headers=headers)
    assert r.status_code == 422, r.text
    error = r.json()
    assert error["error"] == "validation_error"
    assert error["code"] == 422
    assert where in error["message"] or where in str(error.get("details"))
    assert "4242424242424241" not in r.text
    assert await count_orders(engine, user["id"]) == 0
    assert await count_keys(engine, user["id"]) == 0


async def test_an_unknown_or_inactive_product_is_422_and_stores_nothing(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    user, token = await register(client)
    unknown = str(uuid.uuid4())
    r = await client.post("/api/v1/orders", json=order_body((unknown, 1)), headers=bearer(token))
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "validation_error"
    assert unknown in r.json()["message"]
    item = await make_product(client)
    admin = await admin_token(client)
    assert (await client.delete(f"/api/v1/products/{item['id']}", headers=bearer(admin))).status_code == 204
    r = await client.post("/api/v1/orders", json=order_body((item["id"], 1)), headers=bearer(token))
    assert r.status_code == 422, r.text
    assert await count_orders(engine, user["id"]) == 0


async def test_placing_an_order_needs_a_token(client: httpx.AsyncClient) -> None:
    item = await make_product(client)
    r = await client.post("/api/v1/orders", json=order_body((item["id"], 1)))
    assert r.status_code == 401
    assert r.json()["error"] == "unauthorized"
    r = await client.post("/api/v1/orders", json=order_body((item["id"], 1)), headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401


async def test_malformed_json_is_422(client: httpx.AsyncClient) -> None:
    _, token = await register(client)
    r = await client.post(
        "/api/v1/orders", content=b"{not json", headers={**bearer(token), "content-type": "application/json"}
    )
    assert r.status_code == 422
    assert r.json()["error"] == "validation_error"


# -- Idempotency-Key -----------------------------------------------------------------------------------


async def test_the_same_key_and_body_return_the_first_response_and_create_nothing_new(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    item = await make_product(client)
    user, token = await register(client)
    headers = {**bearer(token), "Idempotency-Key": "order-once"}
    body = order_body((item["id"], 1))
    first = await client.post("/api/v1/orders", json=body, headers=headers)
    assert first.status_code == 202, first.text
    await final(client, token, first.json()["id"])
    second = await client.post("/api/v1/orders", json=body, headers=headers)
    assert second.status_code == 202
    assert second.json() == first.json()
    assert second.json()["status"] == "pending"  # the first response, not the order's state now
    assert await count_orders(engine, user["id"]) == 1
    assert await count_keys(engine, user["id"]) == 1


async def test_the_same_key_with_another_body_is_422_idempotency_key_reused(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    item = await make_product(client)
    user, token = await register(client)
    headers = {**bearer(token), "Idempotency-Key": "reused"}
    assert (await client.post("/api/v1/orders", json=order_body((item["id"], 1)), headers=headers)).status_code == 202
    r = await client.post("/api/v1/orders", json=order_body((item["id"], 2)), headers=headers)
    assert r.status_code == 422
    assert r.json()["error"] == "idempotency_key_reused"
    assert await count_orders(engine, user["id"]) == 1


async def test_concurrent_duplicates_make_one_order_and_each_gets_its_response_or_409(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    item = await make_product(client, stock=100)
    user, token = await register(client)
    headers = {**bearer(token), "Idempotency-Key": "racing"}
    body = order_body((item["id"], 1))
    answers = await asyncio.gather(*(client.post("/api/v1/orders", json=body, headers=headers) for _ in range(8)))
    ok = [r for r in answers if r.status_code == 202]
    assert ok
    assert all(r.status_code in (202, 409) for r in answers), [r.status_code for r in answers]
    assert {r.json()["id"] for r in ok} == {ok[0].json()["id"]}
    assert all(r.json()["error"] == "conflict" for r in answers if r.status_code == 409)
    assert await count_orders(engine, user["id"]) == 1


async def test_another_user_s_identical_key_is_a_new_request(client: httpx.AsyncClient) -> None:
    item = await make_product(client)
    _, alice = await register(client)
    _, bob = await register(client)
    body = order_body((item["id"], 1))
    a = await client.post("/api/v1/orders", json=body, headers={**bearer(alice), "Idempotency-Key": "shared"})
    b = await client.post("/api/v1/orders", json=body, headers={**bearer(bob), "Idempotency-Key": "shared"})
    assert a.status_code == b.status_code == 202
    assert a.json()["id"] != b.json()["id"]


@pytest.mark.parametrize(
    ("key", "statuses"),
    [
        (b"", {422}),
        (b"   ", {422}),
        (b"x" * 256, {422}),
        (b"tab\tkey", {422}),
        # The HTTP parser itself may refuse other control characters (400) before the
        # service sees them; either way nothing is stored.
        (b"bad\x01key", {400, 422}),
    ],
    ids=["empty", "blank", "long", "tab", "ctrl"],
)
async def test_malformed_idempotency_keys_are_refused_and_store_nothing(
    client: httpx.AsyncClient, system: Any, engine: AsyncEngine, key: bytes, statuses: set[int]
) -> None:
    item = await make_product(client)
    user, token = await register(client)
    body = orjson.dumps(order_body((item["id"], 1)))
    headers = [(b"Authorization", f"Bearer {token}".encode()), (b"Idempotency-Key", key)]
    status, answer = await raw_post(system.url, "/api/v1/orders", headers=headers, body=body)
    assert status in statuses, answer
    if status == 422:
        assert orjson.loads(answer)["error"] == "validation_error"
    assert await count_orders(engine, user["id"]) == 0


async def test_a_key_of_255_characters_is_fine(client: httpx.AsyncClient) -> None:
    item = await make_product(client)
    _, token = await register(client)
    r = await client.post(
        "/api/v1/orders", json=order_body((item["id"], 1)), headers={**bearer(token), "Idempotency-Key": "k" * 255}
    )
    assert r.status_code == 202, r.text


async def test_a_key_whose_first_request_failed_validation_can_be_used_again(client: httpx.AsyncClient) -> None:
    item = await make_product(client)
    _, token = await register(client)
    headers = {**bearer(token), "Idempotency-Key": "retry-after-422"}
    bad = order_body((item["id"], 1), card={**GOOD_CARD, "cvc": "1"})
    assert (await client.post("/api/v1/orders", json=bad, headers=headers)).status_code == 422
    good = await client.post("/api/v1/orders", json=order_body((item["id"], 1)), headers=headers)
    assert good.status_code == 202


async def test_keys_are_kept_24_hours_and_purged_after(client: httpx.AsyncClient, engine: AsyncEngine) -> None:
    from prost.orders.api import IDEMPOTENCY

    item = await make_product(client)
    user, token = await register(client)
    first: dict[str, Any] = {}
    for key in ("day-old", "too-old"):
        r = await client.post(
            "/api/v1/orders", json=order_body((item["id"], 1)), headers={**bearer(token), "Idempotency-Key": key}
        )
        assert r.status_code == 202
        first[key] = r.json()
    async with engine.begin() as conn:
        for key, hours in (("day-old", 23), ("too-old", 25)):
            await conn.execute(
                sa.text(
                    "UPDATE orders.idempotency_records SET created_at = now() - make_interval(hours => :h) "
                    "WHERE user_id = :u AND key = :k"
                ),
                {"h": hours, "u": uuid.UUID(user["id"]), "k": key},
            )
    assert await IDEMPOTENCY.purge_expired(engine) >= 1
    assert await count_keys(engine, user["id"]) == 1

    async def again(key: str) -> httpx.Response:
        return await client.post(
            "/api/v1/orders", json=order_body((item["id"], 1)), headers={**bearer(token), "Idempotency-Key": key}
        )

    kept = await again("day-old")
    assert (kept.status_code, kept.json()) == (202, first["day-old"])  # still the first response
    renewed = await again("too-old")
    assert renewed.status_code == 202
    assert renewed.json()["id"] != first["too-old"]["id"]  # a new request


# -- reading -------------------------------------------------------------------------------------------


async def test_listing_shows_own_orders_newest_first_with_a_total_and_pages(client: httpx.AsyncClient) -> None:
    item = await make_product(client, stock=100)
    _, token = await register(client)
    _, other = await register(client)
    placed = [await place(client, token, (item["id"], 1)) for _ in range(3)]
    await place(client, other, (item["id"], 1))
    r = await client.get("/api/v1/orders", headers=bearer(token))
    assert r.status_code == 200
    body = r.json()
    assert body["total"] == 3
    assert (body["page"], body["page_size"]) == (1, 20)
    assert [o["id"] for o in body["items"]] == [o["id"] for o in reversed(placed)]
    r = await client.get("/api/v1/orders", params={"page": 2, "page_size": 2}, headers=bearer(token))
    assert r.json()["total"] == 3
    assert [o["id"] for o in r.json()["items"]] == [placed[0]["id"]]


async def test_listing_filters_by_status(client: httpx.AsyncClient) -> None:
    item = await make_product(client, stock=1)
    _, token = await register(client)
    first = await place(client, token, (item["id"], 1))
    await final(client, token, first["id"])
    second = await place(client, token, (item["id"], 1))  # no stock left: rejected
    assert (await final(client, token, second["id"]))["status"] == "rejected"
    confirmed = (await client.get("/api/v1/orders", params={"status": "confirmed"}, headers=bearer(token))).json()
    rejected = (await client.get("/api/v1/orders", params={"status": "rejected"}, headers=bearer(token))).json()
    assert [o["id"] for o in confirmed["items"]] == [first["id"]]
    assert [o["id"] for o in rejected["items"]] == [second["id"]]
    assert rejected["items"][0]["failure_reason"] == "out_of_stock"


@pytest.mark.parametrize(
    "params", [{"status": "shipped"}, {"page": 0}, {"page_size": 101}, {"page_size": 0}, {"page": "x"}]
)
async def test_bad_list_parameters_are_422(client: httpx.AsyncClient, params: dict[str, Any]) -> None:
    _, token = await register(client)
    r = await client.get("/api/v1/orders", params=params, headers=bearer(token))
    assert r.status_code == 422
    assert r.json()["error"] == "validation_error"


async def test_admins_list_everyone_s_orders(client: httpx.AsyncClient) -> None:
    item = await make_product(client)
    _, token = await register(client)
    mine = await place(client, token, (item["id"], 1))
    admin = await admin_token(client)
    r = await client.get("/api/v1/orders", params={"page_size": 100}, headers=bearer(admin))
    assert r.status_code == 200
    assert r.json()["total"] >= 1
    assert mine["id"] in [o["id"] for o in r.json()["items"]]


async def test_an_order_is_visible_to_its_owner_and_admins_and_404_to_anyone_else(client: httpx.AsyncClient) -> None:
    item = await make_product(client)
    _, owner = await register(client)
    _, stranger = await register(client)
    order = await place(client, owner, (item["id"], 1))
    assert (await client.get(f"/api/v1/orders/{order['id']}", headers=bearer(owner))).status_code == 200
    admin = await admin_token(client)
    assert (await client.get(f"/api/v1/orders/{order['id']}", headers=bearer(admin))).status_code == 200
    for path in ("", "/saga"):
        r = await client.get(f"/api/v1/orders/{order['id']}{path}", headers=bearer(stranger))
        assert r.status_code == 404
        assert r.json()["error"] == "not_found"
    r = await client.post(f"/api/v1/orders/{order['id']}/cancel", headers=bearer(stranger))
    assert r.status_code == 404
    assert (await client.get(f"/api/v1/orders/{uuid.uuid4()}", headers=bearer(owner))).status_code == 404


# -- cancelling and the saga view -------------------------------------------------------------------


async def test_a_confirmed_rejected_or_cancelled_order_cannot_be_cancelled(client: httpx.AsyncClient) -> None:
    item = await make_product(client, stock=1)
    _, token = await register(client)
    declined = await place(client, token, (item["id"], 1), card=DECLINED)
    assert (await final(client, token, declined["id"]))["status"] == "cancelled"
    confirmed = await place(client, token, (item["id"], 1))
    assert (await final(client, token, confirmed["id"]))["status"] == "confirmed"
    rejected = await place(client, token, (item["id"], 1))
    assert (await final(client, token, rejected["id"]))["status"] == "rejected"
    for order in (declined, confirmed, rejected):
        r = await client.post(f"/api/v1/orders/{order['id']}/cancel", headers=bearer(token))
        assert r.status_code == 409
        assert r.json()["error"] == "conflict"


async def test_the_saga_view_lists_steps_and_compensations_with_times(client: httpx.AsyncClient) -> None:
    item = await make_product(client)
    _, token = await register(client)
    order = await place(client, token, (item["id"], 1))
    await final(client, token, order["id"])
    view = await settled_saga(client, token, order["id"])
    assert view["order_id"] == order["id"]
    assert view["status"] == "completed", view
    assert [(s["name"], s["status"]) for s in view["steps"]] == [
        ("place_order", "completed"),
        ("reserve_stock", "completed"),
        ("process_payment", "completed"),
        ("confirm_order", "completed"),
    ]
    assert all(s["at"].endswith("Z") for s in view["steps"])
    assert view["compensations"] == []
    assert (await saga(client, token, order["id"]))["order_id"] == order["id"]


async def test_the_saga_view_of_a_compensated_order_gives_each_compensation_a_time_and_shows_to_admins(
    client: httpx.AsyncClient,
) -> None:
    item = await make_product(client)
    _, token = await register(client)
    order = await place(client, token, (item["id"], 1), card=DECLINED)
    await final(client, token, order["id"])
    view = await settled_saga(client, token, order["id"])
    assert view["status"] == "compensated", view
    [compensation] = view["compensations"]
    assert (compensation["action"], compensation["status"]) == ("release_stock", "acknowledged")
    assert compensation["at"].endswith("Z")
    assert datetime.fromisoformat(compensation["at"]) >= datetime.fromisoformat(order["created_at"])
    assert await saga(client, await admin_token(client), order["id"]) == view


# -- the internal API for the cart ------------------------------------------------------------------


async def test_the_internal_api_is_idempotent_on_order_id_and_needs_a_service_token(
    client: httpx.AsyncClient, system: Any, engine: AsyncEngine
) -> None:
    item = await make_product(client)
    user, token = await register(client)
    order_id = str(uuid.uuid4())
    body = {"order_id": order_id, "user_id": user["id"], "cart_id": str(uuid.uuid4()), **order_body((item["id"], 1))}
    assert (await client.post("/internal/orders", json=body, headers=bearer(token))).status_code == 403
    service = system.host.contexts["orders"].auth.issue_service_token("cart")
    first = await client.post("/internal/orders", json=body, headers=bearer(service))
    assert first.status_code == 202, first.text
    assert first.json()["id"] == order_id
    second = await client.post("/internal/orders", json=body, headers=bearer(service))
    assert second.status_code == 202
    assert second.json()["id"] == order_id
    assert await count_orders(engine, user["id"]) == 1
    assert await outbox_events(engine, "orders", order_id, "order.placed") == 1  # the repeat wrote no event
    bad = {**body, "order_id": str(uuid.uuid4()), "payment": {**GOOD_CARD, "card_number": "4242424242424241"}}
    assert (await client.post("/internal/orders", json=bad, headers=bearer(service))).status_code == 422
    assert (await final(client, token, order_id))["status"] in ("confirmed", "cancelled", "rejected")
