"""A shopper's way through the storefront, in a real browser against a real prost."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from playwright.async_api import expect

from .conftest import DECLINED_CARD, GOOD_CARD, Server, Shop, screenshot

pytestmark = pytest.mark.browser

SAGA_TIMEOUT_MS = 30_000  # the contract promises a final status within 5 s; room for a busy machine
OVERFLOW = "() => document.scrollingElement.scrollWidth - window.innerWidth"


async def _orders_of(server: Server, email: str, password: str) -> list[dict[str, Any]]:
    token = await server.token(email, password)
    async with server.api() as client:
        answer = await client.get("/api/v1/orders", headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 200, answer.text
        items: list[dict[str, Any]] = answer.json()["items"]
        return items


async def test_shopper_registers_searches_buys_two_products_and_sees_confirmed(
    shop: Shop, prost_server: Server
) -> None:
    tag = uuid.uuid4().hex[:8]
    lager = await prost_server.create_product(name=f"Lager {tag}", price="4.50", description="Crisp and pale.")
    stout = await prost_server.create_product(name=f"Stout {tag}", price="5.25", description="Dark, roasted.")
    await prost_server.create_product(name=f"Cider {tag}", price="3.99")
    page = shop.page

    email, password = await shop.register()
    # The token is kept in memory only: nothing in the browser's storage.
    assert await page.evaluate("() => [localStorage.length, sessionStorage.length, document.cookie]") == [0, 0, ""]

    await shop.search(tag)
    main = page.locator("main")
    await expect(main.locator(".product-card")).to_have_count(3)
    await expect(main.locator(".result-count")).to_contain_text("3 products")
    await screenshot(page, "shop-desktop")
    for product in (lager, stout):
        card = main.locator(f'.product-card[data-product-id="{product["id"]}"]')
        await card.get_by_role("button", name=f"Add {product['name']} to cart").click()
        await expect(card.get_by_role("status")).to_contain_text("to your cart")

    await shop.nav("Cart")
    lines = main.locator(".cart-line")
    await expect(lines).to_have_count(2)
    await expect(main.locator("[data-role=total]")).to_have_text("$9.75")
    await expect(lines.first.locator(".hold")).to_contain_text("Held for")
    assert await shop.unlabelled_fields() == []
    await screenshot(page, "cart-desktop")

    checkout_keys: list[str | None] = []
    page.on(
        "request",
        lambda r: (
            checkout_keys.append(r.headers.get("idempotency-key")) if r.url.endswith("/api/v1/cart/checkout") else None
        ),
    )
    await shop.pay(GOOD_CARD, double_click=True)
    await expect(main.locator(".order-status-line .badge")).to_have_text("confirmed", timeout=SAGA_TIMEOUT_MS)
    timeline = main.locator("[data-role=timeline]")
    await expect(timeline.locator("[data-kind=branch]")).to_have_count(0)
    await expect(timeline.locator(".tl-node").last).to_contain_text("onfirm")
    await screenshot(page, "order-confirmed-desktop")

    # The double click made one order, not two; whatever was sent carried one Idempotency-Key.
    assert len(checkout_keys) >= 1
    assert len(set(checkout_keys)) == 1
    assert checkout_keys[0]
    orders = await _orders_of(prost_server, email, password)
    assert [(o["status"], o["total_amount"]) for o in orders] == [("confirmed", "9.75")]

    await shop.nav("Orders")
    await expect(main.locator(".order-row")).to_have_count(1)
    await expect(main.locator(".order-row .badge")).to_have_text("confirmed")
    await screenshot(page, "orders-desktop")


async def test_declined_card_shows_the_compensation_and_gives_the_cart_back(shop: Shop, prost_server: Server) -> None:
    tag = uuid.uuid4().hex[:8]
    product = await prost_server.create_product(name=f"Porter {tag}", price="6.00", stock=10)
    page = shop.page
    await shop.register()

    await shop.go(f"#/products/{product['id']}")
    main = page.locator("main")
    await expect(main.locator("[data-role=availability]")).to_have_text("10 available")
    await main.get_by_label("Quantity").fill("2")
    await main.get_by_role("button", name="Add to cart").click()
    await expect(main.get_by_role("status").filter(has_text="to your cart")).to_be_visible()
    # Live availability: the page shows its own hold without a reload.
    await expect(main.locator("[data-role=availability]")).to_have_text("8 available")
    await screenshot(page, "product-desktop")

    await shop.nav("Cart")
    await shop.pay(DECLINED_CARD)
    status = main.locator(".order-status-line")
    await expect(status.locator(".badge")).to_have_text("cancelled", timeout=SAGA_TIMEOUT_MS)
    await expect(status).to_contain_text("payment declined")
    timeline = main.locator("[data-role=timeline]")
    await expect(timeline.locator("[data-kind=branch]")).to_contain_text("payment declined")
    await expect(timeline.locator("[data-kind=compensation]").first).to_be_visible(timeout=SAGA_TIMEOUT_MS)
    await expect(timeline.locator(".tl-node").last).to_contain_text("Cancelled")
    await screenshot(page, "order-cancelled-desktop")

    await main.get_by_role("link", name="Back to the cart").click()
    lines = main.locator(".cart-line")
    await expect(lines).to_have_count(1, timeout=SAGA_TIMEOUT_MS)
    await expect(lines.first).to_contain_text(f"Porter {tag}")
    await expect(main.get_by_role("button", name="Pay")).to_be_visible(timeout=SAGA_TIMEOUT_MS)


async def test_an_api_error_is_shown_in_words(shop: Shop, prost_server: Server) -> None:
    product = await prost_server.create_product(name=f"Rare ale {uuid.uuid4().hex[:8]}", stock=1)
    await shop.register()
    await shop.go(f"#/products/{product['id']}")
    main = shop.page.locator("main")
    await main.get_by_label("Quantity").fill("5")
    await main.get_by_role("button", name="Add to cart").click()
    alert = main.get_by_role("alert")
    await expect(alert).to_contain_text("Could not add")
    assert await alert.get_attribute("data-code") == "insufficient_stock"


async def test_the_sign_in_is_not_kept_across_a_reload(shop: Shop) -> None:
    await shop.register()
    await shop.go("#/cart")
    await shop.page.reload()
    # Memory-only token: after a reload the page asks for the password again.
    await expect(shop.page.locator("main .page-title")).to_have_text("Log in")
    await expect(shop.page.locator("#announcer")).to_contain_text("Please log in")


async def test_pages_fit_a_phone_screen(phone_shop: Shop, prost_server: Server) -> None:
    tag = uuid.uuid4().hex[:8]
    product = await prost_server.create_product(name=f"Pilsner with a rather long name {tag}", price="3.10")
    page = phone_shop.page
    await phone_shop.register("phone")
    await phone_shop.search(tag)
    main = page.locator("main")
    await main.get_by_role("button", name=f"Add {product['name']} to cart").click()
    await expect(main.get_by_role("status").filter(has_text="to your cart")).to_be_visible()
    await screenshot(page, "shop-phone")
    assert await page.evaluate(OVERFLOW) <= 0

    await phone_shop.nav("Cart")
    await screenshot(page, "cart-phone")
    assert await page.evaluate(OVERFLOW) <= 0
    await phone_shop.pay(GOOD_CARD)
    await expect(main.locator(".order-status-line .badge")).to_have_text("confirmed", timeout=SAGA_TIMEOUT_MS)
    await screenshot(page, "order-phone")
    assert await page.evaluate(OVERFLOW) <= 0


async def test_keyboard_users_skip_to_the_content_and_land_on_each_new_page(shop: Shop) -> None:
    page = shop.page
    await shop.open("#/")
    await page.keyboard.press("Tab")
    assert await page.evaluate("() => document.activeElement.textContent") == "Skip to content"
    await page.keyboard.press("Enter")
    assert await page.evaluate("() => document.activeElement.matches('main h1')")
    await page.get_by_role("banner").get_by_role("link", name="Log in").focus()
    await page.keyboard.press("Enter")
    await expect(page.locator("main h1")).to_have_text("Log in")
    await expect(page.locator("main h1")).to_be_focused()
    # The landmarks a screen reader lists.
    for role in ("banner", "navigation", "main", "contentinfo"):
        await expect(page.get_by_role(role).first).to_be_visible()
