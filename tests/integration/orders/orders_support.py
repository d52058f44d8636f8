"""Helpers of the orders tests: products and orders over the public API, waiting for
a final status, and counting what the database holds."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from helpers import ADMIN_EMAIL, ADMIN_PASSWORD, GOOD_CARD, admin_token, bearer, eventually, fresh_database

FINAL = ("confirmed", "rejected", "cancelled")

DECLINED = {**GOOD_CARD, "card_number": "4000000000000002"}
INSUFFICIENT = {**GOOD_CARD, "card_number": "4000000000009995"}
FLAKY = {**GOOD_CARD, "card_number": "4000000000000119"}
SILENT = {**GOOD_CARD, "card_number": "4000000000000341"}


def tag() -> str:
    return uuid.uuid4().hex[:10]


async def make_product(
    client: httpx.AsyncClient, *, stock: int = 10, price: str = "19.99", admin: str | None = None
) -> dict[str, Any]:
    token = admin or await admin_token(client)
    t = tag()
    r = await client.post(
        "/api/v1/products",
        json={"sku": f"ORD-{t}", "name": f"Orders test product {t}", "price": price, "stock": stock},
        headers=bearer(token),
    )
    assert r.status_code == 201, r.text
    product: dict[str, Any] = r.json()
    return product


async def product(client: httpx.AsyncClient, product_id: str) -> dict[str, Any]:
    r = await client.get(f"/api/v1/products/{product_id}")
    assert r.status_code == 200, r.text
    found: dict[str, Any] = r.json()
    return found


def order_body(*lines: tuple[str, int], card: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "items": [{"product_id": pid, "quantity": q} for pid, q in lines],
        "payment": dict(card or GOOD_CARD),
        **extra,
    }


async def place(
    client: httpx.AsyncClient,
    token: str,
    *lines: tuple[str, int],
    card: dict[str, Any] | None = None,
    key: str | None = None,
) -> dict[str, Any]:
    headers = bearer(token)
    if key is not None:
        headers["Idempotency-Key"] = key
    r = await client.post("/api/v1/orders", json=order_body(*lines, card=card), headers=headers)
    assert r.status_code == 202, r.text
    order: dict[str, Any] = r.json()
    assert order["status"] == "pending"
    return order


async def get_order(client: httpx.AsyncClient, token: str, order_id: str) -> dict[str, Any]:
    r = await client.get(f"/api/v1/orders/{order_id}", headers=bearer(token))
    assert r.status_code == 200, r.text
    order: dict[str, Any] = r.json()
    return order


async def final(client: httpx.AsyncClient, token: str, order_id: str, *, timeout: float = 20.0) -> dict[str, Any]:
    """The order once it reached confirmed, rejected or cancelled."""

    async def check() -> dict[str, Any] | None:
        order = await get_order(client, token, order_id)
        return order if order["status"] in FINAL else None

    result: dict[str, Any] = await eventually(check, timeout=timeout)
    return result


async def saga(client: httpx.AsyncClient, token: str, order_id: str) -> dict[str, Any]:
    r = await client.get(f"/api/v1/orders/{order_id}/saga", headers=bearer(token))
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def settled_saga(
    client: httpx.AsyncClient, token: str, order_id: str, *, timeout: float = 20.0
) -> dict[str, Any]:
    """The saga once nothing is left to do (completed, compensated or failed)."""

    async def check() -> dict[str, Any] | None:
        body = await saga(client, token, order_id)
        return body if body["status"] in ("completed", "compensated", "failed") else None

    result: dict[str, Any] = await eventually(check, timeout=timeout)
    return result


async def scalar(engine: AsyncEngine, sql: str, **params: Any) -> Any:
    async with engine.connect() as conn:
        return await conn.scalar(sa.text(sql), params)


async def outbox_events(engine: AsyncEngine, schema: str, order_id: str, event_type: str) -> int:
    count = await scalar(
        engine,
        f"SELECT count(*) FROM {schema}.outbox WHERE event_type = :t AND envelope->>'correlation_id' = :o",
        t=event_type,
        o=order_id,
    )
    return int(count)


async def raw_post(base_url: str, path: str, *, headers: list[tuple[bytes, bytes]], body: bytes) -> tuple[int, bytes]:
    """POST with header values an HTTP client library refuses to send (blank, control
    characters): what a hand-made client could put on the wire."""
    import asyncio
    from urllib.parse import urlparse

    url = urlparse(base_url)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    lines = [b"POST " + path.encode() + b" HTTP/1.1", b"Host: " + url.netloc.encode(), b"Connection: close"]
    lines += [b"Content-Type: application/json", b"Content-Length: " + str(len(body)).encode()]
    lines += [name + b": " + value for name, value in headers]
    writer.write(b"\r\n".join(lines) + b"\r\n\r\n" + body)
    await writer.drain()
    response = await reader.read()
    writer.close()
    status = int(response.split(b" ", 2)[1])
    return status, response.split(b"\r\n\r\n", 1)[-1]


async def stock_becomes(
    client: httpx.AsyncClient, product_id: str, *, stock: int, available: int, timeout: float = 20.0
) -> None:
    """The catalog applies commits and releases after the order's status changed:
    wait until the product shows `stock` on hand and `available`."""

    async def check() -> bool:
        found = await product(client, product_id)
        return bool((found["stock"], found["available"]) == (stock, available))

    try:
        await eventually(check, timeout=timeout)
    except AssertionError:
        found = await product(client, product_id)
        raise AssertionError(
            f"expected stock {stock} / available {available}, got {found['stock']} / {found['available']}"
        ) from None


async def compensations_become(
    client: httpx.AsyncClient, token: str, order_id: str, expected: dict[str, str], *, timeout: float = 20.0
) -> dict[str, Any]:
    """The saga view once its compensations are exactly `expected` ({action: status}):
    a late payment reopens a compensated saga with a refund, so "settled" is not enough."""

    async def check() -> dict[str, Any] | None:
        view = await saga(client, token, order_id)
        done = {c["action"]: c["status"] for c in view["compensations"]} == expected
        return view if done and view["status"] == "compensated" else None

    result: dict[str, Any] = await eventually(check, timeout=timeout)
    return result


@contextlib.asynccontextmanager
async def system_of_its_own(
    server_url: str, settings_factory: Callable[..., Any], **overrides: Any
) -> AsyncIterator[Any]:
    """A whole embedded system with the admin account, on a database of its own, with
    these settings (a test's own timeouts and latencies)."""
    from prost.runtime.embedded import System

    async with fresh_database(server_url) as url:
        settings = settings_factory(
            database_url=url, admin_email=ADMIN_EMAIL, admin_password=ADMIN_PASSWORD, **overrides
        )
        async with System(settings) as running:
            yield running
