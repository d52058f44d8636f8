"""HTTP `Idempotency-Key` (API.md conventions; the Stripe / IETF draft semantics).

A request that carries a key is remembered in the service's own
`idempotency_records` as `(kind='http', scope, user_id, key)` with a fingerprint of
its body and, once it succeeded, its response (status and JSON body):

    same user + scope + key, same body      → the first response again, nothing new is made
    same user + scope + key, another body   → 422 `idempotency_key_reused`
    same key while the first is still open  → waits for it (the unique index holds the
                                              second insert), then replays its response;
                                              a record left open on purpose (`begin` in a
                                              transaction of its own) answers 409 `conflict`
    another user's identical key            → a different request
    a request that fails (4xx/5xx)          → stores nothing: its transaction rolls back

The usual flow puts the record in the same transaction as the effect, so the effect
and the remembered response commit together or not at all::

    key = idempotency.parse_key(request.headers.get("Idempotency-Key"))   # 422 if malformed
    req = idempotency.IdempotentRequest(scope="orders.create", user_id=u, key=key,
                                        fingerprint=idempotency.fingerprint(raw_body, secret=s))
    if (hit := await store.replay(conn, req)) is not None:                # cheap early exit
        return hit.response()
    ... slow work (calls to other services) ...
    async with db.transaction(engine) as session:
        if (hit := await store.claim(session, req)) is not None:          # lost a race
            return hit.response()                                         # (rolls back)
        ... the effect ...
        await store.complete(session, req, status_code=202, body=body)

Fingerprints are keyed (HMAC-SHA256 with a server secret) over the canonical JSON of
the body, so a stored fingerprint says nothing about a card number inside the body.
Records older than the retention (24 h) are purged by `purge_expired`, which a
service runs in a background loop (`purge_loop`); replicas delete disjoint chunks.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.ext.asyncio import AsyncEngine

from prost.kit import db
from prost.kit.db import Session, idempotency_of
from prost.kit.errors import Conflict, IdempotencyKeyReused, JSONBody, ValidationFailed
from prost.kit.service import BackgroundLoop, ServiceContext

log = logging.getLogger("prost.idempotency")

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255
RETENTION = timedelta(hours=24)
_PURGE_CHUNK = 1000


def parse_key(raw: str | None) -> str | None:
    """The header's value, or None when absent; 422 when empty, too long or with
    control characters."""
    if raw is None:
        return None
    if raw == "" or raw.strip() == "":
        raise ValidationFailed(f"{HEADER} must not be empty")
    if len(raw) > MAX_KEY_LENGTH:
        raise ValidationFailed(f"{HEADER} must be at most {MAX_KEY_LENGTH} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in raw):
        raise ValidationFailed(f"{HEADER} must not contain control characters")
    return raw


def canonical_json(body: bytes | str | Any) -> bytes:
    """Bytes that are equal for equal JSON documents (keys sorted, no whitespace)."""
    value = orjson.loads(body) if isinstance(body, bytes | str) else body
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)


def fingerprint(body: bytes | str | Any, *, secret: str | bytes) -> str:
    """Keyed fingerprint of a JSON body (HMAC-SHA256, hex)."""
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(key, canonical_json(body), hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class IdempotentRequest:
    scope: str
    """What kind of request (`orders.create`, `cart.checkout`); keys are per scope."""
    user_id: uuid.UUID
    key: str
    fingerprint: str


@dataclass(frozen=True, slots=True)
class StoredResponse:
    status_code: int
    body: Any

    def response(self, headers: dict[str, str] | None = None) -> JSONBody:
        sent = {"Idempotent-Replayed": "true", **(headers or {})}
        return JSONBody(self.body, status_code=self.status_code, headers=sent)


class IdempotencyStore:
    """Idempotency-Key records in one service schema's `idempotency_records`."""

    def __init__(self, schema: str) -> None:
        self.schema = schema
        self.table = idempotency_of(schema)

    def _where(self, req: IdempotentRequest) -> sa.ColumnElement[bool]:
        t = self.table
        return sa.and_(t.c.kind == "http", t.c.scope == req.scope, t.c.user_id == req.user_id, t.c.key == req.key)

    async def replay(self, session: Session, req: IdempotentRequest) -> StoredResponse | None:
        """The stored response for this request, or None if the key is new.

        Raises `IdempotencyKeyReused` for another body under the same key, `Conflict`
        while a record begun with `begin` has no response yet."""
        t = self.table
        row = (
            await session.execute(sa.select(t.c.fingerprint, t.c.status_code, t.c.response).where(self._where(req)))
        ).first()
        if row is None:
            return None
        if not hmac.compare_digest(row.fingerprint or "", req.fingerprint):
            raise IdempotencyKeyReused()
        if row.status_code is None:
            raise Conflict(f"a request with this {HEADER} is still being processed")
        return StoredResponse(status_code=row.status_code, body=row.response)

    async def claim(self, session: Session, req: IdempotentRequest) -> StoredResponse | None:
        """Insert the record in the caller's transaction. Returns None when this request
        owns the key (go on, then `complete`); otherwise what `replay` says about the
        request that owns it (a concurrent owner is waited for by the unique index).
        """
        t = self.table
        stmt = (
            pg.insert(t)
            .values(kind="http", scope=req.scope, user_id=req.user_id, key=req.key, fingerprint=req.fingerprint)
            .on_conflict_do_nothing(index_elements=[t.c.scope, t.c.user_id, t.c.key])
            .returning(t.c.id)
        )
        if (await session.execute(stmt)).first() is not None:
            return None
        hit = await self.replay(session, req)
        if hit is None:  # purged between the two statements: extremely unlikely; say busy
            raise Conflict(f"a request with this {HEADER} is still being processed")
        return hit

    async def complete(self, session: Session, req: IdempotentRequest, *, status_code: int, body: Any) -> None:
        """Store the response of the request that owns the key (same transaction as its effect)."""
        t = self.table
        await session.execute(
            sa.update(t)
            .where(self._where(req))
            .values(status_code=status_code, response=body, completed_at=sa.func.now())
        )

    async def begin(self, engine: AsyncEngine, req: IdempotentRequest) -> StoredResponse | None:
        """For flows that cannot keep one transaction open: commit an open record now
        (concurrent duplicates then get 409 `conflict`), `complete` it later, or
        `abandon` it when the request fails so that a retry can run."""
        async with db.transaction(engine) as session:
            return await self.claim(session, req)

    async def abandon(self, session: Session, req: IdempotentRequest) -> None:
        t = self.table
        await session.execute(sa.delete(t).where(self._where(req), t.c.status_code.is_(None)))

    async def purge_expired(self, engine: AsyncEngine, *, older_than: timedelta = RETENTION) -> int:
        """Delete HTTP records older than `older_than`, in chunks; returns how many."""
        t = self.table
        cutoff = datetime.now(UTC) - older_than
        total = 0
        while True:
            victims = (
                sa.select(t.c.id)
                .where(t.c.kind == "http", t.c.created_at < cutoff)
                .limit(_PURGE_CHUNK)
                .with_for_update(skip_locked=True)
                .scalar_subquery()
            )
            async with db.transaction(engine) as session:
                deleted = (await session.execute(sa.delete(t).where(t.c.id.in_(victims)))).rowcount
            total += deleted
            if deleted < _PURGE_CHUNK:
                return total


def purge_loop(store: IdempotencyStore, *, every_seconds: float = 300.0) -> BackgroundLoop:
    """A background loop (for a `ServiceDefinition`) that purges expired keys."""

    async def purge_idempotency_keys(ctx: ServiceContext) -> None:
        while True:
            try:
                purged = await store.purge_expired(ctx.engine)
            except db.DATABASE_ERRORS as exc:
                log.warning("%s: purging idempotency keys failed: %s", store.schema, exc)
            else:
                if purged:
                    log.info("%s: purged %d idempotency keys older than 24 h", store.schema, purged)
            await asyncio.sleep(every_seconds)

    return purge_idempotency_keys
