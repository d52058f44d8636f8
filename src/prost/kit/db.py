"""Database plumbing: the unit of work, engine factory, per-schema MetaData, the
tables every schema has.

The unit of work is a `Session`: one connection inside one transaction that
`transaction(engine)` begins and ends itself, on the asyncpg connection underneath.
The connections are the unit of work's own (`_Kept`): opened through the engine,
then kept out of SQLAlchemy's pool and handed from unit to unit. A session speaks
two ways over that one connection:

- `fetch` / `fetchrow` / `fetchval` / `run` take an `Sql` statement (text with
  `:name` parameters, turned into asyncpg's `$n` form once, where it is defined)
  and go straight to asyncpg: the hot statements of the saga, the outbox and the
  inbox. On this machine kind a statement issued this way costs a third of the
  client CPU of the same text through SQLAlchemy (`bench/statements.py`).
- `execute` / `scalar` / `scalars` take SQLAlchemy Core: everything else, where
  building statements from the tables reads better than it costs.

Both run in the same transaction because the transaction is ours, not SQLAlchemy's:
the SQLAlchemy connection is switched to AUTOCOMMIT (it then never sends `BEGIN` or
`COMMIT` of its own) and the `BEGIN`/`COMMIT` go over asyncpg. Work that is exactly
one statement takes `autocommit(engine)`: the statement is its own transaction.

Errors from `Sql` statements are asyncpg's (`asyncpg.PostgresError` and friends),
from Core statements SQLAlchemy's; `DATABASE_ERRORS` and `sqlstate()` cover both.
Nothing connects at import time: engines are made by each service's bootstrap.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import re
import time
import weakref
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, cast

import asyncpg
import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.sql.base import Executable
from sqlalchemy.util.typing import TupleAny

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

DATABASE_ERRORS: tuple[type[BaseException], ...] = (
    sa.exc.DBAPIError,
    sa.exc.TimeoutError,  # the pool had no connection to give in time
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    OSError,
)
"""What a database that fails or goes away raises, through either way of speaking to it."""


def sqlstate(exc: BaseException) -> str | None:
    """The PostgreSQL error code behind an asyncpg or SQLAlchemy error, if any."""
    orig = getattr(exc, "orig", None)
    for candidate in (exc, orig, getattr(orig, "__cause__", None)):
        code = getattr(candidate, "sqlstate", None) or getattr(candidate, "pgcode", None)
        if isinstance(code, str):
            return code
    return None


def async_url(url: str) -> str:
    """Accept `postgresql://` / `postgres://` URLs and point them at asyncpg."""
    for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    raise ValueError("PROST_DATABASE_URL must be a postgresql:// URL")


RECYCLE_SECONDS = 1800.0
"""By default, a connection older than this is closed and opened afresh at its next checkout."""


def create_engine(
    url: str,
    *,
    pool_size: int = 5,
    max_overflow: int = 15,
    pool_timeout: float = 10.0,
    recycle_seconds: float = RECYCLE_SECONDS,
) -> AsyncEngine:
    engine = create_async_engine(
        async_url(url),
        pool_size=pool_size,
        max_overflow=max_overflow,
        # No pre-ping: it costs a round trip per checkout; a dead connection fails once
        # (503 to the client) and is replaced.
        pool_recycle=recycle_seconds,
        pool_timeout=pool_timeout,
        # json/jsonb values come back parsed by orjson, on both ways of speaking
        # (SQLAlchemy sets the driver's codecs with it on every new connection).
        json_deserializer=orjson.loads,
        connect_args={"server_settings": {"application_name": "prost"}},
    )
    _Kept.attach(engine, size=pool_size, limit=pool_size + max_overflow, timeout=pool_timeout, recycle=recycle_seconds)
    return engine


# -- statements and the unit of work ---------------------------------------------------

_PARAMETER = re.compile(r"(?<![:\w]):([A-Za-z_][A-Za-z0-9_]*)")


class Sql:
    """A hot statement: SQL text with `:name` parameters, numbered `$1, $2, ...` once.

    asyncpg prepares it (and keeps it prepared per connection), so PostgreSQL infers
    each parameter's type from where it stands; a parameter whose type it cannot
    infer (an array handed to `unnest`, a bare `SELECT :x`) needs a cast in the text
    (`CAST(:ids AS uuid[])`). `::` casts are left alone; a `:word` inside a string
    literal would be taken for a parameter, so literals never hold one."""

    __slots__ = ("names", "text")

    def __init__(self, text: str) -> None:
        names: list[str] = []

        def number(match: re.Match[str]) -> str:
            if match.group(1) not in names:
                names.append(match.group(1))
            return f"${names.index(match.group(1)) + 1}"

        self.text = _PARAMETER.sub(number, text)
        self.names = tuple(names)

    def args(self, params: Mapping[str, Any]) -> list[Any]:
        """The values in `$n` order; a missing or unknown name is a `TypeError`."""
        if len(params) != len(self.names) or not all(name in params for name in self.names):
            missing = sorted(set(self.names) - set(params))
            unknown = sorted(set(params) - set(self.names))
            raise TypeError(f"parameters do not fit the statement: missing {missing}, unknown {unknown}")
        return [params[name] for name in self.names]

    def __repr__(self) -> str:
        return f"Sql({self.text!r})"


class Session:
    """The unit of work: one connection, inside one transaction (`transaction`) or
    outside any (`autocommit`). Handlers, repositories and `outbox.add_to_outbox`
    take it; see the module's docstring for the two ways it speaks."""

    __slots__ = ("_after_commit", "_conn", "_core", "driver")

    def __init__(self, conn: AsyncConnection, driver: asyncpg.Connection) -> None:
        self._conn = conn
        self._core: AsyncConnection | None = None
        self._after_commit: list[Callable[[], None]] | None = None
        self.driver = driver
        """The asyncpg connection underneath (for what `Sql` does not cover: LISTEN, COPY)."""

    @property
    def engine(self) -> AsyncEngine:
        """The engine this session's connection came from."""
        return self._conn.engine

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Call `callback` once what this session wrote is committed: at the end of
        the transaction, only if it commits; outside a transaction (each statement
        commits by itself) at once. For telling this process's other parts about the
        change (the outbox wakes its relay); it must not raise, the work is done."""
        if not self.driver.is_in_transaction():
            callback()
        elif self._after_commit is None:
            self._after_commit = [callback]
        else:
            self._after_commit.append(callback)

    def _committed(self) -> None:
        callbacks, self._after_commit = self._after_commit, None
        for callback in callbacks or ():
            callback()

    # -- Sql statements, straight to asyncpg --

    async def fetch(self, sql: Sql, /, **params: Any) -> list[asyncpg.Record]:
        rows: list[asyncpg.Record] = await self.driver.fetch(sql.text, *sql.args(params))
        return rows

    async def fetchrow(self, sql: Sql, /, **params: Any) -> asyncpg.Record | None:
        row: asyncpg.Record | None = await self.driver.fetchrow(sql.text, *sql.args(params))
        return row

    async def fetchval(self, sql: Sql, /, **params: Any) -> Any:
        return await self.driver.fetchval(sql.text, *sql.args(params))

    async def run(self, sql: Sql, /, **params: Any) -> int:
        """Run a statement whose rows are not wanted; returns how many rows it touched."""
        status: str = await self.driver.execute(sql.text, *sql.args(params))
        count = status.rpartition(" ")[2]
        return int(count) if count.isdigit() else 0

    # -- SQLAlchemy Core --

    async def core(self) -> AsyncConnection:
        """The SQLAlchemy connection, in AUTOCOMMIT so that it never begins or ends a
        transaction itself: its statements run inside ours (switched on first use)."""
        if self._core is None:
            conn = self._conn
            sync = conn.sync_connection
            if sync is None or sync.get_execution_options().get("isolation_level") != "AUTOCOMMIT":
                conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            self._core = conn
        return self._core

    async def execute(
        self,
        statement: Executable,
        parameters: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
    ) -> CursorResult[*TupleAny]:
        return await (await self.core()).execute(statement, parameters)

    async def scalar(self, statement: Executable, parameters: Mapping[str, Any] | None = None) -> Any:
        return await (await self.core()).scalar(statement, parameters)

    async def scalars(self, statement: Executable, parameters: Mapping[str, Any] | None = None) -> sa.ScalarResult[Any]:
        return await (await self.core()).scalars(statement, parameters)


def mapping(row: asyncpg.Record | sa.Row[Any]) -> Mapping[str, Any]:
    """A row by column name, whichever way it was read (`Sql` or Core)."""
    return cast("Mapping[str, Any]", row._mapping if isinstance(row, sa.Row) else row)


class _Kept:
    """The units of work's own pool of one engine's connections.

    SQLAlchemy's checkout and check-in cost more than the transaction they wrap (two
    greenlet switches, a `Connection` built and reset each time: about 90 µs of a
    130 µs empty `BEGIN`/`COMMIT` with eight at once on this machine kind). So a unit
    of work takes its connection from here and gives it back here. A connection is
    opened through the engine (its dialect sets the driver up), switched to
    AUTOCOMMIT (the transaction is ours) and detached from the engine's pool, whose
    slot is then free for whoever uses the engine directly (migrations, tests).
    Up to `size` stay open, idle between units; up to `limit` are open at once, the
    ones beyond `size` closed when given back, and one older than `recycle` closed at
    its next checkout and opened afresh (the pool's `pool_recycle`, which no longer
    sees them). At the limit a unit waits, up to `timeout` (then SQLAlchemy's
    `TimeoutError`), for one to be given back or closed. A broken one, or one that
    SQLAlchemy gave up, is closed. `engine.dispose()` closes the idle ones; one in use
    at that moment is closed when it is given back. An engine made by `create_engine`
    thus has up to its pool's size and overflow open for its units of work, and as
    many again for direct use of the engine (which `src` does not make)."""

    def __init__(self, size: int, limit: int, timeout: float, recycle: float) -> None:
        # No reference to the engine: the registry's entry goes with the engine.
        self.size = size
        self.limit = max(1, limit)
        self.timeout = timeout
        self.recycle = recycle
        self.idle: list[AsyncConnection] = []
        self.opened: dict[AsyncConnection, _Opened] = {}
        self.open = 0  # checked out of the pool by units of work, idle or in use
        self.waiting: collections.deque[asyncio.Future[AsyncConnection | None]] = collections.deque()
        self.generation = 0

    @classmethod
    def attach(cls, engine: AsyncEngine, *, size: int, limit: int, timeout: float, recycle: float) -> None:
        kept = cls(size, limit, timeout, recycle)
        _kept[engine.sync_engine] = kept
        sa.event.listen(engine.sync_engine, "engine_disposed", kept._disposed)

    @classmethod
    def of(cls, engine: AsyncEngine) -> _Kept | None:
        return _kept.get(engine.sync_engine)

    async def take(self, engine: AsyncEngine) -> tuple[AsyncConnection, int]:
        conn = await self._idle()  # the usual case, with no timer to arm and disarm
        if conn is None:
            try:
                async with asyncio.timeout(self.timeout):
                    conn = await self._open_or_wait(engine)
            except TimeoutError:
                raise sa.exc.TimeoutError(
                    f"no database connection free within {self.timeout:g} s ({self.limit} in use)"
                ) from None
        return conn, self.generation

    async def _idle(self) -> AsyncConnection | None:
        """An idle connection younger than `recycle` (older ones are closed on the way)."""
        while self.idle:
            idle = self.idle.pop()
            if time.monotonic() - self.opened[idle].at < self.recycle:
                return idle
            await self._close(idle)
        return None

    async def _open_or_wait(self, engine: AsyncEngine) -> AsyncConnection:
        while True:
            if (conn := await self._idle()) is not None:
                return conn
            if self.open < self.limit:
                return await self._open(engine)
            if (conn := await self._wait()) is not None:
                return conn
            # None: a connection was closed, there is room to open one

    async def _open(self, engine: AsyncEngine) -> AsyncConnection:
        self.open += 1
        opened: AsyncConnection | None = None
        try:
            opened = await engine.connect()
            await opened.execution_options(isolation_level="AUTOCOMMIT")
            fairy = opened.sync_connection.connection  # type: ignore[union-attr]
            self.opened[opened] = _Opened(_driver(opened), time.monotonic())
            fairy.detach()  # ours from now on: the pool's slot is free for its other users
        except BaseException:
            self._closed()
            if opened is not None:
                with contextlib.suppress(*DATABASE_ERRORS):
                    await opened.close()
            raise
        return opened

    async def _wait(self) -> AsyncConnection | None:
        waiter: asyncio.Future[AsyncConnection | None] = asyncio.get_running_loop().create_future()
        self.waiting.append(waiter)
        try:
            return await waiter
        except BaseException:
            with contextlib.suppress(ValueError):
                self.waiting.remove(waiter)
            if waiter.done() and not waiter.cancelled():
                # Handed something just as this unit gave up: pass it on.
                if (conn := waiter.result()) is None:
                    self._wake_one(None)
                elif not self._pass_on(conn):
                    self.idle.append(conn)
            raise

    async def give_back(self, conn: AsyncConnection, generation: int, *, broken: bool) -> None:
        if broken or generation != self.generation:
            await self._close(conn, counted=generation == self.generation, terminate=broken)
        elif not self._pass_on(conn):
            await self._close(conn)  # beyond `size`

    async def _close(self, conn: AsyncConnection, *, counted: bool = True, terminate: bool = False) -> None:
        if counted:
            self._closed()
        opened = self.opened.pop(conn, None)
        invalidated = _invalidated(conn)
        if opened is not None and (terminate or invalidated):
            opened.driver.terminate()
        if not invalidated:  # an invalidated one has let go of its driver already
            with contextlib.suppress(*DATABASE_ERRORS):
                await conn.close()  # detached: really closed

    def _closed(self) -> None:
        """One connection fewer: a unit waiting may open one."""
        self.open -= 1
        self._wake_one(None)

    def _wake_one(self, conn: AsyncConnection | None) -> bool:
        while self.waiting:
            waiter = self.waiting.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return True
        return False

    def _pass_on(self, conn: AsyncConnection) -> bool:
        """To the first unit waiting, else idle if there is room; False if neither."""
        if self._wake_one(conn):
            return True
        if len(self.idle) < self.size:
            self.idle.append(conn)
            return True
        return False

    def _disposed(self, _engine: sa.Engine) -> None:
        """`engine_disposed`: runs inside `AsyncEngine.dispose()`'s greenlet, so the
        synchronous API may do I/O."""
        idle, self.idle = self.idle, []
        self.generation += 1
        self.open = 0
        self.opened.clear()
        for conn in idle:
            sync = conn.sync_connection
            if sync is not None:
                with contextlib.suppress(*DATABASE_ERRORS):
                    sync.close()  # detached: really closed


@dataclass(frozen=True, slots=True)
class _Opened:
    """A kept connection's driver, read once when it was opened (never read off the
    SQLAlchemy connection later: after an invalidation, a disconnect or a cancelled
    Core statement, that would check a fresh one out of the pool to answer), and when."""

    driver: asyncpg.Connection
    at: float  # time.monotonic()


_kept: weakref.WeakKeyDictionary[sa.Engine, _Kept] = weakref.WeakKeyDictionary()


@contextlib.asynccontextmanager
async def _checked_out(engine: AsyncEngine) -> AsyncIterator[Session]:
    """A connection as a session: kept between units of work (`_Kept`) for engines made
    by `create_engine`, straight from the pool for others. On the way back, a
    connection that is closed or still inside a transaction (cancelled mid-`COMMIT`,
    the server gone) is thrown away, never given to its next user to surprise it."""
    kept = _Kept.of(engine)
    if kept is None:
        async with engine.connect() as conn:
            driver = _driver(conn)
            try:
                yield Session(conn, driver)
            finally:
                if driver.is_closed() or driver.is_in_transaction():
                    await conn.invalidate()
        return
    conn, generation = await kept.take(engine)
    driver = kept.opened[conn].driver
    try:
        yield Session(conn, driver)
    finally:
        broken = driver.is_closed() or driver.is_in_transaction() or _invalidated(conn)
        try:
            if not broken and conn.in_transaction():
                # SQLAlchemy's own bookkeeping of a Core statement (it "begins" even
                # under AUTOCOMMIT, and a failed statement leaves it pending a
                # rollback), ended as a check-in would: the next unit starts clean.
                # No round trip: the transaction on the connection is ours, not its.
                await conn.rollback()
        except DATABASE_ERRORS:
            broken = True
        except BaseException:  # cancelled meanwhile: closed, not kept
            broken = True
            raise
        finally:
            await kept.give_back(conn, generation, broken=broken)


def _invalidated(conn: AsyncConnection) -> bool:
    """SQLAlchemy gave the connection up (a disconnect, a cancelled Core statement)."""
    sync = conn.sync_connection
    return sync is None or sync.invalidated


def _driver(conn: AsyncConnection) -> asyncpg.Connection:
    """The asyncpg connection under a checked-out one, read straight off it:
    `get_raw_connection()` would take a greenlet round for an attribute already set."""
    checked_out = conn.sync_connection
    assert checked_out is not None  # set by `engine.connect()`
    # Through the adapted connection (SQLAlchemy's wrapper of asyncpg's), which a
    # connection detached from the pool still has.
    adapted = checked_out.connection.dbapi_connection
    driver: asyncpg.Connection = adapted.driver_connection  # type: ignore[union-attr]
    return driver


@contextlib.asynccontextmanager
async def transaction(engine: AsyncEngine) -> AsyncIterator[Session]:
    """A pooled connection inside a transaction: committed when the block ends, rolled
    back when it raises."""
    async with _checked_out(engine) as session:
        tx = session.driver.transaction()
        await tx.start()
        try:
            yield session
        except BaseException:
            # The error that ended the block is the one to raise (a cancellation above
            # all); a rollback that fails too leaves the connection to be thrown away.
            with contextlib.suppress(Exception):
                await tx.rollback()
            raise
        await tx.commit()
        session._committed()


@contextlib.asynccontextmanager
async def autocommit(engine: AsyncEngine) -> AsyncIterator[Session]:
    """A pooled connection outside any transaction block: each statement commits by
    itself. For work that is exactly one statement (a lookup, one insert): one round
    trip instead of three (`BEGIN`, the statement, `COMMIT`/`ROLLBACK`). Two statements
    on it are two transactions, so writes that must commit together go in
    `transaction(engine)`. Reads may share it: at READ COMMITTED (PostgreSQL's
    default, which prost keeps) a transaction would give them no common snapshot either."""
    async with _checked_out(engine) as session:
        yield session


_SELECT_ONE = Sql("SELECT 1")


async def is_ready(engine: AsyncEngine) -> bool:
    """The database readiness check: one round trip through the unit of work, on the
    connections the process's work uses (raises when the database is away)."""
    async with autocommit(engine) as session:
        await session.fetchval(_SELECT_ONE)
    return True


_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def quoted_schema(schema: str) -> str:
    """`"<schema>"` for SQL text built once per schema (the outbox's and inbox's hot
    statements); anything that is not a plain service schema name is refused."""
    if not _SCHEMA_NAME.match(schema):
        raise ValueError(f"not a service schema name: {schema!r}")
    return f'"{schema}"'


def schema_metadata(schema: str) -> sa.MetaData:
    """A MetaData bound to one service schema, with `outbox` and `idempotency_records`."""
    metadata = sa.MetaData(schema=schema, naming_convention=NAMING_CONVENTION)
    outbox_table(metadata)
    idempotency_table(metadata)
    return metadata


@cache
def _shared_tables(schema: str) -> sa.MetaData:
    return schema_metadata(schema)


def outbox_of(schema: str) -> sa.Table:
    """The `outbox` table of one service schema (built once per schema)."""
    return _shared_tables(schema).tables[f"{schema}.outbox"]


def idempotency_of(schema: str) -> sa.Table:
    """The `idempotency_records` table of one service schema (built once per schema)."""
    return _shared_tables(schema).tables[f"{schema}.idempotency_records"]


def outbox_table(metadata: sa.MetaData) -> sa.Table:
    """Events written in the same transaction as the change they announce."""
    return sa.Table(
        "outbox",
        metadata,
        sa.Column("seq", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("event_id", pg.UUID(as_uuid=True), nullable=False, unique=True),
        sa.Column("event_type", sa.String(100), nullable=False),
        sa.Column("envelope", pg.JSONB, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("sent_at", sa.DateTime(timezone=True)),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_error", sa.Text),
        sa.Index("ix_outbox_unsent", "seq", postgresql_where=sa.text("sent_at IS NULL")),
        sa.Index(None, "sent_at"),
    )


def idempotency_table(metadata: sa.MetaData) -> sa.Table:
    """What this service already did: consumed events and HTTP Idempotency-Key requests.

    A consumed event is `(kind='event', event_id, service_name)`; an HTTP request is
    `(kind='http', key, user_id, fingerprint, response)`. Both are unique rows written
    in the same transaction as the effect they guard.
    """
    return sa.Table(
        "idempotency_records",
        metadata,
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("event_id", pg.UUID(as_uuid=True)),
        sa.Column("service_name", sa.String(50)),
        sa.Column("key", sa.String(255)),
        sa.Column("user_id", pg.UUID(as_uuid=True)),
        sa.Column("scope", sa.String(100)),
        sa.Column("fingerprint", sa.String(64)),
        sa.Column("status_code", sa.Integer),
        sa.Column("response", pg.JSONB),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("completed_at", sa.DateTime(timezone=True)),
        sa.UniqueConstraint("event_id", "service_name"),
        sa.UniqueConstraint("scope", "user_id", "key"),
        sa.CheckConstraint("kind IN ('event', 'http')", name="kind"),
        sa.Index(None, "created_at"),
    )
