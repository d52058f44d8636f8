"""The admin account: at start-up from PROST_ADMIN_EMAIL/PROST_ADMIN_PASSWORD (safe with
two replicas starting at once) and from `prost users create-admin`."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from prost.kit.db import create_engine
from prost.kit.settings import Settings
from prost.runtime.embedded import System
from prost.users.admin import ensure_admin
from prost.users.passwords import PasswordHasher

from helpers import ADMIN_EMAIL, ADMIN_PASSWORD, bearer, register


@pytest.fixture
async def hasher() -> AsyncIterator[PasswordHasher]:
    h = PasswordHasher(4)
    yield h
    h.close()


async def accounts(engine: AsyncEngine, email: str) -> list[sa.Row[tuple[str, str, int]]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            sa.text("SELECT role, password_hash, credentials_version FROM users.users WHERE lower(email) = lower(:e)"),
            {"e": email},
        )
        return list(rows)  # type: ignore[arg-type]


async def test_the_configured_admin_logs_in_with_role_admin(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/v1/users/login", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
    assert r.status_code == 200
    assert r.json()["user"]["role"] == "admin"


async def test_ensuring_an_admin_twice_creates_one_account(engine: AsyncEngine, hasher: PasswordHasher) -> None:
    email = f"boss-{uuid.uuid4().hex[:8]}@prost.test"
    first = await ensure_admin(engine, hasher, email=email, password="boss-password-1")
    second = await ensure_admin(engine, hasher, email=email, password="boss-password-1")
    assert (first.action, second.action) == ("created", "unchanged")
    assert first.user.id == second.user.id
    assert [r.role for r in await accounts(engine, email)] == ["admin"]


async def test_two_replicas_ensuring_the_admin_at_once_make_one_account(
    engine: AsyncEngine, hasher: PasswordHasher
) -> None:
    email = f"race-{uuid.uuid4().hex[:8]}@prost.test"
    results = await asyncio.gather(
        *(ensure_admin(engine, hasher, email=email, password="boss-password-1") for _ in range(4))
    )
    assert sorted(r.action for r in results) == ["created", "unchanged", "unchanged", "unchanged"]
    assert len(await accounts(engine, email)) == 1


async def test_an_existing_customer_with_the_admin_email_is_promoted(
    client: httpx.AsyncClient, engine: AsyncEngine, hasher: PasswordHasher
) -> None:
    user, _ = await register(client, password="customer-pass-1")
    result = await ensure_admin(engine, hasher, email=user["email"], password="other-password-1")
    assert result.action == "promoted"
    # At start-up the password is left as it is (the admin may have changed it since).
    login = await client.post("/api/v1/users/login", json={"email": user["email"], "password": "customer-pass-1"})
    assert login.status_code == 200
    assert login.json()["user"]["role"] == "admin"
    other, _ = await register(client)
    r = await client.get(f"/api/v1/users/profile/{other['id']}", headers=bearer(login.json()["token"]))
    assert r.status_code == 200


async def test_a_password_reset_raises_the_credentials_version_and_is_announced(
    client: httpx.AsyncClient, engine: AsyncEngine, hasher: PasswordHasher
) -> None:
    email = f"reset-{uuid.uuid4().hex[:8]}@prost.test"
    created = await ensure_admin(engine, hasher, email=email, password="first-password-1")
    same = await ensure_admin(engine, hasher, email=email, password="first-password-1", reset_password=True)
    reset = await ensure_admin(engine, hasher, email=email, password="second-password-2", reset_password=True)
    assert (created.action, same.action, reset.action) == ("created", "unchanged", "password_reset")
    assert reset.user.credentials_version == 1
    async with engine.connect() as conn:
        announced = await conn.scalar(
            sa.text(
                "SELECT count(*) FROM users.outbox WHERE event_type = 'user.credentials_changed'"
                " AND envelope->'payload'->>'user_id' = :u"
            ),
            {"u": str(created.user.id)},
        )
    assert announced == 1
    r = await client.post("/api/v1/users/login", json={"email": email, "password": "second-password-2"})
    assert r.status_code == 200


async def test_an_admin_with_a_bad_email_or_short_password_is_refused(
    engine: AsyncEngine, hasher: PasswordHasher
) -> None:
    with pytest.raises(ValueError, match="email"):
        await ensure_admin(engine, hasher, email="not-an-email", password="boss-password-1")
    with pytest.raises(ValueError, match="8"):
        await ensure_admin(engine, hasher, email="ok@prost.test", password="short")


async def test_two_systems_starting_at_once_on_a_fresh_database_make_one_admin(
    make_database: Callable[[], AbstractAsyncContextManager[str]], settings_factory: Callable[..., Settings]
) -> None:
    email = f"startup-{uuid.uuid4().hex[:8]}@prost.test"
    async with make_database() as url:
        settings = settings_factory(database_url=url, admin_email=email, admin_password="startup-password-1")
        one, two = System(settings, services=["users"]), System(settings, services=["users"])
        try:
            await asyncio.gather(one.start(), two.start())
            async with httpx.AsyncClient(base_url=two.url) as c:
                r = await c.post("/api/v1/users/login", json={"email": email, "password": "startup-password-1"})
                assert r.status_code == 200
                assert r.json()["user"]["role"] == "admin"
        finally:
            await asyncio.gather(one.stop(), two.stop())
        engine = create_engine(url)
        try:
            assert len(await accounts(engine, email)) == 1
        finally:
            await engine.dispose()


def run_cli(url: str, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROST_")}
    env.update({"PROST_DATABASE_URL": url, "PROST_BCRYPT_ROUNDS": "4", "PROST_LOG_LEVEL": "WARNING"})
    return subprocess.run(
        [sys.executable, "-m", "prost.cli", "users", "create-admin", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_the_create_admin_command_creates_then_resets_an_admin(
    make_database: Callable[[], AbstractAsyncContextManager[str]],
) -> None:
    async with make_database() as url:
        created = await asyncio.to_thread(run_cli, url, "--email", "ops@prost.test", "--password", "ops-password-1")
        assert created.returncode == 0, created.stderr
        assert "created" in created.stderr
        # Without --password it asks (twice, to confirm).
        prompted = await asyncio.to_thread(
            run_cli, url, "--email", "ops@prost.test", stdin="ops-password-2\nops-password-2\n"
        )
        assert prompted.returncode == 0, prompted.stderr
        assert "password reset" in prompted.stderr
        bad = await asyncio.to_thread(run_cli, url, "--email", "nope", "--password", "ops-password-1")
        assert bad.returncode == 2
        assert "email" in bad.stderr
        engine = create_engine(url)
        try:
            rows = await accounts(engine, "ops@prost.test")
        finally:
            await engine.dispose()
        assert [(r.role, r.credentials_version) for r in rows] == [("admin", 1)]
        assert PasswordHasher.verify_sync("ops-password-2", rows[0].password_hash)
