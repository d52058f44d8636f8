"""The transactional outbox: events commit with the change they announce, then a relay
publishes them (DESIGN.md section 4, step 1).

Writing:
    `add_to_outbox(session, envelope)` inserts a row into `<producer>.outbox` inside the
    caller's transaction. A hot statement that knows its events before it runs can
    carry them instead (`with_events`, `fetch_with_events`): the outbox insert is a CTE
    of that statement, so the events cost no round trip of their own, and a unit of
    work that is that one statement needs no transaction at all. Either way a relay
    wakes once the rows are committed:
    - a relay of that schema running in this process on the session's engine, and
      publishing normally, is woken in-process after the commit (`Session.after_commit`);
    - otherwise the same statement also runs `pg_notify('prost_outbox.<schema>', '')`.
      PostgreSQL delivers the notification only at commit (and folds repeats within one
      transaction), so a relay wakes as soon as the row is visible, and never for a row
      that was rolled back. A channel per schema: only that schema's relays wake.
    Either way no relay wakes for a row that was rolled back, nor before it is visible.

Relaying (`OutboxRelay`, one per service schema, any number of replicas):
    1. in one statement, claim up to `batch_size` unsent rows `ORDER BY seq FOR UPDATE
       SKIP LOCKED` and mark them `sent_at = now()` (replicas take disjoint batches; a
       relay that dies rolls back: its rows are unsent and free again);
    2. `bus.publish(batch)`: returns once the broker confirmed (memory bus: once every
       subscribed service handled the event or parked it as dead);
    3. commit (rows the broker did not confirm are put back unsent first), without
       waiting for the WAL flush (see `_statements`).
    Three round trips a batch: BEGIN, the claim, COMMIT. A crash between 2 and 3, or
    a database crash that loses the commit, publishes the rows again later: delivery
    is at least once and the consumer's inbox absorbs the duplicate.

Failures:
    - `Unroutable` (no queue bound for the routing key): logged at error level, the row
      goes back unsent with `attempts + 1` and `last_error`, and this relay skips it for a
      growing while (2 s, 4 s, ... capped at 5 min) so later rows are never held up.
    - broker down / publish timeout: nothing is marked, the transaction rolls back and
      `run()` backs off (0.1 s doubling to 10 s) before trying again.

Waking: `run()` is woken by this process's writers, LISTENs on a dedicated asyncpg
connection (built from the engine's URL) for the others', and also polls every
`poll_seconds` as a safety net; the listen connection is checked and re-made if it
drops. Sent rows older than `retention_hours` are purged in chunks, every
`purge_every_seconds`, by a task of its own beside the publishing.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import asyncpg
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from prost.kit import db
from prost.kit.bus.base import MessageBus, PublishError, Unroutable
from prost.kit.db import Session, Sql, outbox_of, quoted_schema
from prost.kit.messages import Envelope

log = logging.getLogger("prost.outbox")

CHANNEL = "prost_outbox"
"""The NOTIFY channels are `prost_outbox.<schema>`: a relay hears its own schema only."""

LISTEN_APPLICATION_NAME = "prost-outbox-listen"
"""With `:<schema>` appended, the application name of a relay's LISTEN connection."""

_RELAY_ERRORS: tuple[type[BaseException], ...] = (PublishError, *db.DATABASE_ERRORS)
"""A batch that failed for these is retried after a pause."""

_UNROUTABLE_MAX_DELAY = 300.0
_BACKOFF_MIN, _BACKOFF_MAX = 0.1, 10.0
_PURGE_CHUNK = 5000


def channel(schema: str) -> str:
    """The NOTIFY channel of one schema's outbox."""
    return f"{CHANNEL}.{schema}"


@dataclass(frozen=True, slots=True)
class _Statements:
    one: Sql
    several: Sql
    one_quiet: Sql
    several_quiet: Sql
    claim: Sql


@cache
def _statements(schema: str) -> _Statements:
    """One schema's hot statements, built once as text (no SQL compilation on the hot
    path; the envelope goes in as JSON text made by orjson, cast to jsonb by the server).

    Writing: each form inserts and notifies in a single statement (one round trip): a
    data-modifying CTE runs whether or not it is read, and selecting from it does both.
    The NOTIFY is queued in the writer's transaction and fires only at commit.

    Claiming: up to `:batch` unsent rows, oldest first, skipping rows another relay
    holds and the seqs in `:parked` (unroutable for now; may be empty), marked sent in
    the same statement. The mark counts only if the relay's transaction commits, which
    it does once the broker confirmed, with the rows it did not confirm put back first.
    The same statement makes that commit asynchronous (`synchronous_commit = off` for
    the transaction, `set_config(..., true)`, true for every row): it returns without
    waiting for its WAL flush. A database crash can then lose the last few hundred
    milliseconds of marks, and only as whole transactions: their rows are unsent again
    and published once more, which the consumers' inboxes absorb. Losing a mark costs
    a duplicate; waiting for its flush cost every batch a disk write."""
    table = f"{quoted_schema(schema)}.outbox"
    one = _insert_into(schema) + "VALUES (:event_id, :event_type, CAST(:envelope AS jsonb))"
    several = _insert_several(schema)

    def notifying(statement: str) -> Sql:
        return Sql(f"WITH ins AS ({statement} RETURNING seq) SELECT pg_notify(:outbox_channel, '') FROM ins LIMIT 1")

    return _Statements(
        one=notifying(one),
        several=notifying(several),
        one_quiet=Sql(one),
        several_quiet=Sql(several),
        claim=Sql(
            f"UPDATE {table} SET sent_at = now(), attempts = attempts + 1 WHERE seq IN ("
            f"SELECT seq FROM {table} WHERE sent_at IS NULL AND NOT (seq = ANY(CAST(:parked AS bigint[]))) "
            "ORDER BY seq LIMIT :batch FOR UPDATE SKIP LOCKED) "
            "AND set_config('synchronous_commit', 'off', true) IS NOT NULL RETURNING seq, envelope"
        ),
    )


def _insert_into(schema: str) -> str:
    return f"INSERT INTO {quoted_schema(schema)}.outbox (event_id, event_type, envelope) "


def _insert_several(schema: str, *, prefix: str = "", where: str = "") -> str:
    """The insert of several rows from three arrays (`:<prefix>event_ids`,
    `:<prefix>event_types`, `:<prefix>envelopes`), in their order."""
    return (
        _insert_into(schema)
        + "SELECT e.event_id, e.event_type, CAST(e.envelope AS jsonb) FROM unnest("
        + f"CAST(:{prefix}event_ids AS uuid[]), CAST(:{prefix}event_types AS text[]), CAST(:{prefix}envelopes AS text[])"
        + f") WITH ORDINALITY AS e (event_id, event_type, envelope, n){where} ORDER BY e.n"
    )


@dataclass(frozen=True, slots=True)
class WithEvents:
    """A statement that also writes its unit of work's outbox rows (`with_events`)."""

    schema: str
    quiet: Sql
    notifying: Sql


def with_events(schema: str, text: str, *, only_if: str | None = None) -> WithEvents:
    """`text`, a statement whose `WITH` list holds `{events}`, with the outbox insert of
    `<schema>.outbox` in that place: `WITH {events}, o AS (...) SELECT ...`.

    The rows come from the parameters `fetch_with_events` adds (`outbox_*`), in their
    order; none is a valid value. `only_if` names a CTE of the statement, listed before
    `{events}`: the rows are written only when it returns a row (an insert that found
    its key taken writes no event). Without it they are written with the statement,
    and are undone only with its transaction: a caller that finds the statement did
    not apply raises."""
    if "{events}" not in text:
        raise ValueError("the statement has no {events} place in its WITH list")
    gate = f"EXISTS (SELECT FROM {only_if})" if only_if else "true"

    def form(notify: str) -> Sql:
        events = f"prost_events AS ({_insert_several(schema, prefix='outbox_', where=f' WHERE {gate}{notify}')})"
        return Sql(text.replace("{events}", events))

    return WithEvents(schema=schema, quiet=form(""), notifying=form(" AND pg_notify(:outbox_channel, '') IS NOT NULL"))


async def fetch_with_events(
    session: Session, statement: WithEvents, envelopes: Sequence[Envelope], /, **params: Any
) -> list[asyncpg.Record]:
    """Run `statement` with `envelopes` (all of its schema) as its outbox rows: one
    round trip for both. They are published if and only if what ran commits."""
    schema = statement.schema
    if any(envelope.producer != schema for envelope in envelopes):
        raise ValueError(f"every event of this statement must be produced by {schema}")
    arrays = {
        "outbox_event_ids": [e.event_id for e in envelopes],
        "outbox_event_types": [e.event_type for e in envelopes],
        "outbox_envelopes": [e.to_json().decode() for e in envelopes],
    }
    if not envelopes:  # nothing to publish: no relay to wake
        return await session.fetch(statement.quiet, **params, **arrays)
    return await _write(session, schema, (statement.quiet, statement.notifying), **params, **arrays)


async def add_to_outbox(session: Session, envelope: Envelope) -> None:
    """Queue `envelope` for publishing in `<envelope.producer>.outbox`, in the caller's
    transaction: it is published if and only if that transaction commits."""
    statements = _statements(envelope.producer)
    await _write(
        session,
        envelope.producer,
        (statements.one_quiet, statements.one),
        event_id=envelope.event_id,
        event_type=envelope.event_type,
        envelope=envelope.to_json().decode(),
    )


async def add_all_to_outbox(session: Session, envelopes: Sequence[Envelope]) -> None:
    """`add_to_outbox` for several envelopes, in their order: one statement per producer schema."""
    by_schema: dict[str, list[Envelope]] = {}
    for envelope in envelopes:
        by_schema.setdefault(envelope.producer, []).append(envelope)
    for schema, group in by_schema.items():
        if len(group) == 1:
            await add_to_outbox(session, group[0])
            continue
        statements = _statements(schema)
        await _write(
            session,
            schema,
            (statements.several_quiet, statements.several),
            event_ids=[e.event_id for e in group],
            event_types=[e.event_type for e in group],
            envelopes=[e.to_json().decode() for e in group],
        )


async def _write(session: Session, schema: str, forms: tuple[Sql, Sql], **params: Any) -> list[asyncpg.Record]:
    """Run the `(quiet, notifying)` forms of a statement that writes outbox rows: quiet
    when a relay of this process will be woken after the commit instead (registered
    once the statement ran), else the form that notifies (`:outbox_channel`)."""
    quiet, notifying = forms
    if relays := _local_relays_to_wake(session, schema):
        found = await session.fetch(quiet, **params)
        session.after_commit(functools.partial(_wake_all, relays))
        return found
    return await session.fetch(notifying, **params, outbox_channel=channel(schema))


# -- waking the relays of this process ---------------------------------------------------

_local_relays: dict[tuple[asyncio.AbstractEventLoop, AsyncEngine, str], list[OutboxRelay]] = {}
"""The relays running in this process, by their event loop, the engine they read and
their schema (a relay can only be woken from its own loop)."""


def _local_relays_to_wake(session: Session, schema: str) -> list[OutboxRelay] | None:
    """When a relay of this process reads `schema` through the session's own engine and
    is publishing normally, the relays to wake once the session commits (the writer
    registers that after its statement ran: outside a transaction, `after_commit` calls
    at once) and sends no NOTIFY. Otherwise None, and the writer notifies.

    A NOTIFY is dear on this path: PostgreSQL signals every listening backend at each
    commit, and each wakes its client (`bench/messaging.py`: about a tenth of the whole
    delivery's CPU). The rows of a service are written where its relay runs (the
    embedded mode, and each service process of the distributed one), so that relay is
    told in-process, for nothing. Replicas elsewhere are not woken for the row; this
    relay publishes it. NOTIFY stays for writers without a healthy relay beside them
    (a CLI command, a relay backing off after failures): the relays of other processes
    then wake as before."""
    relays = _local_relays.get((asyncio.get_running_loop(), session.engine, schema))
    if not relays or not any(relay.healthy for relay in relays):
        return None
    return relays


def _wake_all(relays: list[OutboxRelay]) -> None:
    for relay in relays:
        relay.wake()


def listen_dsn(engine: AsyncEngine) -> str:
    """A plain `postgresql://` DSN for asyncpg from the engine's URL (keeps `?host=`)."""
    return engine.url.set(drivername="postgresql").render_as_string(hide_password=False)


class OutboxRelay:
    """Publishes one schema's outbox; safe to run in several replicas at once."""

    def __init__(
        self,
        engine: AsyncEngine,
        bus: MessageBus,
        schema: str,
        *,
        batch_size: int = 200,
        poll_seconds: float = 2.0,
        retention_hours: float = 24,
        publish_timeout: float = 60.0,
        purge_every_seconds: float = 300.0,
    ) -> None:
        self.engine = engine
        self.bus = bus
        self.schema = schema
        self.batch_size = batch_size
        self.poll_seconds = poll_seconds
        self.retention = timedelta(hours=retention_hours)
        self.publish_timeout = publish_timeout
        self.purge_every_seconds = purge_every_seconds
        self.table = outbox_of(schema)
        self._claim = _statements(schema).claim
        self._wake = asyncio.Event()
        # seq -> monotonic time before which this relay does not retry an unroutable row.
        self._parked: dict[int, float] = {}
        self.listening = asyncio.Event()
        """Set while the LISTEN connection is up (tests and readiness can wait on it)."""
        self.healthy = False
        """True while `run()` goes and its last batch did not fail: this process's writers
        then wake it themselves instead of notifying (`_local_relays_to_wake`)."""

    def wake(self) -> None:
        """Look for unsent rows now (a writer of this process committed some)."""
        self._wake.set()

    # -- one batch -------------------------------------------------------------------

    async def relay_once(self) -> int:
        """Publish one batch; returns how many rows were marked sent.

        Raises `PublishError` (after committing whatever was confirmed) when the bus
        failed for a reason other than `Unroutable`, so the caller backs off."""
        _claimed, sent = await self._relay_batch()
        return sent

    async def _relay_batch(self) -> tuple[int, int]:
        now = time.monotonic()
        self._parked = {seq: until for seq, until in self._parked.items() if until > now}
        transient: PublishError | None = None
        async with db.transaction(self.engine) as session:
            rows = await session.fetch(self._claim, parked=list(self._parked), batch=self.batch_size)
            rows.sort(key=lambda row: row[0])
            if not rows:
                return 0, 0
            by_id: dict[str, int] = {}
            envelopes: list[Envelope] = []
            for seq, raw in rows:
                envelope = Envelope.model_validate(raw)
                by_id[str(envelope.event_id)] = seq
                envelopes.append(envelope)
            try:
                async with asyncio.timeout(self.publish_timeout):
                    await self.bus.publish(envelopes)
            except TimeoutError as exc:
                # Nothing is known to be confirmed: roll back, rows stay unsent.
                raise PublishError(f"publish timed out after {self.publish_timeout:g} s") from exc
            except PublishError as exc:
                if not exc.sent and not exc.failed:
                    raise  # the whole batch failed the same way (broker down): roll back
                confirmed = {by_id[str(i)] for i in exc.sent if str(i) in by_id}
                await self._put_back(session, exc, by_id, [seq for seq, _ in rows if seq not in confirmed])
                unroutable = {str(i) for i, e in exc.failed.items() if isinstance(e, Unroutable)}
                if len(confirmed) + len(unroutable) < len(rows):
                    transient = exc  # some failed, or were not heard of: back off, try again
                claimed, sent = len(rows), len(confirmed)
            else:
                claimed, sent = len(rows), len(rows)
        if transient is not None:
            raise transient
        return claimed, sent

    async def _put_back(
        self, session: Session, exc: PublishError, by_id: dict[str, int], unconfirmed: list[int]
    ) -> None:
        """Rows of a claimed batch the broker did not confirm: unsent again, with the
        error of those that failed (the attempt counts); unroutable ones are parked."""
        t = self.table
        await session.execute(sa.update(t).where(t.c.seq.in_(unconfirmed)).values(sent_at=None))
        for event_id, error in exc.failed.items():
            if (seq := by_id.get(str(event_id))) is None:
                continue
            attempts = await session.scalar(
                sa.update(t).where(t.c.seq == seq).values(last_error=str(error)[:2000]).returning(t.c.attempts)
            )
            if isinstance(error, Unroutable):
                delay = min(2.0 ** (attempts or 1), _UNROUTABLE_MAX_DELAY)
                self._parked[seq] = time.monotonic() + delay
                log.error(
                    "outbox %s: event %s (seq %d) is unroutable, no queue is bound for it; "
                    "kept unsent (attempt %d), retrying in %.0f s: %s",
                    self.schema,
                    event_id,
                    seq,
                    attempts,
                    delay,
                    error,
                    extra={"event_id": str(event_id)},
                )

    # -- housekeeping ----------------------------------------------------------------

    async def purge(self) -> int:
        """Delete sent rows older than the retention; returns how many."""
        t = self.table
        cutoff = datetime.now(UTC) - self.retention
        total = 0
        while True:
            victims = (
                sa.select(t.c.seq)
                .where(t.c.sent_at.is_not(None), t.c.sent_at < cutoff)
                .limit(_PURGE_CHUNK)
                .with_for_update(skip_locked=True)
                .scalar_subquery()
            )
            async with db.transaction(self.engine) as session:
                deleted = (await session.execute(sa.delete(t).where(t.c.seq.in_(victims)))).rowcount
            total += deleted
            if deleted < _PURGE_CHUNK:
                return total

    # -- the loop --------------------------------------------------------------------

    async def run(self) -> None:
        """Relay until cancelled: on every notification, and every `poll_seconds`."""
        helpers = [
            asyncio.create_task(self._listen(), name=f"{self.schema}.outbox-listen"),
            asyncio.create_task(self._purge_every(), name=f"{self.schema}.outbox-purge"),
        ]
        backoff = _BACKOFF_MIN
        here = (asyncio.get_running_loop(), self.engine, self.schema)
        neighbours = _local_relays.setdefault(here, [])
        neighbours.append(self)
        self.healthy = True
        try:
            while True:
                self._wake.clear()
                try:
                    claimed, _ = await self._relay_batch()
                except _RELAY_ERRORS as exc:
                    self.healthy = False  # writers notify again: other processes' relays may do better
                    log.warning("outbox %s: publishing failed (%s); retrying in %.1f s", self.schema, exc, backoff)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, _BACKOFF_MAX)
                    continue
                self.healthy = True
                backoff = _BACKOFF_MIN
                if claimed >= self.batch_size:
                    continue  # a full batch: more are probably waiting
                # A short batch took every row committed before it started; a row committed
                # since has notified, which set `_wake` again: no empty claim just to check.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.poll_seconds):
                        await self._wake.wait()
        finally:
            self.healthy = False
            neighbours.remove(self)
            if not neighbours:
                _local_relays.pop(here, None)
            for helper in helpers:
                helper.cancel()
            for helper in helpers:
                with contextlib.suppress(asyncio.CancelledError):
                    await helper

    async def _purge_every(self) -> None:
        """Purge beside the publishing, never in its way: a purge of a day's rows takes
        seconds, and no row waits for it to end."""
        while True:
            await asyncio.sleep(self.purge_every_seconds)
            try:
                purged = await self.purge()
            except db.DATABASE_ERRORS as exc:
                log.warning("outbox %s: purge failed: %s", self.schema, exc)
            else:
                if purged:
                    log.info("outbox %s: purged %d sent rows", self.schema, purged)

    async def _listen(self) -> None:
        """Keep one LISTEN connection; wake the loop on our schema's notifications."""
        dsn = listen_dsn(self.engine)
        delay = _BACKOFF_MIN

        def on_notify(_conn: Any, _pid: int, _channel: str, _payload: str) -> None:
            self._wake.set()

        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(
                    dsn, server_settings={"application_name": f"{LISTEN_APPLICATION_NAME}:{self.schema}"}
                )
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                await conn.add_listener(channel(self.schema), on_notify)
                self.listening.set()
                self._wake.set()  # catch up on whatever was committed while we were not listening
                delay = _BACKOFF_MIN
                while not lost.is_set():
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(max(self.poll_seconds, 5.0)):
                            await lost.wait()
                    if not lost.is_set():
                        # A half-open TCP connection says nothing; ask it something.
                        await conn.fetchval("SELECT 1", timeout=5)
                log.warning("outbox %s: listen connection lost; reconnecting", self.schema)
            except asyncio.CancelledError:
                raise
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                log.warning("outbox %s: listen connection failed (%s); retrying in %.1f s", self.schema, exc, delay)
            finally:
                self.listening.clear()
                if conn is not None and not conn.is_closed():
                    conn.terminate()
            await asyncio.sleep(delay)
            delay = min(delay * 2, _BACKOFF_MAX)
