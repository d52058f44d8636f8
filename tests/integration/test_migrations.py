"""Every service's Alembic history, checked on databases of their own:

- the stairway: each revision upgrades, downgrades and upgrades again, from base to head,
  and head matches the service's `tables.py` (autogenerate finds no difference);
- the catalogue: no foreign key crosses a schema; every schema has `outbox` and
  `idempotency_records` with a unique `(event_id, service_name)`; each history's
  version table is inside its own schema;
- `migrate` is safe twice, from two tasks at once and from two processes at once.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import subprocess
import sys
import warnings
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.engine import Connection

from prost.kit import migrations
from prost.kit.db import create_engine
from prost.kit.settings import SERVICES

MakeDatabase = Callable[[], AbstractAsyncContextManager[str]]


def with_history(service: str) -> None:
    if not migrations.has_history(service):
        pytest.skip(f"{service} has no migration history yet")


async def query(url: str, sql: str, **params: Any) -> list[sa.Row[Any]]:
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.connect() as conn:
            return list(await conn.execute(sa.text(sql), params))
    finally:
        await engine.dispose()


async def tables_in(url: str, schema: str) -> set[str]:
    rows = await query(url, "SELECT table_name FROM information_schema.tables WHERE table_schema = :s", s=schema)
    return {r.table_name for r in rows}


async def current_revision(url: str, schema: str) -> str | None:
    rows = await query(url, f'SELECT version_num FROM "{schema}".alembic_version')
    return rows[0].version_num if rows else None


def _differences(connection: Connection, service: str) -> list[Any]:
    metadata = importlib.import_module(f"prost.{service}.tables").metadata
    context = MigrationContext.configure(
        connection,
        opts={
            "include_schemas": True,
            "include_name": lambda name, type_, _: type_ != "schema" or name == service,
            "compare_type": True,
            "version_table_schema": service,
        },
    )
    with warnings.catch_warnings():
        # Alembic cannot compare expression indexes (lower(email)) and says so.
        warnings.filterwarnings("ignore", message=".*expression-based index.*")
        warnings.filterwarnings("ignore", message=".*functional index.*")
        diffs: list[Any] = compare_metadata(context, metadata)
    return diffs


@pytest.mark.parametrize("service", SERVICES)
async def test_every_revision_upgrades_downgrades_and_upgrades_again(make_database: MakeDatabase, service: str) -> None:
    with_history(service)
    revisions = migrations.revisions(service)
    assert revisions, f"{service} has a migrations package but no revision"
    async with make_database() as url:
        await migrations.migrate(url, services=[service], action="downgrade", revision="base")
        assert await tables_in(url, service) == {"alembic_version"}
        for rev in revisions:
            down = rev.down_revision or "base"
            await migrations.migrate(url, services=[service], revision=rev.revision)
            assert await current_revision(url, service) == rev.revision
            await migrations.migrate(url, services=[service], action="downgrade", revision=down)
            assert await current_revision(url, service) == (None if down == "base" else down)
            await migrations.migrate(url, services=[service], revision=rev.revision)
        assert await current_revision(url, service) == revisions[-1].revision
        engine = create_engine(url, pool_size=1)
        try:
            async with engine.connect() as conn:
                diffs = await conn.run_sync(_differences, service)
        finally:
            await engine.dispose()
        assert diffs == [], f"{service}: head differs from tables.py: {diffs}"


async def test_no_foreign_key_crosses_a_schema(database_url: str) -> None:
    rows = await query(
        database_url,
        """
        SELECT c.conname, src.nspname AS from_schema, dst.nspname AS to_schema
        FROM pg_constraint c
        JOIN pg_class sc ON sc.oid = c.conrelid JOIN pg_namespace src ON src.oid = sc.relnamespace
        JOIN pg_class dc ON dc.oid = c.confrelid JOIN pg_namespace dst ON dst.oid = dc.relnamespace
        WHERE c.contype = 'f'
        """,
    )
    crossing = [(r.conname, r.from_schema, r.to_schema) for r in rows if r.from_schema != r.to_schema]
    assert crossing == []


@pytest.mark.parametrize("service", SERVICES)
async def test_every_schema_has_its_outbox_its_idempotency_records_and_its_version_table(
    database_url: str, service: str
) -> None:
    with_history(service)
    assert {"outbox", "idempotency_records", "alembic_version"} <= await tables_in(database_url, service)
    unique = await query(
        database_url,
        """
        SELECT array_agg(a.attname::text ORDER BY k.ord) AS columns
        FROM pg_index i
        JOIN pg_class t ON t.oid = i.indrelid JOIN pg_namespace n ON n.oid = t.relnamespace
        CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
        JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum
        WHERE n.nspname = :s AND t.relname = 'idempotency_records' AND i.indisunique
        GROUP BY i.indexrelid
        """,
        s=service,
    )
    assert ["event_id", "service_name"] in [r.columns for r in unique]
    outbox_unique = await query(
        database_url,
        """
        SELECT 1 FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid JOIN pg_namespace n ON n.oid = t.relnamespace
        JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = i.indkey[0]
        WHERE n.nspname = :s AND t.relname = 'outbox' AND i.indisunique AND i.indnatts = 1 AND a.attname = 'event_id'
        """,
        s=service,
    )
    assert outbox_unique, f"{service}.outbox has no unique event_id"


async def test_no_version_table_lives_outside_the_service_schemas(database_url: str) -> None:
    rows = await query(
        database_url, "SELECT table_schema FROM information_schema.tables WHERE table_name = 'alembic_version'"
    )
    schemas = {r.table_schema for r in rows}
    assert "public" not in schemas
    assert schemas == {s for s in SERVICES if migrations.has_history(s)}


async def heads(url: str) -> dict[str, str | None]:
    return {s: await current_revision(url, s) for s in SERVICES if migrations.has_history(s)}


def expected_heads() -> dict[str, str | None]:
    return {s: migrations.revisions(s)[-1].revision for s in SERVICES if migrations.has_history(s)}


async def test_migrate_twice_and_from_two_tasks_at_once_is_safe(make_database: MakeDatabase) -> None:
    async with make_database() as url:
        await migrations.upgrade(url)  # already at head: nothing to do, no error
        assert await heads(url) == expected_heads()
        for service in reversed(SERVICES):
            await migrations.migrate(url, services=[service], action="downgrade", revision="base")
        await asyncio.gather(migrations.upgrade(url), migrations.upgrade(url))
        assert await heads(url) == expected_heads()


async def test_migrate_from_two_processes_at_once_is_safe(make_database: MakeDatabase) -> None:
    async with make_database() as url:
        for service in reversed(SERVICES):
            await migrations.migrate(url, services=[service], action="downgrade", revision="base")
        env = {k: v for k, v in os.environ.items() if not k.startswith("PROST_")}
        env["PROST_DATABASE_URL"] = url
        procs = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "prost.cli",
                "migrate",
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            for _ in range(2)
        ]
        outputs = [await p.communicate() for p in procs]
        assert [p.returncode for p in procs] == [0, 0], [err.decode()[-2000:] for _, err in outputs]
        assert await heads(url) == expected_heads()
