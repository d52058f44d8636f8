"""Helpers for tests: polling, accounts and tokens over the public API."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import httpx

ADMIN_EMAIL = "admin@prost.test"
ADMIN_PASSWORD = "admin-password-1"
GOOD_CARD = {"card_number": "4242424242424242", "exp_month": 12, "exp_year": 2035, "cvc": "123"}


async def eventually(check: Callable[[], Any], *, timeout: float = 15.0, interval: float = 0.05) -> Any:
    """Poll an async or sync predicate until it returns a truthy value (or fail)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


async def register(client: httpx.AsyncClient, *, password: str = "password-123") -> tuple[dict[str, Any], str]:
    """A new customer: returns (user, token)."""
    tag = uuid.uuid4().hex[:10]
    email = f"user-{tag}@prost.test"
    r = await client.post("/api/v1/users/register", json={"email": email, "username": f"user_{tag}", "password": password})
    assert r.status_code == 201, r.text
    r = await client.post("/api/v1/users/login", json={"email": email, "password": password})
    assert r.status_code == 200, r.text
    body = r.json()
    return body["user"], body["token"]


async def admin_token(client: httpx.AsyncClient) -> str:
    r = await client.post("/api/v1/users/login", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
    assert r.status_code == 200, r.text
    token: str = r.json()["token"]
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
