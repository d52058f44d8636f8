"""The shop owner's pages, and product text that tries to be HTML."""

from __future__ import annotations

import uuid

import pytest
from playwright.async_api import expect

from .conftest import GOOD_CARD, PHONE, Server, Shop, screenshot

pytestmark = pytest.mark.browser

HOSTILE_NAME = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'
HOSTILE_DESCRIPTION = '<b>bold?</b><iframe src="/"></iframe>'
OVERFLOW = "() => document.scrollingElement.scrollWidth - window.innerWidth"


async def test_admin_creates_a_product_and_sees_it_in_the_shop(shop: Shop, prost_server: Server) -> None:
    tag = uuid.uuid4().hex[:8]
    page = shop.page
    await shop.login(prost_server.admin_email, prost_server.admin_password)
    await expect(page.locator("header .role")).to_have_text("admin")

    await shop.nav("Catalog")
    main = page.locator("main")
    category_form = main.locator("form", has=page.get_by_role("heading", name="New category"))
    await category_form.get_by_label("Name").fill(f"Wheat beers {tag}")
    await expect(category_form.get_by_label("Slug")).to_have_value(f"wheat-beers-{tag}")
    await category_form.get_by_role("button", name="Create category").click()
    await expect(category_form.get_by_role("status")).to_contain_text("created")

    product_form = main.locator("form", has=page.get_by_role("heading", name="New product"))
    await product_form.get_by_label("SKU").fill(f"WB-{tag}")
    await product_form.get_by_label("Name").fill(f"Hefeweizen {tag}")
    await product_form.get_by_label("Description").fill("Cloudy, with banana and clove.")
    await product_form.get_by_label("Price").fill("-1")
    await product_form.get_by_label("Category").select_option(label=f"Wheat beers {tag}")
    await product_form.get_by_label("Stock").fill("3")
    await product_form.get_by_role("button", name="Create product").click()
    # A refused request is shown in words, not swallowed.
    await expect(product_form.get_by_role("alert")).to_contain_text("Could not create the product")
    await product_form.get_by_label("Price").fill("7.80")
    await product_form.get_by_role("button", name="Create product").click()
    await expect(product_form.get_by_role("status")).to_contain_text(f"Created “Hefeweizen {tag}”")
    assert await shop.unlabelled_fields() == []

    row = main.locator("tbody tr", has_text=f"Hefeweizen {tag}")
    await row.get_by_label(f"Price of Hefeweizen {tag} in USD").fill("8.20")
    await row.get_by_role("button", name="Save").click()
    await expect(main.get_by_role("status").filter(has_text="is now $8.20")).to_be_visible()
    await row.get_by_label(f"Stock of Hefeweizen {tag}").fill("4")
    await row.get_by_role("button", name="Set").click()
    await expect(row.locator("[data-role=available]")).to_have_text("4")
    await screenshot(page, "admin-catalog-desktop")
    await page.set_viewport_size(PHONE)  # type: ignore[arg-type]
    await screenshot(page, "admin-catalog-phone")
    assert await page.evaluate(OVERFLOW) <= 0  # the wide table scrolls inside its own box

    await product_form.get_by_role("link", name="See it in the shop").click()
    await expect(main.locator(".page-title")).to_have_text(f"Hefeweizen {tag}")
    await expect(main.locator(".price")).to_have_text("$8.20")
    await expect(main.locator("[data-role=availability]")).to_have_text("4 available")

    await shop.nav("Shop")
    await main.get_by_label("Category").select_option(label=f"Wheat beers {tag}")
    await expect(main.locator(".product-card")).to_have_count(1)
    await expect(main.locator(".product-card .product-name")).to_have_text(f"Hefeweizen {tag}")


async def test_admin_deactivates_a_product_and_it_leaves_the_shop(shop: Shop, prost_server: Server) -> None:
    tag = uuid.uuid4().hex[:8]
    await prost_server.create_product(name=f"Seasonal {tag}")
    await shop.login(prost_server.admin_email, prost_server.admin_password)
    await shop.nav("Catalog")
    main = shop.page.locator("main")
    await main.get_by_role("searchbox", name="Find a product").fill(tag)
    await main.get_by_role("button", name="Find").click()
    await expect(main.locator("tbody tr")).to_have_count(1)  # the search's answer is on screen
    row = main.locator("tbody tr", has_text=f"Seasonal {tag}")
    await row.get_by_role("button", name=f"Deactivate Seasonal {tag}").click()
    await row.get_by_role("button", name=f"Confirm: deactivate Seasonal {tag}").click()
    await expect(main.get_by_role("status").filter(has_text="is deactivated")).to_be_visible()
    await shop.nav("Shop")
    await shop.search(tag)
    await expect(main.locator(".product-card")).to_have_count(0)


async def test_admin_dashboard_draws_orders_durations_and_low_stock(shop: Shop, prost_server: Server) -> None:
    tag = uuid.uuid4().hex[:8]
    scarce = await prost_server.create_product(name=f"Last keg {tag}", stock=2)
    # One finished order, so every picture has something to draw.
    await shop.register("dash")
    await shop.go(f"#/products/{scarce['id']}")
    await shop.page.locator("main").get_by_role("button", name="Add to cart").click()
    await expect(shop.page.locator("main").get_by_role("status").filter(has_text="to your cart")).to_be_visible()
    await shop.nav("Cart")
    await shop.pay(GOOD_CARD)
    await expect(shop.page.locator(".order-status-line .badge")).to_have_text("confirmed", timeout=30_000)

    await shop.page.get_by_role("button", name="Log out").click()
    await shop.login(prost_server.admin_email, prost_server.admin_password)
    await shop.nav("Dashboard")
    main = shop.page.locator("main")
    await expect(main.get_by_role("img", name="Orders by status")).to_be_visible()
    await expect(main.get_by_role("img", name="Saga duration distribution")).to_be_visible()
    low = main.get_by_role("img", name="Products with low availability")
    await expect(low).to_be_visible()
    await expect(low).to_contain_text(f"Last keg {tag}")
    assert int(await main.locator("[data-role=orders-confirmed] .tile-value").inner_text()) >= 1
    await screenshot(shop.page, "admin-dashboard-desktop")
    await shop.page.set_viewport_size(PHONE)  # type: ignore[arg-type]
    # The charts redraw at the new width (text keeps its size rather than shrinking with the picture).
    await shop.page.wait_for_function(
        "() => [...document.querySelectorAll('svg.chart')].every(s => +s.getAttribute('width') <= 390)"
    )
    await screenshot(shop.page, "admin-dashboard-phone")
    assert await shop.page.evaluate(OVERFLOW) <= 0


async def test_a_product_name_with_script_renders_as_text(shop: Shop, prost_server: Server) -> None:
    tag = uuid.uuid4().hex[:8]
    name = f"{HOSTILE_NAME} {tag}"
    product = await prost_server.create_product(name=name, description=HOSTILE_DESCRIPTION)
    page = shop.page
    await shop.open("#/")
    await shop.search(tag)
    main = page.locator("main")
    card = main.locator(f'.product-card[data-product-id="{product["id"]}"]')
    await expect(card.locator(".product-name")).to_have_text(name)
    await expect(card.locator(".description")).to_have_text(HOSTILE_DESCRIPTION)
    assert await main.locator("script, img, iframe, b").count() == 0
    await screenshot(page, "hostile-name-desktop")

    await card.get_by_role("link", name=name).click()
    await expect(main.locator(".page-title")).to_have_text(name)
    assert await main.locator("script, img, iframe, b").count() == 0
    assert await page.evaluate("() => window.__pwned") is None
    # Defence in depth: the page's CSP refuses HTML string sinks outright (Trusted Types).
    refused = await page.evaluate(
        "() => { try { document.createElement('div').innerHTML = '<b>x</b>'; return 'allowed'; }"
        " catch (e) { return e.name; } }"
    )
    assert refused == "TypeError"
