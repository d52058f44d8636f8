"""The distributed gateway (the aiohttp proxy) in front of a real running system."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from prost.gateway.proxy import create_gateway_app
from prost.kit.auth import TokenAuthority, TokenRevocations
from prost.kit.settings import SERVICES, Settings
from prost.runtime.openapi import public_openapi

from helpers import GOOD_CARD, admin_token, bearer, register, served


def make_gateway(settings: Settings, urls: dict[str, str]) -> Any:
    assert settings.jwt_secret is not None
    auth = TokenAuthority(secret=settings.jwt_secret.get_secret_value(), revocations=TokenRevocations())
    return create_gateway_app(settings=settings, auth=auth, urls=urls, openapi_schema=public_openapi())


@pytest.fixture
async def gateway(system: Any) -> AsyncIterator[httpx.AsyncClient]:
    app = make_gateway(system.settings, dict.fromkeys(SERVICES, system.url))
    async with served(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
        yield client


async def test_gateway_forwards_register_login_and_profile(gateway: httpx.AsyncClient) -> None:
    user, token = await register(gateway)
    r = await gateway.get(f"/api/v1/users/profile/{user['id']}", headers=bearer(token))
    assert r.status_code == 200
    assert r.json()["email"] == user["email"]


async def test_request_id_is_echoed_through_the_gateway(gateway: httpx.AsyncClient) -> None:
    r = await gateway.get("/api/v1/products", headers={"X-Request-ID": "trace-me-123"})
    assert r.headers["x-request-id"] == "trace-me-123"
    r = await gateway.get("/api/v1/products")
    assert len(r.headers["x-request-id"]) >= 16


async def test_protected_route_without_token_is_refused_at_the_gateway(gateway: httpx.AsyncClient) -> None:
    r = await gateway.get("/api/v1/cart")
    assert r.status_code == 401
    assert r.json() == {"error": "unauthorized", "message": "missing bearer token", "code": 401}
    r = await gateway.get("/api/v1/orders", headers={"Authorization": "Bearer not-a-jwt"})
    assert r.status_code == 401
    assert r.json()["error"] == "unauthorized"


async def test_internal_and_unknown_paths_are_not_routed(gateway: httpx.AsyncClient) -> None:
    for path in ("/internal/catalog/quote", "/api/v1/nothing-here", "/api/v2/products"):
        r = await gateway.post(path, json={})
        assert r.status_code == 404, path
        assert r.json()["error"] == "not_found"


async def test_body_over_one_mebibyte_is_refused(gateway: httpx.AsyncClient) -> None:
    r = await gateway.post(
        "/api/v1/users/register",
        content=b"{" + b" " * (1024 * 1024 + 10) + b"}",
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 413
    assert r.json()["error"] == "payload_too_large"


async def test_ready_reports_each_downstream_service(gateway: httpx.AsyncClient) -> None:
    r = await gateway.get("/ready")
    assert r.status_code == 200
    assert set(r.json()["checks"]) == set(SERVICES)


async def test_openapi_describes_the_whole_public_api(gateway: httpx.AsyncClient) -> None:
    paths = (await gateway.get("/openapi.json")).json()["paths"]
    for path in (
        "/api/v1/users/register",
        "/api/v1/users/login",
        "/api/v1/users/profile/{user_id}",
        "/api/v1/categories",
        "/api/v1/products",
        "/api/v1/products/{product_id}",
        "/api/v1/products/{product_id}/stock",
        "/api/v1/cart",
        "/api/v1/cart/items",
        "/api/v1/cart/items/{product_id}",
        "/api/v1/cart/checkout",
        "/api/v1/orders",
        "/api/v1/orders/{order_id}",
        "/api/v1/orders/{order_id}/cancel",
        "/api/v1/orders/{order_id}/saga",
    ):
        assert path in paths, path
    assert not [p for p in paths if p.startswith("/internal")]
    assert (await gateway.get("/docs")).status_code == 200


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


async def test_a_service_that_is_down_gives_503_quickly(settings_factory: Callable[..., Settings], system: Any) -> None:
    urls = dict.fromkeys(SERVICES, system.url) | {"orders": f"http://127.0.0.1:{_closed_port()}"}
    _, token = await register(httpx.AsyncClient(base_url=system.url))
    async with (
        served(make_gateway(system.settings, urls)) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as client,
    ):
        r = await client.get("/api/v1/orders", headers=bearer(token))
        assert r.status_code == 503
        assert r.json()["error"] == "unavailable"
        ready = await client.get("/ready")
        assert ready.status_code == 503
        assert ready.json()["checks"]["orders"] == "down"


async def test_a_service_that_hangs_gives_504(settings_factory: Callable[..., Settings], system: Any) -> None:
    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(30)
        writer.close()

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    settings = system.settings.model_copy(update={"gateway_timeout_seconds": 0.5})
    urls = dict.fromkeys(SERVICES, system.url) | {"catalog": f"http://127.0.0.1:{port}"}
    try:
        async with served(make_gateway(settings, urls)) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
            r = await client.get("/api/v1/products")
            assert r.status_code == 504
            assert r.json()["code"] == 504
    finally:
        server.close()


async def test_requests_over_the_rate_limit_get_429_with_retry_after(system: Any) -> None:
    # 1 request/s with a burst of 2: the third request in a row finds the bucket empty
    # (it refills one token per second, far slower than these requests follow each other).
    settings = system.settings.model_copy(update={"rate_limit_per_second": 1.0})
    async with (
        served(make_gateway(settings, dict.fromkeys(SERVICES, system.url))) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):
        statuses = [(await client.get("/api/v1/categories")).status_code for _ in range(3)]
        assert statuses == [200, 200, 429]
        r = await client.get("/api/v1/categories")
        assert r.status_code == 429
        assert r.json()["error"] == "rate_limited"
        assert int(r.headers["retry-after"]) >= 1
        assert (await client.get("/health")).status_code == 200  # probes are never limited


async def test_the_rate_limit_is_per_client_address(system: Any) -> None:
    settings = system.settings.model_copy(update={"rate_limit_per_second": 1.0})
    async with (
        served(make_gateway(settings, dict.fromkeys(SERVICES, system.url))) as url,
        httpx.AsyncClient(base_url=url) as first,
        httpx.AsyncClient(base_url=url, transport=httpx.AsyncHTTPTransport(local_address="127.0.0.2")) as second,
    ):
        assert [(await first.get("/api/v1/categories")).status_code for _ in range(3)] == [200, 200, 429]
        assert (await second.get("/api/v1/categories")).status_code == 200  # another address, its own bucket


async def test_an_idempotency_key_works_through_the_gateway(gateway: httpx.AsyncClient) -> None:
    admin = bearer(await admin_token(gateway))
    sku = f"GW-{uuid.uuid4().hex[:8]}"
    r = await gateway.post(
        "/api/v1/products", headers=admin, json={"sku": sku, "name": "Mug", "price": "4.00", "stock": 5}
    )
    assert r.status_code == 201, r.text
    _, token = await register(gateway)
    body = {"items": [{"product_id": r.json()["id"], "quantity": 1}], "payment": GOOD_CARD}
    key = {**bearer(token), "Idempotency-Key": f"gw-{uuid.uuid4()}"}
    first = await gateway.post("/api/v1/orders", headers=key, json=body)
    assert first.status_code == 202, first.text
    assert "idempotent-replayed" not in first.headers
    again = await gateway.post("/api/v1/orders", headers=key, json=body)
    assert (again.status_code, again.json()) == (202, first.json())
    assert again.headers["idempotent-replayed"] == "true"
    other = await gateway.post(
        "/api/v1/orders", headers=key, json={**body, "items": [{**body["items"][0], "quantity": 2}]}
    )
    assert other.status_code == 422
    assert other.json()["error"] == "idempotency_key_reused"


async def test_cors_allows_configured_origins_only(system: Any) -> None:
    settings = system.settings.model_copy(update={"cors_origins": "https://shop.example"})
    async with (
        served(make_gateway(settings, dict.fromkeys(SERVICES, system.url))) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):
        pre = {
            "Origin": "https://shop.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        }
        r = await client.options("/api/v1/cart/items", headers=pre)
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == "https://shop.example"
        r = await client.options("/api/v1/cart/items", headers=pre | {"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in r.headers


async def test_the_gateway_serves_the_storefront_with_a_strict_policy(gateway: httpx.AsyncClient) -> None:
    r = await gateway.get("/")
    assert r.status_code == 200
    assert "text/html" in r.headers["content-type"]
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert r.headers["x-content-type-options"] == "nosniff"


async def test_an_unknown_users_path_is_a_404_not_a_401(gateway: httpx.AsyncClient) -> None:
    r = await gateway.get("/api/v1/users/nobody-here")
    assert r.status_code == 404
    assert r.json()["error"] == "not_found"
