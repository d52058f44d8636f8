"""Alembic, one history per service, each with its version table inside its own schema.

`upgrade(url)` applies every service's history. It is safe to run twice and from
several processes at once: each service migrates inside one transaction holding a
PostgreSQL advisory lock, so a second migrator waits, then finds nothing to do.

A service's `migrations/env.py` is two lines: it hands its MetaData to `run_env`.
"""

from __future__ import annotations

import asyncio
import importlib.util
import weakref
import zlib
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from alembic import command, context
from alembic.config import Config
from sqlalchemy.engine import Connection

from prost.kit.db import async_url, create_engine
from prost.kit.settings import SERVICES


def alembic_config(service: str, connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", f"prost.{service}:migrations")
    cfg.set_main_option("file_template", "%%(year)d-%%(month).2d-%%(day).2d_%%(slug)s")
    cfg.attributes["schema"] = service
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def run_env(metadata: sa.MetaData) -> None:
    """Body of every service's env.py: migrate on the connection handed in by `upgrade`."""
    connection: Connection | None = context.config.attributes.get("connection")
    schema: str = context.config.attributes["schema"]
    if connection is None:
        raise RuntimeError("prost migrations run through `prost migrate` (prost.kit.migrations.upgrade)")
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table_schema=schema,
        include_schemas=True,
        include_name=lambda name, type_, _: type_ != "schema" or name == schema,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _lock_key(service: str) -> int:
    return zlib.crc32(f"prost.migrate.{service}".encode()) & 0x7FFFFFFF


def _run(connection: Connection, service: str, action: str, revision: str) -> None:
    connection.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _lock_key(service)})
    connection.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{service}"'))
    cfg = alembic_config(service, connection)
    if action == "upgrade":
        command.upgrade(cfg, revision)
    else:
        command.downgrade(cfg, revision)


def has_history(service: str) -> bool:
    return importlib.util.find_spec(f"prost.{service}.migrations") is not None


_LOCKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()


def _in_process_lock() -> asyncio.Lock:
    """Alembic keeps its migration context in module globals, so two migrations in one
    process (two tasks) must not interleave; the advisory lock orders processes."""
    loop = asyncio.get_running_loop()
    lock = _LOCKS.get(loop)
    if lock is None:
        lock = _LOCKS[loop] = asyncio.Lock()
    return lock


async def migrate(
    url: str, *, services: Iterable[str] = SERVICES, action: str = "upgrade", revision: str = "head"
) -> None:
    async with _in_process_lock():
        await _migrate(url, services=services, action=action, revision=revision)


async def _migrate(url: str, *, services: Iterable[str], action: str, revision: str) -> None:
    engine = create_engine(url, pool_size=1, max_overflow=0)
    try:
        for service in (s for s in services if has_history(s)):
            async with engine.begin() as conn:
                await conn.run_sync(_run, service, action, revision)
    finally:
        await engine.dispose()


async def upgrade(url: str, *, services: Iterable[str] = SERVICES) -> None:
    await migrate(url, services=services)


async def ensure_database(url: str) -> None:
    """Create the database named in `url` if it does not exist (two creators may race)."""
    target = sa.make_url(async_url(url))
    name = target.database
    if not name:
        return
    admin = create_engine(target.set(database="postgres").render_as_string(hide_password=False), pool_size=1)
    try:
        async with admin.connect() as conn:
            # CREATE DATABASE cannot run in a transaction: switch before the first query.
            auto = await conn.execution_options(isolation_level="AUTOCOMMIT")
            exists = await auto.scalar(sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name})
            if not exists:
                try:
                    await auto.execute(sa.text(f'CREATE DATABASE "{name}"'))
                except sa.exc.DBAPIError as exc:
                    if "already exists" not in str(exc):
                        raise
    finally:
        await admin.dispose()


def revisions(service: str) -> list[Any]:
    """Every revision of a service's history, oldest first (for the stairway test)."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config(service))
    return list(reversed(list(script.walk_revisions("base", "heads"))))


def _autogenerate(connection: Connection, service: str, message: str) -> None:
    connection.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{service}"'))
    command.upgrade(alembic_config(service, connection), "head")
    command.revision(alembic_config(service, connection), message=message, autogenerate=True)


async def make_revision(url: str, service: str, message: str) -> None:
    """Write a new revision for `service` from the difference between its tables and
    a scratch database migrated to head (a developer's tool: `prost makemigration`)."""
    engine = create_engine(url, pool_size=1, max_overflow=0)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_autogenerate, service, message)
    finally:
        await engine.dispose()
