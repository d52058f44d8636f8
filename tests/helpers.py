"""Helpers for tests: polling, accounts and tokens over the public API."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from prost.kit import migrations
from prost.kit.db import create_engine

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
    r = await client.post(
        "/api/v1/users/register", json={"email": email, "username": f"user_{tag}", "password": password}
    )
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


class served:
    """Serve an ASGI app on a free loopback port inside the test's event loop."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __aenter__(self) -> str:
        import uvicorn

        from prost.runtime.embedded import QuietServer, bind_socket

        self._sock = bind_socket("127.0.0.1", 0)
        config = uvicorn.Config(self.app, log_config=None, access_log=False, lifespan="on", loop="none")
        self._server = QuietServer(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[self._sock]))
        while not self._server.started:
            if self._task.done():
                await self._task
            await asyncio.sleep(0.01)
        return f"http://127.0.0.1:{self._sock.getsockname()[1]}"

    async def __aexit__(self, *exc: object) -> None:
        self._server.should_exit = True
        await self._task
        self._sock.close()


def engine_of_its_own() -> Any:
    """`engine = engine_of_its_own()` in a test module: its tests' `engine` (and every fixture
    that takes one) is a database of the module's own, which the session's running system
    does not touch (conftest.py: `own_engine`)."""

    @pytest.fixture(scope="module")
    def engine(own_engine: Any) -> Any:
        return own_engine

    return engine


def _with_database(url: str, name: str) -> str:
    return str(sa.make_url(url).set(database=name).render_as_string(hide_password=False))


@asynccontextmanager
async def fresh_database(server: str) -> AsyncIterator[str]:
    name = f"prost_test_{uuid.uuid4().hex[:12]}"
    url = _with_database(server, name)
    await migrations.ensure_database(url)
    try:
        await migrations.upgrade(url)
        yield url
    finally:
        admin = create_engine(_with_database(server, "postgres"), pool_size=1)
        async with admin.connect() as conn:
            auto = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await auto.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()
