"""One end-to-end suite, run against `prost up` and against
`prost up --distributed --replicas orders=2,catalog=2` (machine PostgreSQL and
RabbitMQ), as real processes over HTTP."""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from decimal import Decimal
from typing import Any

import httpx
import pytest

from helpers import ADMIN_EMAIL, ADMIN_PASSWORD, GOOD_CARD, bearer, eventually
from processes import ProstProcess, base_env, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DECLINED_CARD = GOOD_CARD | {"card_number": "4000000000000002"}
FINAL = {"confirmed", "rejected", "cancelled"}


class Shop:
    """A client of the public API, as a shopper or the shop owner would use it."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def login(self, email: str, password: str) -> str:
        r = await self.client.post("/api/v1/users/login", json={"email": email, "password": password})
        assert r.status_code == 200, r.text
        token: str = r.json()["token"]
        return token

    async def shopper(self) -> str:
        tag = uuid.uuid4().hex[:10]
        email, password = f"e2e-{tag}@prost.test", "password-123"
        r = await self.client.post(
            "/api/v1/users/register", json={"email": email, "username": f"e2e_{tag}", "password": password}
        )
        assert r.status_code == 201, r.text
        return await self.login(email, password)

    async def product(self, admin: str, *, stock: int, price: str = "10.00", name: str | None = None) -> dict[str, Any]:
        sku = f"E2E-{uuid.uuid4().hex[:10].upper()}"
        body = {"sku": sku, "name": name or f"Thing {sku}", "description": "end-to-end", "price": price, "stock": stock}
        r = await self.client.post("/api/v1/products", json=body, headers=bearer(admin))
        assert r.status_code == 201, r.text
        product: dict[str, Any] = r.json()
        return product

    async def get_product(self, product_id: str) -> dict[str, Any]:
        r = await self.client.get(f"/api/v1/products/{product_id}")
        assert r.status_code == 200, r.text
        product: dict[str, Any] = r.json()
        return product

    async def orders_of(self, token: str) -> list[dict[str, Any]]:
        """Every order of the token's user (a hundred at most)."""
        r = await self.client.get("/api/v1/orders", params={"page_size": 100}, headers=bearer(token))
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        assert body["total"] <= 100, body["total"]
        items: list[dict[str, Any]] = body["items"]
        return items

    async def final_order(self, token: str, order_id: str, timeout: float = 60) -> dict[str, Any]:
        async def final() -> dict[str, Any] | None:
            r = await self.client.get(f"/api/v1/orders/{order_id}", headers=bearer(token))
            assert r.status_code == 200, r.text
            order: dict[str, Any] = r.json()
            return order if order["status"] in FINAL else None

        result: dict[str, Any] = await eventually(final, timeout=timeout, interval=0.2)
        return result


async def stock_settles_at(shop: Shop, product_id: str, units: int) -> bool:
    """True once stock and availability both equal `units` (no reservation left open)."""
    product = await shop.get_product(product_id)
    return bool(product["stock"] == product["available"] == units)


@pytest.fixture(scope="module", params=["embedded", "distributed"])
async def running(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    make_database_module: Callable[[], AbstractAsyncContextManager[str]],
) -> AsyncIterator[ProstProcess]:
    mode = request.param
    tmp = tmp_path_factory.mktemp(f"e2e-{mode}")
    port = free_port()
    env = base_env(
        PROST_HTTP_PORT=str(port),
        PROST_DATA_DIR=str(tmp / "data"),
        PROST_ADMIN_EMAIL=ADMIN_EMAIL,
        PROST_ADMIN_PASSWORD=ADMIN_PASSWORD,
        PROST_JWT_SECRET="e2e-secret-" + "s" * 40,
    )
    if mode == "embedded":
        process = ProstProcess(["up"], env=env, log_path=tmp / "prost.log", port=port)
        await process.start()
        yield process
        await process.stop(signal.SIGINT)
        return
    broker = request.getfixturevalue("broker_url")
    async with make_database_module() as database_url:
        env |= {"PROST_DATABASE_URL": database_url, "PROST_BROKER_URL": broker}
        process = ProstProcess(
            ["up", "--distributed", "--replicas", "orders=2,catalog=2"], env=env, log_path=tmp / "prost.log", port=port
        )
        await process.start(ready_timeout=120)
        yield process
        code = await process.stop(signal.SIGINT)
        assert code == 0, process.tail()


@pytest.fixture(scope="module")
def make_database_module(server_url: str) -> Callable[[], AbstractAsyncContextManager[str]]:
    from helpers import fresh_database

    return lambda: fresh_database(server_url)


@pytest.fixture
async def shop(running: ProstProcess) -> AsyncIterator[Shop]:
    async with httpx.AsyncClient(base_url=running.url, timeout=30) as client:
        yield Shop(client)


async def test_a_shopper_browses_fills_a_cart_and_checks_out(shop: Shop) -> None:
    admin = await shop.login(ADMIN_EMAIL, ADMIN_PASSWORD)
    tea = await shop.product(admin, stock=20, price="4.50", name=f"Green tea {uuid.uuid4().hex[:6]}")
    cup = await shop.product(admin, stock=20, price="12.00")
    token = await shop.shopper()

    found = (await shop.client.get("/api/v1/products", params={"q": tea["name"]})).json()
    assert [p["id"] for p in found["items"]] == [tea["id"]]

    for product, quantity in ((tea, 3), (cup, 1)):
        r = await shop.client.post(
            "/api/v1/cart/items", json={"product_id": product["id"], "quantity": quantity}, headers=bearer(token)
        )
        assert r.status_code == 200, r.text
    cart = r.json()
    assert Decimal(cart["total_amount"]) == Decimal("25.50")
    assert (await shop.get_product(tea["id"]))["available"] == 17  # held for the cart

    r = await shop.client.post("/api/v1/cart/checkout", json={"payment": GOOD_CARD}, headers=bearer(token))
    assert r.status_code == 202, r.text
    order = await shop.final_order(token, r.json()["order_id"])
    assert order["status"] == "confirmed"
    assert Decimal(order["total_amount"]) == Decimal("25.50")
    # The catalog commits the stock when it hears `order.confirmed`, a moment later.
    await eventually(lambda: stock_settles_at(shop, tea["id"], 17), timeout=30)
    cart = (await shop.client.get("/api/v1/cart", headers=bearer(token))).json()
    assert cart["items"] == []


async def test_a_declined_card_is_compensated_and_the_cart_comes_back(shop: Shop) -> None:
    admin = await shop.login(ADMIN_EMAIL, ADMIN_PASSWORD)
    product = await shop.product(admin, stock=5)
    token = await shop.shopper()
    r = await shop.client.post(
        "/api/v1/cart/items", json={"product_id": product["id"], "quantity": 2}, headers=bearer(token)
    )
    assert r.status_code == 200, r.text
    r = await shop.client.post("/api/v1/cart/checkout", json={"payment": DECLINED_CARD}, headers=bearer(token))
    assert r.status_code == 202, r.text
    order_id = r.json()["order_id"]
    order = await shop.final_order(token, order_id)
    assert (order["status"], order["failure_reason"]) == ("cancelled", "payment_declined")
    saga = (await shop.client.get(f"/api/v1/orders/{order_id}/saga", headers=bearer(token))).json()
    assert saga["compensations"], saga

    async def cart_back() -> dict[str, Any] | None:
        cart: dict[str, Any] = (await shop.client.get("/api/v1/cart", headers=bearer(token))).json()
        return cart if cart["status"] == "open" and cart["items"] else None

    cart = await eventually(cart_back, timeout=30)
    assert [(i["product_id"], i["quantity"]) for i in cart["items"]] == [(product["id"], 2)]
    assert (await shop.get_product(product["id"]))["stock"] == 5


async def test_an_order_for_more_than_the_stock_is_rejected(shop: Shop) -> None:
    admin = await shop.login(ADMIN_EMAIL, ADMIN_PASSWORD)
    product = await shop.product(admin, stock=1)
    token = await shop.shopper()
    r = await shop.client.post(
        "/api/v1/orders",
        json={"items": [{"product_id": product["id"], "quantity": 2}], "payment": GOOD_CARD},
        headers=bearer(token),
    )
    assert r.status_code == 202, r.text
    order = await shop.final_order(token, r.json()["id"])
    assert (order["status"], order["failure_reason"]) == ("rejected", "out_of_stock")
    assert (await shop.get_product(product["id"]))["available"] == 1


async def test_sixty_buyers_race_for_ten_units(shop: Shop) -> None:
    admin = await shop.login(ADMIN_EMAIL, ADMIN_PASSWORD)
    product = await shop.product(admin, stock=10)
    tokens = await asyncio.gather(*(shop.shopper() for _ in range(60)))

    async def buy(token: str) -> tuple[str, str]:
        body = {"items": [{"product_id": product["id"], "quantity": 1}], "payment": GOOD_CARD}
        r = await shop.client.post("/api/v1/orders", json=body, headers=bearer(token))
        assert r.status_code == 202, r.text
        return token, r.json()["id"]

    placed = await asyncio.gather(*(buy(t) for t in tokens))
    finals = await asyncio.gather(*(shop.final_order(t, o, timeout=120) for t, o in placed))
    statuses = [o["status"] for o in finals]
    assert statuses.count("confirmed") == 10
    assert statuses.count("rejected") == 50
    # The catalog commits each sale when it hears `order.confirmed`, a moment later.
    await eventually(lambda: stock_settles_at(shop, product["id"], 0), timeout=30)


async def test_a_killed_service_loses_no_order(shop: Shop, running: ProstProcess) -> None:
    admin = await shop.login(ADMIN_EMAIL, ADMIN_PASSWORD)
    product = await shop.product(admin, stock=1000)
    token = await shop.shopper()
    orders: list[str] = []

    async def place(n: int) -> None:
        for _ in range(n):
            body = {"items": [{"product_id": product["id"], "quantity": 1}], "payment": GOOD_CARD}
            try:
                r = await shop.client.post("/api/v1/orders", json=body, headers=bearer(token))
            except httpx.HTTPError:
                continue
            if r.status_code == 202:
                orders.append(r.json()["id"])
            await asyncio.sleep(0.02)

    stream = asyncio.create_task(place(40))
    await asyncio.sleep(0.4)
    if "--distributed" in running.args:
        victim = running.children("orders")[0]
        victim.kill()  # SIGKILL; the supervisor starts it again
    else:
        running.kill_tree()
        await running.proc.wait()  # type: ignore[union-attr]
        await running.start()
    await stream  # placing goes on (or fails over) while the service restarts
    if len(orders) < 40:
        await place(5)
    finals = await asyncio.gather(*(shop.final_order(token, o, timeout=120) for o in orders))
    assert all(o["status"] in FINAL for o in finals)
    # A request cut off by the kill may have been taken all the same (its 202 was lost
    # with the connection): what was sold is what the shop says this shopper ordered.
    placed = await shop.orders_of(token)
    assert {o["id"] for o in placed} >= set(orders)
    finals = await asyncio.gather(*(shop.final_order(token, o["id"], timeout=120) for o in placed))
    confirmed = sum(1 for o in finals if o["status"] == "confirmed")
    # Conserved: every sale counted once, nothing left reserved (once the commits land).
    await eventually(lambda: stock_settles_at(shop, product["id"], 1000 - confirmed), timeout=30)
    after = await shop.get_product(product["id"])
    assert after["stock"] == 1000 - confirmed


async def test_a_token_from_before_a_password_change_is_refused_everywhere(shop: Shop) -> None:
    tag = uuid.uuid4().hex[:10]
    email, old, new = f"rev-{tag}@prost.test", "password-old-1", "password-new-2"
    r = await shop.client.post(
        "/api/v1/users/register", json={"email": email, "username": f"rev_{tag}", "password": old}
    )
    assert r.status_code == 201, r.text
    user_id = r.json()["id"]
    stale = await shop.login(email, old)
    r = await shop.client.patch(
        f"/api/v1/users/profile/{user_id}", json={"password": new, "current_password": old}, headers=bearer(stale)
    )
    assert r.status_code == 200, r.text

    async def refused_everywhere() -> bool:
        codes = [
            (await shop.client.get(path, headers=bearer(stale))).status_code
            for path in (f"/api/v1/users/profile/{user_id}", "/api/v1/cart", "/api/v1/orders")
        ]
        return codes == [401, 401, 401]

    await eventually(refused_everywhere, timeout=10)
    fresh = await shop.login(email, new)
    assert (await shop.client.get("/api/v1/cart", headers=bearer(fresh))).status_code == 200
