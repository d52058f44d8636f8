"""Helpers of the cart suite: products made by the admin, shoppers, reading carts and
stock over the public API, and swapping where the cart finds a peer service."""

from __future__ import annotations

import contextlib
import socket
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx

from prost.kit.clients import ServiceClients

from helpers import admin_token, bearer, register

Headers = dict[str, str]


async def make_product(
    client: httpx.AsyncClient, *, stock: int, price: str = "19.99", name: str = "Widget"
) -> dict[str, Any]:
    token = await admin_token(client)
    tag = uuid.uuid4().hex[:10]
    r = await client.post(
        "/api/v1/products",
        headers=bearer(token),
        json={"sku": f"SKU-{tag}", "name": f"{name} {tag}", "price": price, "stock": stock},
    )
    assert r.status_code == 201, r.text
    product: dict[str, Any] = r.json()
    return product


async def admin(client: httpx.AsyncClient, method: str, path: str, **kw: Any) -> httpx.Response:
    return await client.request(method, path, headers=bearer(await admin_token(client)), **kw)


async def shopper(client: httpx.AsyncClient) -> tuple[dict[str, Any], Headers]:
    user, token = await register(client)
    return user, bearer(token)


async def get_cart(client: httpx.AsyncClient, headers: Headers) -> dict[str, Any]:
    r = await client.get("/api/v1/cart", headers=headers)
    assert r.status_code == 200, r.text
    cart: dict[str, Any] = r.json()
    return cart


async def available(client: httpx.AsyncClient, product_id: str) -> int:
    r = await admin(client, "GET", f"/api/v1/products/{product_id}")
    assert r.status_code == 200, r.text
    return int(r.json()["available"])


async def stock(client: httpx.AsyncClient, product_id: str) -> int:
    r = await admin(client, "GET", f"/api/v1/products/{product_id}")
    assert r.status_code == 200, r.text
    return int(r.json()["stock"])


def lines(cart: dict[str, Any]) -> dict[str, int]:
    return {item["product_id"]: item["quantity"] for item in cart["items"]}


def money(value: str) -> Decimal:
    assert isinstance(value, str), value
    assert value == f"{Decimal(value):.2f}", value
    return Decimal(value)


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@contextlib.asynccontextmanager
async def peer_unreachable(system: Any, service: str, peer: str) -> AsyncIterator[None]:
    """Make `service` find `peer` at a closed port for a while (as if it were down)."""
    ctx = system.host.contexts[service]
    original = ctx.clients
    urls = {**system.host.urls, peer: f"http://127.0.0.1:{closed_port()}"}
    ctx.clients = ServiceClients(caller=service, urls=urls, auth=ctx.auth, timeout=2.0)
    try:
        yield
    finally:
        broken, ctx.clients = ctx.clients, original
        await broken.close()
