"""Shared fixtures: a fresh migrated database per test run, a RabbitMQ vhost, a running system.

The session's `system` runs on the run's database with all its background work (relays,
the catalog's sweeper, the payments resumer, the orders reconciler). A module that runs a
service's handlers or loops itself, on that service's schema, takes a database of its own
with `engine = engine_of_its_own()` (helpers.py), so the system never takes a test's rows.

- PROST_TEST_DATABASE_URL: a PostgreSQL server to use (a throwaway database is created
  on it and dropped at the end); without it, the embedded PostgreSQL is started.
- PROST_TEST_BROKER_URL: RabbitMQ (default amqp://guest:guest@127.0.0.1:5672/); tests
  that need it skip when it is unreachable, or fail when PROST_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

os.environ.setdefault("PROST_BCRYPT_ROUNDS", "4")

from prost.kit.db import create_engine
from prost.kit.settings import Settings

from helpers import ADMIN_EMAIL, ADMIN_PASSWORD, fresh_database

REQUIRE_SERVICES = os.environ.get("PROST_REQUIRE_SERVICES") == "1"
DEFAULT_BROKER = "amqp://guest:guest@127.0.0.1:5672/"


def require(reason: str) -> None:
    """Skip with a reason, or fail when the run says services must be there."""
    if REQUIRE_SERVICES:
        pytest.fail(f"required service missing: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def tmp_root() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="prost-test-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
async def server_url(tmp_root: Path) -> AsyncIterator[str]:
    """A PostgreSQL server URL (without a database chosen for prost)."""
    external = os.environ.get("PROST_TEST_DATABASE_URL")
    if external:
        yield external
        return
    from prost.runtime.embedded_pg import EmbeddedPostgres

    pg = EmbeddedPostgres(tmp_root / "embedded")
    url = await pg.start()
    yield url
    await pg.stop()


@pytest.fixture(scope="session")
async def database_url(server_url: str) -> AsyncIterator[str]:
    """One migrated database for the whole run; tests keep apart by unique names."""
    async with fresh_database(server_url) as url:
        yield url


@pytest.fixture
def make_database(server_url: str) -> Callable[[], AbstractAsyncContextManager[str]]:
    """For tests that need a database of their own (counting rows, migrations)."""
    return lambda: fresh_database(server_url)


@pytest.fixture(scope="session")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(database_url)
    yield eng
    await eng.dispose()


@pytest.fixture(scope="module")
async def own_database(server_url: str) -> AsyncIterator[str]:
    """A migrated database of the requesting module's own: no running system's loops,
    sweepers or relays touch its rows (see `helpers.engine_of_its_own`)."""
    async with fresh_database(server_url) as url:
        yield url


@pytest.fixture(scope="module")
async def own_engine(own_database: str) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(own_database)
    yield eng
    await eng.dispose()


def _broker_reachable(url: str) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 5672), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def broker_server_url() -> str:
    url = os.environ.get("PROST_TEST_BROKER_URL", DEFAULT_BROKER)
    if not _broker_reachable(url):
        require(f"RabbitMQ is not reachable at {urlparse(url).hostname}:{urlparse(url).port or 5672}")
    return url


@pytest.fixture(scope="session")
def broker_url(broker_server_url: str) -> Iterator[str]:
    """A RabbitMQ vhost of this test run's own (removed at the end)."""
    if shutil.which("rabbitmqctl") is None:
        yield broker_server_url
        return
    vhost = f"prost_test_{uuid.uuid4().hex[:10]}"
    subprocess.run(["rabbitmqctl", "-q", "add_vhost", vhost], check=True, capture_output=True)
    user = urlparse(broker_server_url).username or "guest"
    subprocess.run(
        ["rabbitmqctl", "-q", "set_permissions", "-p", vhost, user, ".*", ".*", ".*"], check=True, capture_output=True
    )
    yield broker_server_url.rstrip("/") + "/" + vhost
    subprocess.run(["rabbitmqctl", "-q", "delete_vhost", vhost], check=False, capture_output=True)


def test_settings(tmp_root: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": tmp_root / f"data-{uuid.uuid4().hex[:8]}",
        "http_port": 0,
        "bcrypt_rounds": 4,
        "jwt_secret": "test-secret-" + "x" * 40,
        "rate_limit_per_second": 0,
        "retry_base_delay_ms": 20,
        "outbox_poll_seconds": 0.5,
        "sweep_interval_seconds": 0.2,
        "saga_step_timeout_seconds": 5,
        "log_level": "WARNING",
        # Several systems run at once in one test run: keep each one's connections few.
        "db_pool_size": 2,
        "db_max_overflow": 3,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture(scope="session")
def settings_factory(tmp_root: Path) -> Callable[..., Settings]:
    return lambda **overrides: test_settings(tmp_root, **overrides)


@pytest.fixture(scope="session")
async def system(database_url: str, settings_factory: Callable[..., Settings]) -> AsyncIterator[Any]:
    """The whole system in this process (embedded mode, in-process bus) on the test database."""
    from prost.runtime.embedded import System

    only = os.environ.get("PROST_TEST_SERVICES")
    services = [s.strip() for s in only.split(",") if s.strip()] if only else None
    async with System(
        settings_factory(database_url=database_url, admin_email=ADMIN_EMAIL, admin_password=ADMIN_PASSWORD),
        services=services,
    ) as running:
        yield running


@pytest.fixture
async def client(system: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=system.url, timeout=30) as c:
        yield c
