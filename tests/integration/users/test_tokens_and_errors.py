"""Over HTTP on the running system: tokens that must be refused, the error shapes of
every kind the users API can give, request ids, health, readiness and metrics."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import httpx
import jwt
import pytest

from helpers import bearer, register


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def assert_error(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"] == code
    assert body["code"] == status
    assert isinstance(body["message"], str)
    assert body["message"]


def forgeries(secret: str, user: dict[str, Any]) -> dict[str, str]:
    now = int(time.time())
    claims = {
        "sub": user["id"],
        "user_id": user["id"],
        "email": user["email"],
        "username": user["username"],
        "role": "customer",
        "ver": 0,
        "iat": now,
        "exp": now + 600,
        "iss": "prost-users-service",
    }
    good = jwt.encode(claims, secret, algorithm="HS256")
    header, payload, signature = good.split(".")
    as_admin = b64(json.dumps({**claims, "role": "admin"}).encode())
    # HS512 with a 64-byte key built from the secret: the point is the header, not the key.
    return {
        "alg none": b64(b'{"alg":"none","typ":"JWT"}') + "." + payload + ".",
        "another key": jwt.encode(claims, "another-key-" + "q" * 40, algorithm="HS256"),
        "expired": jwt.encode({**claims, "iat": now - 7200, "exp": now - 3600}, secret, algorithm="HS256"),
        "wrong issuer": jwt.encode({**claims, "iss": "evil-issuer"}, secret, algorithm="HS256"),
        "HS512 header": jwt.encode(claims, (secret * 2)[:64], algorithm="HS512"),
        "HS512 same secret": b64(b'{"alg":"HS512","typ":"JWT"}') + "." + payload + "." + signature,
        "tampered payload": header + "." + as_admin + "." + signature,
        "garbage": "abc.def.ghi",
    }


@pytest.mark.parametrize(
    "kind",
    [
        "alg none",
        "another key",
        "expired",
        "wrong issuer",
        "HS512 header",
        "HS512 same secret",
        "tampered payload",
        "garbage",
    ],
)
async def test_a_forged_or_expired_token_is_refused_with_401(client: httpx.AsyncClient, system: Any, kind: str) -> None:
    user, _ = await register(client)
    token = forgeries(system.settings.jwt_secret.get_secret_value(), user)[kind]
    r = await client.get(f"/api/v1/users/profile/{user['id']}", headers=bearer(token))
    assert_error(r, 401, "unauthorized")
    r = await client.patch(f"/api/v1/users/profile/{user['id']}", json={"username": "hijacked"}, headers=bearer(token))
    assert_error(r, 401, "unauthorized")


async def test_an_unknown_route_is_404(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/api/v1/no-such-thing"), 404, "not_found")


async def test_a_wrong_method_is_405(client: httpx.AsyncClient) -> None:
    # With a token: the gateway asks for one on every method but the two public POSTs.
    _, token = await register(client)
    assert_error(await client.get("/api/v1/users/register", headers=bearer(token)), 405, "method_not_allowed")
    assert_error(await client.delete("/api/v1/users/login", headers=bearer(token)), 405, "method_not_allowed")


async def test_a_body_over_1_mib_is_413(client: httpx.AsyncClient) -> None:
    body = json.dumps({"email": "a@prost.test", "username": "big", "password": "x" * (1024 * 1024)})
    r = await client.post("/api/v1/users/register", content=body, headers={"content-type": "application/json"})
    assert_error(r, 413, "payload_too_large")


async def test_malformed_json_is_422(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/v1/users/register", content=b'{"email": ', headers={"content-type": "application/json"})
    assert_error(r, 422, "validation_error")


async def test_a_json_body_that_is_not_an_object_is_422(client: httpx.AsyncClient) -> None:
    assert_error(await client.post("/api/v1/users/login", json=["a", "b"]), 422, "validation_error")


async def test_the_request_id_is_echoed_or_generated(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/v1/users/login", json={}, headers={"X-Request-ID": "users-req-1"})
    assert r.headers["x-request-id"] == "users-req-1"
    generated = (await client.get("/health")).headers["x-request-id"]
    assert generated
    assert generated != (await client.get("/health")).headers["x-request-id"]


async def test_health_ready_and_metrics_answer(client: httpx.AsyncClient) -> None:
    assert (await client.get("/health")).json() == {"status": "ok"}
    ready = await client.get("/ready")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "bus": "ok"}
    await client.post("/api/v1/users/login", json={"email": "x@prost.test", "password": "whatever-1"})
    metrics = await client.get("/metrics")
    assert metrics.status_code == 200
    assert 'route="/api/v1/users/login"' in metrics.text
    assert "prost_http_request_duration_seconds_bucket" in metrics.text
