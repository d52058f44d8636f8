"""Failed logins are limited per account and per client address (429 with Retry-After),
in the database so that every replica counts the same, and never for good."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from prost.kit.settings import Settings
from prost.runtime.embedded import System
from prost.users.domain import LoginLimits
from prost.users.repository import LoginAttemptRepository

from helpers import bearer, eventually

MAX_FAILURES = 3
WINDOW_SECONDS = 60
SHORT_WINDOW_SECONDS = 5


@asynccontextmanager
async def limited_system(
    database_url: str, settings_factory: Callable[..., Settings], window: int = WINDOW_SECONDS
) -> AsyncIterator[httpx.AsyncClient]:
    settings = settings_factory(database_url=database_url, login_max_failures=MAX_FAILURES, login_window_seconds=window)
    async with System(settings, services=["users"]) as system, httpx.AsyncClient(base_url=system.url, timeout=30) as c:
        yield c


@pytest.fixture
async def limited(database_url: str, settings_factory: Callable[..., Settings]) -> AsyncIterator[httpx.AsyncClient]:
    async with limited_system(database_url, settings_factory) as c:
        yield c


@pytest.fixture
async def short_window(
    database_url: str, settings_factory: Callable[..., Settings]
) -> AsyncIterator[httpx.AsyncClient]:
    async with limited_system(database_url, settings_factory, window=SHORT_WINDOW_SECONDS) as c:
        yield c


def from_address(address: str) -> dict[str, str]:
    # The system trusts X-Forwarded-For from loopback (as it does from the gateway).
    return {"X-Forwarded-For": address}


def an_address() -> str:
    n = uuid.uuid4().int
    return f"10.{n % 250}.{(n >> 8) % 250}.{(n >> 16) % 250 + 1}"


async def new_user(client: httpx.AsyncClient, password: str = "password-123") -> dict[str, Any]:
    tag = uuid.uuid4().hex[:10]
    body = {"email": f"lim-{tag}@prost.test", "username": f"lim_{tag}", "password": password}
    r = await client.post("/api/v1/users/register", json=body)
    assert r.status_code == 201
    return body


async def attempt(client: httpx.AsyncClient, email: str, password: str, address: str) -> httpx.Response:
    return await client.post(
        "/api/v1/users/login", json={"email": email, "password": password}, headers=from_address(address)
    )


async def test_too_many_failures_for_an_account_give_429_then_the_right_password_works_again(
    short_window: httpx.AsyncClient,
) -> None:
    user = await new_user(short_window)
    address = an_address()
    failures = await asyncio.gather(
        *(attempt(short_window, user["email"], "wrong-password", address) for _ in range(MAX_FAILURES))
    )
    assert [r.status_code for r in failures] == [401] * MAX_FAILURES
    blocked = await attempt(short_window, user["email"], user["password"], address)
    assert blocked.status_code == 429
    assert blocked.json()["error"] == "rate_limited"
    assert blocked.json()["code"] == 429
    assert 1 <= int(blocked.headers["retry-after"]) <= SHORT_WINDOW_SECONDS
    # Another address does not help: the account itself is limited.
    assert (await attempt(short_window, user["email"], user["password"], an_address())).status_code == 429

    async def right_password_works() -> bool:
        return (await attempt(short_window, user["email"], user["password"], address)).status_code == 200

    await eventually(right_password_works, timeout=SHORT_WINDOW_SECONDS + 10, interval=0.25)


async def test_an_unknown_email_is_limited_like_a_known_one(limited: httpx.AsyncClient) -> None:
    ghost = f"ghost-{uuid.uuid4().hex[:8]}@prost.test"
    address = an_address()
    statuses = [(await attempt(limited, ghost, "whatever-1", address)).status_code for _ in range(MAX_FAILURES + 1)]
    assert statuses == [401] * MAX_FAILURES + [429]


async def test_successful_logins_are_not_failures(limited: httpx.AsyncClient) -> None:
    user = await new_user(limited)
    address = an_address()
    for _ in range(MAX_FAILURES * 3):
        assert (await attempt(limited, user["email"], user["password"], address)).status_code == 200


async def test_parallel_guesses_cannot_overshoot_the_limit(limited: httpx.AsyncClient) -> None:
    user = await new_user(limited)
    address = an_address()
    results = await asyncio.gather(*(attempt(limited, user["email"], f"guess-{i:04d}", address) for i in range(12)))
    assert sorted(r.status_code for r in results) == [401] * MAX_FAILURES + [429] * (12 - MAX_FAILURES)


async def test_an_address_is_limited_at_ten_times_the_account_limit_across_accounts(limited: httpx.AsyncClient) -> None:
    address = an_address()
    per_address = MAX_FAILURES * 10
    emails = [f"spray-{uuid.uuid4().hex[:8]}@prost.test" for _ in range(per_address)]
    for email in emails:
        # One failure per account: no account reaches its own limit.
        assert (await attempt(limited, email, "password-1", address)).status_code == 401
    user = await new_user(limited)
    blocked = await attempt(limited, user["email"], user["password"], address)
    assert blocked.status_code == 429
    assert "retry-after" in blocked.headers
    assert (await attempt(limited, user["email"], user["password"], an_address())).status_code == 200


async def test_failures_on_two_replicas_count_together(
    database_url: str, settings_factory: Callable[..., Settings]
) -> None:
    async with (
        limited_system(database_url, settings_factory) as one,
        limited_system(database_url, settings_factory) as two,
    ):
        user = await new_user(one)
        address = an_address()
        statuses = []
        for i in range(MAX_FAILURES + 1):
            statuses.append(
                (await attempt(one if i % 2 == 0 else two, user["email"], "wrong-pass", address)).status_code
            )
        assert statuses == [401] * MAX_FAILURES + [429]
        assert (await attempt(one, user["email"], user["password"], address)).status_code == 429


async def test_wrong_current_passwords_in_profile_changes_count_as_failures(limited: httpx.AsyncClient) -> None:
    user = await new_user(limited)
    address = an_address()
    login = await attempt(limited, user["email"], user["password"], address)
    me, token = login.json()["user"], login.json()["token"]
    statuses = []
    for _ in range(MAX_FAILURES + 1):
        r = await limited.patch(
            f"/api/v1/users/profile/{me['id']}",
            json={"password": "new-password-1", "current_password": "guess-guess"},
            headers={**bearer(token), **from_address(address)},
        )
        statuses.append(r.status_code)
    assert statuses == [403] * MAX_FAILURES + [429]
    assert (await attempt(limited, user["email"], user["password"], address)).status_code == 429


async def test_attempts_older_than_the_window_are_purged(engine: AsyncEngine) -> None:
    key = f"purge-{uuid.uuid4().hex}@prost.test"
    async with engine.begin() as conn:
        await conn.execute(
            sa.text(
                "INSERT INTO users.login_attempts (scope, key, attempted_at) VALUES"
                " ('account', :k, now() - interval '1 hour'), ('account', :k, now())"
            ),
            {"k": key},
        )
        await LoginAttemptRepository(conn, LoginLimits(max_failures=10, window_seconds=300)).purge()
        left = await conn.scalar(sa.text("SELECT count(*) FROM users.login_attempts WHERE key = :k"), {"k": key})
    assert left == 1
