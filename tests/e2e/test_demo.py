"""`prost seed` and `prost demo` against a running system, over the public API only.

The system is the in-process one (`system` fixture); seed and demo see it exactly as
they would see a distributed deployment: a gateway URL. What they report is checked
again here through the API itself, so a demo that misread the system would fail.
"""

from __future__ import annotations

import asyncio
import io
import socket
import uuid
from collections import Counter
from typing import Any

import httpx
import pytest
from rich.console import Console

from prost.runtime import demo as demo_module
from prost.runtime.demo import Api, Reporter, run_demo, run_seed, seed
from prost.runtime.demo_catalog import CATEGORIES, PRODUCTS, DemoCategory, DemoProduct

from helpers import ADMIN_EMAIL, ADMIN_PASSWORD, admin_token, bearer


def recording_console() -> Console:
    return Console(file=io.StringIO(), width=140, force_terminal=False, color_system=None)


def printed(console: Console) -> str:
    file = console.file
    assert isinstance(file, io.StringIO)
    return file.getvalue()


async def all_products(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    page = 1
    while True:
        r = await client.get("/api/v1/products", params={"page": page, "page_size": 100})
        assert r.status_code == 200, r.text
        body = r.json()
        found.extend(body["items"])
        if len(found) >= body["total"] or not body["items"]:
            return found
        page += 1


async def test_seed_loads_the_demo_catalog_with_categories_prices_and_stock(
    system: Any, client: httpx.AsyncClient
) -> None:
    console = recording_console()
    code = await run_seed(system.url, admin_email=ADMIN_EMAIL, admin_password=ADMIN_PASSWORD, console=console)
    assert code == 0, printed(console)
    assert "demo catalog at" in printed(console)

    r = await client.get("/api/v1/categories", params={"page_size": 100})
    assert r.status_code == 200
    body = r.json()
    categories = {c["slug"]: c for c in (body["items"] if isinstance(body, dict) else body)}
    assert {c.slug for c in CATEGORIES} <= set(categories)

    by_sku = {p["sku"]: p for p in await all_products(client)}
    for product in PRODUCTS:
        seen = by_sku[product.sku]
        assert seen["name"] == product.name
        assert seen["price"] == product.price
        assert seen["currency"] == "USD"
        assert seen["category_id"] == categories[product.category]["id"]
        # The walkthrough buys some; everything else is as seeded.
        if product.sku not in (demo_module.CHECKOUT_SKU, demo_module.DECLINED_SKU):
            assert seen["stock"] == product.stock
    assert len(PRODUCTS) >= 30
    assert len(CATEGORIES) >= 5


async def test_seed_twice_creates_nothing_the_second_time(system: Any, client: httpx.AsyncClient) -> None:
    async with Api(system.url) as api:
        token = await api.login(ADMIN_EMAIL, ADMIN_PASSWORD)
        await seed(api, admin_token=token, reporter=Reporter.silent())
        before = await all_products(client)
        again = await seed(api, admin_token=token, reporter=Reporter.silent())
    assert (again.categories_created, again.products_created) == (0, 0)
    assert (again.categories_existing, again.products_existing) == (len(CATEGORIES), len(PRODUCTS))
    after = await all_products(client)
    assert len(after) == len(before)
    assert Counter(p["sku"] for p in after)[PRODUCTS[0].sku] == 1


async def test_two_seeds_at_once_create_each_item_once(system: Any, client: httpx.AsyncClient) -> None:
    # Both look first, see nothing, and try to create: one of each pair gets 409 and
    # counts the item as already there.
    tag = uuid.uuid4().hex[:8]
    categories = [DemoCategory(f"race-{tag}-{i}", f"Race {tag} {i}") for i in range(3)]
    products = [
        DemoProduct(
            f"SEED-{tag}-{i}".upper(), f"Seed race {tag} {i}", "made twice at once", "5.00", 10, categories[i % 3].slug
        )
        for i in range(8)
    ]
    async with Api(system.url) as api:
        token = await api.login(ADMIN_EMAIL, ADMIN_PASSWORD)
        reports = await asyncio.gather(
            *(
                seed(api, admin_token=token, reporter=Reporter.silent(), categories=categories, products=products)
                for _ in range(2)
            )
        )
    assert sum(r.categories_created for r in reports) == len(categories)
    assert sum(r.categories_existing for r in reports) == len(categories)
    assert sum(r.products_created for r in reports) == len(products)
    assert sum(r.products_existing for r in reports) == len(products)
    r = await client.get("/api/v1/products", params={"q": f"Seed race {tag}", "page_size": 100})
    assert sorted(p["sku"] for p in r.json()["items"]) == sorted(p.sku for p in products)
    assert reports[0].product_ids == reports[1].product_ids


async def test_demo_shows_a_checkout_a_declined_card_and_a_race_as_the_api_sees_them(
    system: Any, client: httpx.AsyncClient
) -> None:
    async with Api(system.url) as api:
        report = await demo_module.demo(
            api, admin_email=ADMIN_EMAIL, admin_password=ADMIN_PASSWORD, reporter=Reporter.silent(), shoppers=7, units=3
        )
    assert report.ok, [s.problems for s in report.scenarios]
    admin = bearer(await admin_token(client))

    # 1. the checkout: confirmed, as the orders service says, with the saga's steps
    order = (await client.get(f"/api/v1/orders/{report.checkout.order['id']}", headers=admin)).json()
    assert order["status"] == "confirmed"
    assert [line["quantity"] for line in order["items"]] == [2]
    saga = (await client.get(f"/api/v1/orders/{order['id']}/saga", headers=admin)).json()
    assert saga["steps"]
    assert saga["status"] == report.checkout.saga["status"]

    # 2. the declined card: cancelled with its reason, compensated, the unit back
    declined = (await client.get(f"/api/v1/orders/{report.declined.order['id']}", headers=admin)).json()
    assert (declined["status"], declined["failure_reason"]) == ("cancelled", "payment_declined")
    saga = (await client.get(f"/api/v1/orders/{declined['id']}/saga", headers=admin)).json()
    assert saga["compensations"]
    product_id = report.seed.product_ids[demo_module.DECLINED_SKU]
    product = (await client.get(f"/api/v1/products/{product_id}")).json()
    assert product["available"] == report.declined.available_before

    # 3. the race: exactly as many confirmed as there were units, the rest rejected,
    #    and the product sold out with nothing left reserved
    assert (report.race.confirmed, report.race.rejected) == (3, 4)
    r = await client.get("/api/v1/products", params={"q": demo_module.RACE_SKU, "page_size": 100})
    racing = [p for p in r.json()["items"] if p["sku"].startswith(demo_module.RACE_SKU)]
    assert racing
    assert any((p["stock"], p["available"]) == (0, 0) for p in racing)
    orders = (await client.get("/api/v1/orders", params={"page_size": 100}, headers=admin)).json()["items"]
    race_orders = [o for o in orders if any(line["sku"].startswith(demo_module.RACE_SKU) for line in o["items"])]
    statuses = Counter(o["status"] for o in race_orders)
    assert statuses["confirmed"] >= 3
    assert statuses.keys() <= {"confirmed", "rejected"}


@pytest.mark.slow
async def test_prost_demo_prints_each_step_and_exits_0_on_a_second_run(system: Any) -> None:
    # A second walkthrough on the same system: the race product is restocked, not copied.
    console = recording_console()
    code = await run_demo(
        system.url, admin_email=ADMIN_EMAIL, admin_password=ADMIN_PASSWORD, shoppers=5, units=2, console=console
    )
    text = printed(console)
    assert code == 0, text
    for expected in (
        "1. a successful checkout",
        "2. a declined card, and its compensation",
        "3. a race for the last units",
        "saga of order",
        "confirmed",
        "payment_declined",
        "race: 5 shoppers, 2 units",
        "✓ checkout",
        "✓ declined card",
        "✓ race for the last units",
    ):
        assert expected in text, f"{expected!r} not in:\n{text}"


async def test_seed_refused_with_a_wrong_admin_password_exits_1(system: Any) -> None:
    console = recording_console()
    code = await run_seed(system.url, admin_email=ADMIN_EMAIL, admin_password="not-the-password", console=console)
    assert code == 1
    assert "401" in printed(console)


async def test_seed_and_demo_say_so_when_nothing_answers() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        console = recording_console()
        url = f"http://127.0.0.1:{port}"
        assert await run_seed(url, admin_email="a@b.c", admin_password="x", console=console) == 1
        assert await run_demo(url, admin_email="a@b.c", admin_password="x", console=console) == 1
    assert printed(console).count("is prost running there?") == 2
