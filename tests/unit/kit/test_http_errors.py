"""The app factory: one error shape for everything, request ids, health, readiness, metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import APIRouter
from pydantic import BaseModel

from prost.kit import errors
from prost.kit.http import MAX_BODY_BYTES, create_service_app


class Thing(BaseModel):
    name: str
    count: int


def make_app(ready: bool = True) -> httpx.AsyncClient:
    router = APIRouter()

    @router.post("/things")
    async def create(thing: Thing) -> dict[str, object]:
        return {"name": thing.name, "count": thing.count}

    @router.get("/raise/{kind}")
    async def raise_(kind: str) -> None:
        raise {
            "unauthorized": errors.Unauthorized(),
            "forbidden": errors.Forbidden(),
            "not_found": errors.NotFound("no such thing"),
            "conflict": errors.Conflict("name taken"),
            "insufficient_stock": errors.InsufficientStock(),
            "rate_limited": errors.RateLimited(retry_after=7),
            "unavailable": errors.Unavailable(),
        }[kind]

    @router.get("/crash")
    async def crash() -> None:
        raise RuntimeError("secret internals: password=hunter2")

    async def database() -> bool:
        return ready

    app = create_service_app("test", routers=[router], ready_checks={"database": database})
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://test")


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with make_app() as c:
        yield c


def assert_shape(r: httpx.Response, status: int, code: str, *, extra: frozenset[str] = frozenset()) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"] == code
    assert body["code"] == status
    assert isinstance(body["message"], str)
    assert body["message"]
    assert set(body) <= {"error", "message", "code", "details"} | extra


async def test_an_unknown_route_is_404_in_the_contract_shape(client: httpx.AsyncClient) -> None:
    assert_shape(await client.get("/nowhere"), 404, "not_found")


async def test_a_wrong_method_is_405_in_the_contract_shape(client: httpx.AsyncClient) -> None:
    assert_shape(await client.delete("/things"), 405, "method_not_allowed")


async def test_a_declared_body_over_1_mib_is_413(client: httpx.AsyncClient) -> None:
    r = await client.post("/things", content=b"x" * (MAX_BODY_BYTES + 1), headers={"content-type": "application/json"})
    assert_shape(r, 413, "payload_too_large")


async def test_a_streamed_body_over_1_mib_is_413(client: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(20):
            yield b" " * 65536

    r = await client.post("/things", content=chunks(), headers={"content-type": "application/json"})
    assert_shape(r, 413, "payload_too_large")


async def test_a_body_of_exactly_1_mib_is_read(client: httpx.AsyncClient) -> None:
    body = b'{"name": "a", "count": 1}'
    r = await client.post(
        "/things", content=body + b" " * (MAX_BODY_BYTES - len(body)), headers={"content-type": "application/json"}
    )
    assert r.status_code == 200


async def test_malformed_json_is_422_validation_error(client: httpx.AsyncClient) -> None:
    r = await client.post("/things", content=b'{"name": "a", ', headers={"content-type": "application/json"})
    assert_shape(r, 422, "validation_error")
    assert r.json()["message"] == "malformed JSON body"


async def test_a_wrong_field_is_422_with_details(client: httpx.AsyncClient) -> None:
    r = await client.post("/things", json={"name": "a", "count": "many"})
    assert_shape(r, 422, "validation_error")
    assert r.json()["details"][0]["loc"] == ["body", "count"]
    assert "count" in r.json()["message"]


@pytest.mark.parametrize(
    ("kind", "status"),
    [
        ("unauthorized", 401),
        ("forbidden", 403),
        ("not_found", 404),
        ("conflict", 409),
        ("insufficient_stock", 409),
        ("rate_limited", 429),
        ("unavailable", 503),
    ],
)
async def test_domain_errors_have_their_code_and_status(client: httpx.AsyncClient, kind: str, status: int) -> None:
    assert_shape(await client.get(f"/raise/{kind}"), status, kind)


async def test_rate_limited_carries_retry_after(client: httpx.AsyncClient) -> None:
    r = await client.get("/raise/rate_limited")
    assert r.headers["retry-after"] == "7"


async def test_an_unexpected_error_is_500_without_internals(client: httpx.AsyncClient) -> None:
    r = await client.get("/crash")
    assert_shape(r, 500, "internal_error")
    assert "hunter2" not in r.text
    assert "RuntimeError" not in r.text


async def test_a_sane_request_id_is_echoed(client: httpx.AsyncClient) -> None:
    r = await client.get("/health", headers={"X-Request-ID": "abc-123.def:4"})
    assert r.headers["x-request-id"] == "abc-123.def:4"


async def test_a_request_id_is_generated_when_missing_or_insane(client: httpx.AsyncClient) -> None:
    generated = (await client.get("/health")).headers["x-request-id"]
    assert len(generated) >= 16
    assert generated != (await client.get("/health")).headers["x-request-id"]
    r = await client.get("/health", headers={"X-Request-ID": "bad id\twith<stuff>"})
    assert r.headers["x-request-id"] != "bad id\twith<stuff>"
    assert r.headers["x-request-id"]


async def test_errors_carry_the_request_id_too(client: httpx.AsyncClient) -> None:
    r = await client.get("/nowhere", headers={"X-Request-ID": "trace-404"})
    assert r.headers["x-request-id"] == "trace-404"


async def test_health_is_ok(client: httpx.AsyncClient) -> None:
    r = await client.get("/health")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}


async def test_ready_is_200_when_every_check_passes(client: httpx.AsyncClient) -> None:
    r = await client.get("/ready")
    assert r.status_code == 200
    assert r.json()["checks"] == {"database": "ok"}


async def test_ready_is_503_when_a_check_fails() -> None:
    async with make_app(ready=False) as client:
        r = await client.get("/ready")
    assert_shape(r, 503, "unavailable", extra=frozenset({"checks"}))
    assert "database" in r.json()["message"]
    assert r.json()["checks"] == {"database": "down"}


async def test_metrics_count_requests_per_route_template(client: httpx.AsyncClient) -> None:
    await client.post("/things", json={"name": "a", "count": 1})
    await client.get("/raise/conflict")
    r = await client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert 'prost_http_requests_total{method="POST",route="/things",service="test",status="200"} 1.0' in text
    assert 'route="/raise/{kind}"' in text
    assert "prost_http_request_duration_seconds_bucket" in text
