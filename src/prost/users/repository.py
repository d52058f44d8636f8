"""The users schema's queries; nothing else touches these tables.

`UserRepository` reads and writes `users.users`; the unique indexes on `lower(email)`
and `lower(username)` decide races between two registrations (or a registration and a
profile change), and their violations become `EmailTaken` / `UsernameTaken`.

`LoginAttemptRepository` keeps the failed-login sliding window in
`users.login_attempts`, so every replica sees the same counts:

1. `open(...)`, in a short transaction: for each key (the account, then the client
   address, always in that order so two logins cannot deadlock) take a transaction
   advisory lock on the key, look at the newest `limit` attempts inside the window,
   and refuse with `RateLimited` (Retry-After = when the oldest of them leaves the
   window) when the window is full; otherwise insert one attempt row per key.
   The lock makes check-and-insert atomic, so parallel guesses cannot overshoot.
2. the password is checked outside any transaction (bcrypt is slow);
3. success: `close(ids)` deletes the attempt rows; failure: they stay and count.

A crash between 1 and 3 leaves an attempt counted: harmless, it ages out.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from prost.kit.db import Session
from prost.kit.errors import RateLimited
from prost.users.domain import EmailTaken, LoginLimits, UsernameTaken
from prost.users.tables import login_attempts, users


@dataclass(frozen=True, slots=True)
class UserRow:
    id: uuid.UUID
    email: str
    username: str
    password_hash: str
    role: str
    credentials_version: int
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, row: Any) -> UserRow:
        return cls(**row._mapping)

    def public(self) -> dict[str, Any]:
        """The contract's user: never the hash."""
        return {
            "id": self.id,
            "email": self.email,
            "username": self.username,
            "role": self.role,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


_COLUMNS = (
    users.c.id,
    users.c.email,
    users.c.username,
    users.c.password_hash,
    users.c.role,
    users.c.credentials_version,
    users.c.created_at,
    users.c.updated_at,
)


def _taken(exc: IntegrityError) -> EmailTaken | UsernameTaken | None:
    text = str(exc.orig)
    if "uq_users_email_lower" in text:
        return EmailTaken()
    if "uq_users_username_lower" in text:
        return UsernameTaken()
    return None


class UserRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    async def add(self, *, email: str, username: str, password_hash: str, role: str) -> UserRow:
        """Insert a user; `EmailTaken` / `UsernameTaken` when either is taken (any case).

        The caller's transaction is unusable after a conflict: let it roll back."""
        stmt = (
            sa.insert(users)
            .values(id=uuid.uuid4(), email=email, username=username, password_hash=password_hash, role=role)
            .returning(*_COLUMNS)
        )
        try:
            row = (await self.session.execute(stmt)).one()
        except IntegrityError as exc:
            raise (_taken(exc) or exc) from exc
        return UserRow.of(row)

    async def get(self, user_id: uuid.UUID, *, for_update: bool = False) -> UserRow | None:
        stmt = sa.select(*_COLUMNS).where(users.c.id == user_id)
        if for_update:
            stmt = stmt.with_for_update()
        row = (await self.session.execute(stmt)).first()
        return UserRow.of(row) if row is not None else None

    async def get_by_email(self, email: str) -> UserRow | None:
        stmt = sa.select(*_COLUMNS).where(sa.func.lower(users.c.email) == email.lower())
        row = (await self.session.execute(stmt)).first()
        return UserRow.of(row) if row is not None else None

    async def username_taken(self, username: str) -> bool:
        stmt = sa.select(users.c.id).where(sa.func.lower(users.c.username) == username.lower())
        return (await self.session.scalar(stmt)) is not None

    async def update(
        self,
        user_id: uuid.UUID,
        *,
        username: str | None = None,
        email: str | None = None,
        password_hash: str | None = None,
        role: str | None = None,
        bump_credentials: bool = False,
    ) -> UserRow:
        values: dict[str, Any] = {"updated_at": sa.func.now()}
        if username is not None:
            values["username"] = username
        if email is not None:
            values["email"] = email
        if password_hash is not None:
            values["password_hash"] = password_hash
        if role is not None:
            values["role"] = role
        if bump_credentials:
            values["credentials_version"] = users.c.credentials_version + 1
        stmt = sa.update(users).where(users.c.id == user_id).values(**values).returning(*_COLUMNS)
        try:
            row = (await self.session.execute(stmt)).one()
        except IntegrityError as exc:
            raise (_taken(exc) or exc) from exc
        return UserRow.of(row)

    async def changed_credentials(self) -> list[tuple[uuid.UUID, int]]:
        """Users whose credentials changed at least once (to refuse their older tokens)."""
        stmt = sa.select(users.c.id, users.c.credentials_version).where(users.c.credentials_version > 0)
        return [(r.id, r.credentials_version) for r in await self.session.execute(stmt)]


@dataclass(frozen=True, slots=True)
class AttemptKey:
    scope: str  # "account" | "address"
    key: str


class LoginAttemptRepository:
    def __init__(self, session: Session, limits: LoginLimits) -> None:
        self.session = session
        self.limits = limits

    def _recent(self, k: AttemptKey, limit: int) -> sa.Select[Any]:
        window = sa.func.make_interval(0, 0, 0, 0, 0, 0, self.limits.window_seconds)
        return (
            sa.select(login_attempts.c.attempted_at)
            .where(
                login_attempts.c.scope == k.scope,
                login_attempts.c.key == k.key,
                login_attempts.c.attempted_at > sa.func.now() - window,
            )
            .order_by(login_attempts.c.attempted_at.desc())
            .limit(limit)
        )

    async def open(self, keys: list[AttemptKey]) -> list[int]:
        """Refuse when any key's window is full, else count one attempt per key (ids)."""
        for k in keys:
            await self.session.execute(
                sa.select(
                    sa.func.pg_advisory_xact_lock(sa.func.hashtextextended(f"prost.users.login:{k.scope}:{k.key}", 0))
                )
            )
        # One round trip for every key's newest attempts (at most `limit` each) and the time.
        recents = [self._recent(k, self.limits.limit_for(k.scope)).subquery() for k in keys]
        rows = (
            await self.session.execute(
                sa.union_all(
                    sa.select(sa.literal(-1).label("i"), sa.func.now().label("at")),
                    *(sa.select(sa.literal(i).label("i"), r.c.attempted_at) for i, r in enumerate(recents)),
                )
            )
        ).all()
        now: datetime = next(r.at for r in rows if r.i == -1)
        for i, k in enumerate(keys):
            limit = self.limits.limit_for(k.scope)
            recent = [r.at for r in rows if r.i == i]
            if len(recent) >= limit:
                # The window frees a slot when the oldest of the newest `limit` leaves it.
                frees_at = min(recent).timestamp() + self.limits.window_seconds
                retry_after = max(1, math.ceil(frees_at - now.timestamp()))
                raise RateLimited(f"too many failed logins; try again in {retry_after} s", retry_after=retry_after)
        stmt = (
            sa.insert(login_attempts)
            .values([{"scope": k.scope, "key": k.key} for k in keys])
            .returning(login_attempts.c.id)
        )
        return list(await self.session.scalars(stmt))

    async def close(self, ids: list[int]) -> None:
        """The password was right: these attempts were not failures."""
        if ids:
            await self.session.execute(sa.delete(login_attempts).where(login_attempts.c.id.in_(ids)))

    async def purge(self) -> int:
        """Delete attempts that left the window (any replica may run it)."""
        window = sa.func.make_interval(0, 0, 0, 0, 0, 0, self.limits.window_seconds)
        result = await self.session.execute(
            sa.delete(login_attempts).where(login_attempts.c.attempted_at <= sa.func.now() - window)
        )
        return int(result.rowcount or 0)
