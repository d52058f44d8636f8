"""Every Catalog row of API.md through the running system: categories, products,
admin-only writes, validation errors, the listing (search, filters, sort, pages),
deactivation, and the events written with each change."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from catalog_support import admin_headers, outbox_events, service_headers, tag
from sqlalchemy.ext.asyncio import AsyncEngine

from helpers import bearer, eventually, register

PRODUCT_FIELDS = {
    "id",
    "sku",
    "name",
    "description",
    "price",
    "currency",
    "category_id",
    "stock",
    "available",
    "active",
    "created_at",
    "updated_at",
}


async def create_category(client: httpx.AsyncClient, headers: dict[str, str]) -> dict[str, Any]:
    t = tag()
    r = await client.post("/api/v1/categories", json={"name": f"Category {t}", "slug": f"cat-{t}"}, headers=headers)
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


async def create_product(client: httpx.AsyncClient, headers: dict[str, str], **fields: Any) -> dict[str, Any]:
    body = {"sku": f"SKU-{tag()}", "name": f"Product {tag()}", "price": "10.00", "stock": 5, **fields}
    r = await client.post("/api/v1/products", json=body, headers=headers)
    assert r.status_code == 201, r.text
    product: dict[str, Any] = r.json()
    return product


async def customer_headers(client: httpx.AsyncClient) -> dict[str, str]:
    _, token = await register(client)
    return bearer(token)


# -- categories ----------------------------------------------------------------------


async def test_an_admin_creates_a_category_and_everyone_sees_it_in_the_list(client: httpx.AsyncClient) -> None:
    admin = await admin_headers(client)
    t = tag()
    r = await client.post("/api/v1/categories", json={"name": f"Garden {t}", "slug": f"garden-{t}"}, headers=admin)
    assert r.status_code == 201
    created = r.json()
    assert set(created) == {"id", "name", "slug", "created_at", "updated_at"}
    assert (created["name"], created["slug"]) == (f"Garden {t}", f"garden-{t}")
    listed = (await client.get("/api/v1/categories")).json()
    assert created in listed
    names = [c["name"] for c in listed]
    assert names == sorted(names)


async def test_a_taken_slug_is_409(client: httpx.AsyncClient) -> None:
    admin = await admin_headers(client)
    first = await create_category(client, admin)
    r = await client.post("/api/v1/categories", json={"name": "Other", "slug": first["slug"]}, headers=admin)
    assert r.status_code == 409
    assert r.json()["error"] == "conflict"


@pytest.mark.parametrize(
    "body",
    [
        {"name": "Tools", "slug": "Bad Slug"},
        {"name": "Tools", "slug": "bad--slug"},
        {"name": "Tools", "slug": "-bad"},
        {"name": "Tools", "slug": ""},
        {"name": "", "slug": "fine"},
        {"name": "   ", "slug": "fine"},
        {"name": "Tools"},
        {"slug": "fine"},
        {"name": "Tools", "slug": "fine", "id": "x"},
        {"name": 5, "slug": "fine"},
    ],
)
async def test_a_bad_category_body_is_422(client: httpx.AsyncClient, body: dict[str, Any]) -> None:
    r = await client.post("/api/v1/categories", json=body, headers=await admin_headers(client))
    assert r.status_code == 422
    assert r.json()["error"] == "validation_error"


async def test_only_admins_create_categories(client: httpx.AsyncClient) -> None:
    body = {"name": "Nope", "slug": f"nope-{tag()}"}
    anonymous = await client.post("/api/v1/categories", json=body)
    assert (anonymous.status_code, anonymous.json()["error"]) == (401, "unauthorized")
    customer = await client.post("/api/v1/categories", json=body, headers=await customer_headers(client))
    assert (customer.status_code, customer.json()["error"]) == (403, "forbidden")
    assert body["slug"] not in (await client.get("/api/v1/categories")).text


# -- create and read -----------------------------------------------------------------


async def test_an_admin_creates_a_product_with_the_contract_shape(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    admin = await admin_headers(client)
    category = await create_category(client, admin)
    sku = f"HAM-{tag()}"
    body = {
        "sku": sku,
        "name": "Claw hammer",
        "description": "Forged steel head",
        "price": "19.99",
        "currency": "USD",
        "category_id": category["id"],
        "stock": 7,
    }
    r = await client.post("/api/v1/products", json=body, headers=admin)
    assert r.status_code == 201
    product = r.json()
    assert set(product) == PRODUCT_FIELDS
    assert {k: product[k] for k in body} == body
    assert (product["available"], product["active"]) == (7, True)
    assert (await client.get(f"/api/v1/products/{product['id']}")).json() == product
    [event] = await outbox_events(engine, "product.created", product_id=product["id"])
    assert (event["sku"], event["price"], event["stock"], event["active"]) == (sku, "19.99", 7, True)

    async def delivered() -> bool:
        async with engine.connect() as conn:
            sent = await conn.scalar(
                sa.text(
                    "SELECT sent_at FROM catalog.outbox WHERE event_type = 'product.created' "
                    "AND envelope->'payload'->>'product_id' = :p"
                ),
                {"p": product["id"]},
            )
        return sent is not None

    await eventually(delivered)  # no service consumes it: an announcement, so it never sticks in the outbox


async def test_optional_fields_take_their_defaults_and_a_number_price_is_read_as_a_decimal(
    client: httpx.AsyncClient,
) -> None:
    product = await create_product(client, await admin_headers(client), price=12.5)
    assert (product["price"], product["currency"], product["description"], product["category_id"]) == (
        "12.50",
        "USD",
        "",
        None,
    )


async def test_a_taken_sku_is_409_whatever_its_case(client: httpx.AsyncClient) -> None:
    admin = await admin_headers(client)
    first = await create_product(client, admin, sku=f"dup-{tag()}")
    r = await client.post(
        "/api/v1/products", json={"sku": first["sku"].upper(), "name": "x", "price": "1.00", "stock": 1}, headers=admin
    )
    assert r.status_code == 409
    assert r.json()["error"] == "conflict"


@pytest.mark.parametrize(
    "change",
    [
        {"price": "19.999"},
        {"price": "-1.00"},
        {"price": -1},
        {"price": "abc"},
        {"price": "NaN"},
        {"price": "Infinity"},
        {"price": "-Infinity"},
        {"price": True},
        {"price": None},
        {"price": "10000000000.00"},
        {"stock": -1},
        {"stock": "5"},
        {"stock": 1.5},
        {"stock": True},
        {"stock": 10**12},
        {"sku": ""},
        {"sku": "has space"},
        {"name": ""},
        {"name": "x" * 201},
        {"currency": "EUR"},
        {"category_id": "not-a-uuid"},
        {"available": 3},
    ],
)
async def test_a_bad_product_body_is_422(client: httpx.AsyncClient, change: dict[str, Any]) -> None:
    body = {"sku": f"V-{tag()}", "name": "Valid", "price": "1.00", "stock": 1, **change}
    r = await client.post("/api/v1/products", json=body, headers=await admin_headers(client))
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "validation_error"


@pytest.mark.parametrize("missing", ["sku", "name", "price", "stock"])
async def test_a_product_body_without_a_required_field_is_422(client: httpx.AsyncClient, missing: str) -> None:
    body = {"sku": f"V-{tag()}", "name": "Valid", "price": "1.00", "stock": 1}
    del body[missing]
    r = await client.post("/api/v1/products", json=body, headers=await admin_headers(client))
    assert r.status_code == 422


async def test_a_product_in_an_unknown_category_is_422(client: httpx.AsyncClient) -> None:
    body = {"sku": f"V-{tag()}", "name": "Valid", "price": "1.00", "stock": 1, "category_id": str(uuid.uuid4())}
    r = await client.post("/api/v1/products", json=body, headers=await admin_headers(client))
    assert r.status_code == 422
    assert "category" in r.json()["message"]


async def test_only_admins_write_products(client: httpx.AsyncClient) -> None:
    admin = await admin_headers(client)
    product = await create_product(client, admin)
    pid = product["id"]
    customer = await customer_headers(client)
    writes = [
        ("POST", "/api/v1/products", {"sku": f"N-{tag()}", "name": "n", "price": "1.00", "stock": 1}),
        ("PATCH", f"/api/v1/products/{pid}", {"name": "stolen"}),
        ("PUT", f"/api/v1/products/{pid}/stock", {"stock": 0}),
        ("DELETE", f"/api/v1/products/{pid}", None),
    ]
    for method, path, body in writes:
        anonymous = await client.request(method, path, json=body)
        assert (anonymous.status_code, anonymous.json()["error"]) == (401, "unauthorized"), (method, path)
        bad_token = await client.request(method, path, json=body, headers=bearer("not.a.token"))
        assert bad_token.status_code == 401
        refused = await client.request(method, path, json=body, headers=customer)
        assert (refused.status_code, refused.json()["error"]) == (403, "forbidden"), (method, path)
    assert (await client.get(f"/api/v1/products/{pid}")).json() == product


async def test_an_unknown_product_is_404_and_a_malformed_id_422(client: httpx.AsyncClient) -> None:
    admin = await admin_headers(client)
    missing = f"/api/v1/products/{uuid.uuid4()}"
    for method, path, body in [
        ("GET", missing, None),
        ("PATCH", missing, {"name": "x"}),
        ("PUT", missing + "/stock", {"stock": 1}),
        ("DELETE", missing, None),
    ]:
        r = await client.request(method, path, json=body, headers=admin)
        assert r.status_code == 404, (method, r.text)
        assert r.json() == {"error": "not_found", "message": "no such product", "code": 404}
    assert (await client.get("/api/v1/products/not-a-uuid")).status_code == 422


# -- change --------------------------------------------------------------------------


async def test_an_admin_patches_some_fields_and_the_rest_stay(client: httpx.AsyncClient, engine: AsyncEngine) -> None:
    admin = await admin_headers(client)
    category = await create_category(client, admin)
    product = await create_product(client, admin, description="old")
    r = await client.patch(
        f"/api/v1/products/{product['id']}",
        json={"name": "  New name ", "price": "25.50", "category_id": category["id"]},
        headers=admin,
    )
    assert r.status_code == 200
    changed = r.json()
    assert (changed["name"], changed["price"], changed["category_id"]) == ("New name", "25.50", category["id"])
    assert (changed["sku"], changed["description"], changed["stock"]) == (product["sku"], "old", product["stock"])
    assert changed["updated_at"] > product["updated_at"]
    cleared = (
        await client.patch(
            f"/api/v1/products/{product['id']}", json={"category_id": None, "description": None}, headers=admin
        )
    ).json()
    assert (cleared["category_id"], cleared["description"]) == (None, "")
    events = await outbox_events(engine, "product.updated", product_id=product["id"])
    assert [e["price"] for e in events] == ["25.50", "25.50"]


@pytest.mark.parametrize(
    "body",
    [
        {"sku": "NEW"},
        {"stock": 3},
        {"name": None},
        {"price": None},
        {"active": None},
        {"price": "1.001"},
        {"active": "yes"},
        {"name": ""},
    ],
)
async def test_a_bad_patch_is_422_and_changes_nothing(client: httpx.AsyncClient, body: dict[str, Any]) -> None:
    admin = await admin_headers(client)
    product = await create_product(client, admin)
    r = await client.patch(f"/api/v1/products/{product['id']}", json=body, headers=admin)
    assert r.status_code == 422
    assert (await client.get(f"/api/v1/products/{product['id']}")).json() == product


async def test_a_patch_to_an_unknown_category_is_422(client: httpx.AsyncClient) -> None:
    admin = await admin_headers(client)
    product = await create_product(client, admin)
    r = await client.patch(f"/api/v1/products/{product['id']}", json={"category_id": str(uuid.uuid4())}, headers=admin)
    assert r.status_code == 422


async def test_an_admin_sets_the_stock(client: httpx.AsyncClient, engine: AsyncEngine) -> None:
    admin = await admin_headers(client)
    product = await create_product(client, admin, stock=5)
    r = await client.put(f"/api/v1/products/{product['id']}/stock", json={"stock": 42}, headers=admin)
    assert r.status_code == 200
    assert (r.json()["stock"], r.json()["available"]) == (42, 42)
    assert [e["stock"] for e in await outbox_events(engine, "product.updated", product_id=product["id"])] == [42]


@pytest.mark.parametrize("body", [{"stock": -1}, {"stock": "3"}, {"stock": None}, {}, {"stock": 3, "reserved": 1}])
async def test_a_bad_stock_body_is_422(client: httpx.AsyncClient, body: dict[str, Any]) -> None:
    admin = await admin_headers(client)
    product = await create_product(client, admin)
    r = await client.put(f"/api/v1/products/{product['id']}/stock", json=body, headers=admin)
    assert r.status_code == 422


async def test_stock_cannot_be_set_below_the_units_held(client: httpx.AsyncClient, system: Any) -> None:
    admin = await admin_headers(client)
    product = await create_product(client, admin, stock=10)
    r = await client.put(
        f"/internal/catalog/holds/{uuid.uuid4()}/{product['id']}", json={"quantity": 6}, headers=service_headers(system)
    )
    assert r.status_code == 200
    refused = await client.put(f"/api/v1/products/{product['id']}/stock", json={"stock": 5}, headers=admin)
    assert refused.status_code == 409
    assert refused.json()["error"] == "conflict"
    assert "6" in refused.json()["message"]
    accepted = await client.put(f"/api/v1/products/{product['id']}/stock", json={"stock": 6}, headers=admin)
    assert (accepted.status_code, accepted.json()["available"]) == (200, 0)


# -- deactivate ----------------------------------------------------------------------


async def test_a_deactivated_product_is_hidden_and_cannot_be_held(
    client: httpx.AsyncClient, system: Any, engine: AsyncEngine
) -> None:
    admin = await admin_headers(client)
    category = await create_category(client, admin)
    product = await create_product(client, admin, category_id=category["id"])
    path = f"/api/v1/products/{product['id']}"
    r = await client.delete(path, headers=admin)
    assert (r.status_code, r.content) == (204, b"")
    assert (await client.get("/api/v1/products", params={"category_id": category["id"]})).json()["total"] == 0
    assert (await client.get(path)).status_code == 404
    assert (await client.get(path, headers=await customer_headers(client))).status_code == 404
    seen_by_admin = await client.get(path, headers=admin)
    assert (seen_by_admin.status_code, seen_by_admin.json()["active"]) == (200, False)
    hold = await client.put(
        f"/internal/catalog/holds/{uuid.uuid4()}/{product['id']}", json={"quantity": 1}, headers=service_headers(system)
    )
    assert hold.status_code == 404
    again = await client.delete(path, headers=admin)
    assert again.status_code == 204
    events = await outbox_events(engine, "product.updated", product_id=product["id"])
    assert [e["active"] for e in events] == [False]
    revived = await client.patch(path, json={"active": True}, headers=admin)
    assert revived.json()["active"] is True
    assert (await client.get(path)).status_code == 200


# -- listing -------------------------------------------------------------------------


async def seeded(client: httpx.AsyncClient) -> tuple[str, dict[str, dict[str, Any]]]:
    """A fresh category with four products whose names, prices and texts differ."""
    admin = await admin_headers(client)
    category = await create_category(client, admin)
    cid = category["id"]
    t = tag()
    specs = {
        "apple": {"name": "Apple peeler", "price": "4.50", "description": "Stainless blade", "sku": f"KIT-{t}-1"},
        "bread": {"name": "Bread knife", "price": "24.00", "description": "Serrated edge", "sku": f"KIT-{t}-2"},
        "cheese": {
            "name": "Cheese grater",
            "price": "12.00",
            "description": "Box grater, STAINLESS",
            "sku": f"KIT-{t}-3",
        },
        "dough": {"name": "Dough scraper", "price": "3.25", "description": "Flexible", "sku": f"BAK-{t}-4"},
    }
    made = {}
    for key, spec in specs.items():
        made[key] = await create_product(client, admin, category_id=cid, stock=3, **spec)
    return cid, made


async def names(client: httpx.AsyncClient, **params: Any) -> list[str]:
    r = await client.get("/api/v1/products", params=params)
    assert r.status_code == 200, r.text
    return [p["name"] for p in r.json()["items"]]


async def test_the_list_sorts_by_name_price_and_creation_both_ways(client: httpx.AsyncClient) -> None:
    cid, _ = await seeded(client)
    by_name = ["Apple peeler", "Bread knife", "Cheese grater", "Dough scraper"]
    assert await names(client, category_id=cid) == by_name
    assert await names(client, category_id=cid, sort="name") == by_name
    assert await names(client, category_id=cid, sort="-name") == by_name[::-1]
    assert await names(client, category_id=cid, sort="price") == [
        "Dough scraper",
        "Apple peeler",
        "Cheese grater",
        "Bread knife",
    ]
    assert await names(client, category_id=cid, sort="-price") == [
        "Bread knife",
        "Cheese grater",
        "Apple peeler",
        "Dough scraper",
    ]
    assert await names(client, category_id=cid, sort="created_at") == by_name
    assert await names(client, category_id=cid, sort="-created_at") == by_name[::-1]


async def test_q_finds_a_substring_of_name_description_or_sku_in_any_case(client: httpx.AsyncClient) -> None:
    cid, made = await seeded(client)
    assert await names(client, category_id=cid, q="KNIFE") == ["Bread knife"]
    assert await names(client, category_id=cid, q="stainless") == ["Apple peeler", "Cheese grater"]
    assert await names(client, category_id=cid, q=made["dough"]["sku"].lower()) == ["Dough scraper"]
    assert await names(client, category_id=cid, q="kit-") == ["Apple peeler", "Bread knife", "Cheese grater"]
    assert await names(client, category_id=cid, q="gh") == ["Dough scraper"]
    assert await names(client, category_id=cid, q="x") == ["Cheese grater", "Dough scraper"]
    assert await names(client, category_id=cid, q="  peeler  ") == ["Apple peeler"]
    assert await names(client, category_id=cid, q="peeler knife") == []
    assert await names(client, category_id=cid, q="nothing like it") == []


async def test_short_and_spanning_searches_match_only_real_substrings(client: httpx.AsyncClient) -> None:
    cid, _ = await seeded(client)
    # "ex" is only in "Flexible"; "h s" only spans the two words of "Dough scraper".
    assert await names(client, category_id=cid, q="ex") == ["Dough scraper"]
    assert await names(client, category_id=cid, q="h s") == ["Dough scraper"]
    # Grams of the name and the description together do not make a match across them.
    assert await names(client, category_id=cid, q="peelerstainless") == []


async def test_price_bounds_are_inclusive(client: httpx.AsyncClient) -> None:
    cid, _ = await seeded(client)
    assert await names(client, category_id=cid, min_price="4.50", max_price="12") == ["Apple peeler", "Cheese grater"]
    assert await names(client, category_id=cid, min_price="20") == ["Bread knife"]
    assert await names(client, category_id=cid, max_price="3.25") == ["Dough scraper"]


async def test_pages_carry_the_total(client: httpx.AsyncClient) -> None:
    cid, _ = await seeded(client)
    first = (await client.get("/api/v1/products", params={"category_id": cid, "page_size": 3})).json()
    assert (first["total"], first["page"], first["page_size"], len(first["items"])) == (4, 1, 3, 3)
    second = (await client.get("/api/v1/products", params={"category_id": cid, "page_size": 3, "page": 2})).json()
    assert (second["total"], second["page"], [p["name"] for p in second["items"]]) == (4, 2, ["Dough scraper"])
    beyond = (await client.get("/api/v1/products", params={"category_id": cid, "page_size": 3, "page": 9})).json()
    assert (beyond["total"], beyond["items"]) == (4, [])
    default = (await client.get("/api/v1/products", params={"category_id": cid})).json()
    assert (default["page"], default["page_size"]) == (1, 20)


@pytest.mark.parametrize(
    "params",
    [
        {"page_size": 101},
        {"page_size": 0},
        {"page": 0},
        {"page": "x"},
        {"sort": "stock"},
        {"sort": "-id"},
        {"min_price": "abc"},
        {"max_price": "-1"},
        {"min_price": "1.001"},
        {"min_price": "NaN"},
        {"min_price": "10", "max_price": "5"},
        {"category_id": "nope"},
        {"q": "x" * 101},
    ],
)
async def test_bad_list_parameters_are_422(client: httpx.AsyncClient, params: dict[str, Any]) -> None:
    r = await client.get("/api/v1/products", params=params)
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "validation_error"


async def test_the_list_shows_available_after_holds(client: httpx.AsyncClient, system: Any) -> None:
    cid, made = await seeded(client)
    r = await client.put(
        f"/internal/catalog/holds/{uuid.uuid4()}/{made['bread']['id']}",
        json={"quantity": 2},
        headers=service_headers(system),
    )
    assert r.status_code == 200
    items = {p["name"]: p for p in (await client.get("/api/v1/products", params={"category_id": cid})).json()["items"]}
    assert (items["Bread knife"]["stock"], items["Bread knife"]["available"]) == (3, 1)
    assert items["Apple peeler"]["available"] == 3


async def test_the_kept_counts_follow_every_change_of_a_product(client: httpx.AsyncClient, engine: AsyncEngine) -> None:
    admin = await admin_headers(client)
    first, second = await create_category(client, admin), await create_category(client, admin)

    async def totals() -> tuple[int, int]:
        one = (await client.get("/api/v1/products", params={"category_id": first["id"]})).json()["total"]
        two = (await client.get("/api/v1/products", params={"category_id": second["id"]})).json()["total"]
        return one, two

    a = await create_product(client, admin, category_id=first["id"])
    b = await create_product(client, admin, category_id=first["id"])
    assert await totals() == (2, 0)
    await client.patch(f"/api/v1/products/{b['id']}", json={"category_id": second["id"]}, headers=admin)
    assert await totals() == (1, 1)
    await client.delete(f"/api/v1/products/{a['id']}", headers=admin)
    await client.delete(f"/api/v1/products/{a['id']}", headers=admin)
    assert await totals() == (0, 1)
    await client.patch(f"/api/v1/products/{a['id']}", json={"active": True, "category_id": second["id"]}, headers=admin)
    await client.put(f"/api/v1/products/{a['id']}/stock", json={"stock": 9}, headers=admin)
    assert await totals() == (0, 2)
    await client.patch(f"/api/v1/products/{b['id']}", json={"category_id": None}, headers=admin)
    assert await totals() == (0, 1)
    async with engine.connect() as conn:
        drift = (
            await conn.execute(
                sa.text(
                    """
                    SELECT coalesce(c.category_key, p.key) AS key, c.active_products, p.n
                    FROM catalog.product_counts c
                    FULL JOIN (SELECT coalesce(category_id, '00000000-0000-0000-0000-000000000000') AS key, count(*) AS n
                               FROM catalog.products WHERE active GROUP BY 1) p ON p.key = c.category_key
                    WHERE coalesce(c.active_products, 0) <> coalesce(p.n, 0)
                    """
                )
            )
        ).all()
    assert drift == []
    everything = (await client.get("/api/v1/products", params={"page_size": 1})).json()["total"]
    async with engine.connect() as conn:
        assert everything == await conn.scalar(sa.text("SELECT count(*) FROM catalog.products WHERE active"))
