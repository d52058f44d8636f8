"""The admin account: made sure of at start-up (`PROST_ADMIN_EMAIL`/`PROST_ADMIN_PASSWORD`)
and by `prost users create-admin`.

`ensure_admin` runs in one transaction under an advisory lock, so two replicas
starting at once (or a replica and the command) cannot both create the account:
the second one finds it. An existing account with that email is promoted to `admin`.
Its password is replaced only when asked (`reset_password=True`, the command line)
and only when it differs; a replaced password raises `credentials_version` and is
announced like any other credentials change. At start-up an existing password is
left alone, so a password the admin changed through the API survives a restart.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from prost.contracts.users import UserCredentialsChanged, UserRegistered
from prost.kit import db, outbox
from prost.kit.messages import Envelope
from prost.users import domain
from prost.users.passwords import PasswordHasher
from prost.users.repository import UserRepository, UserRow

log = logging.getLogger("prost.users")

_LOCK = "prost.users.ensure_admin"


@dataclass(frozen=True, slots=True)
class AdminResult:
    user: UserRow
    action: str  # "created" | "promoted" | "password_reset" | "unchanged"


async def ensure_admin(
    engine: AsyncEngine, hasher: PasswordHasher, *, email: str, password: str, reset_password: bool = False
) -> AdminResult:
    """Make sure an account with this email exists with role `admin`."""
    email = domain.normalize_email(email)
    domain.check_new_password(password)
    new_hash = await hasher.hash(password)
    async with db.autocommit(engine) as conn:
        existing = await UserRepository(conn).get_by_email(email)
    # Check the current password off the loop before the transaction, not inside it.
    same_password = existing is not None and await hasher.verify(password, existing.password_hash)
    for attempt in range(3):
        try:
            return await _ensure(
                engine,
                email=email,
                new_hash=new_hash,
                reset_password=reset_password,
                same_password=same_password,
                existing=existing,
            )
        except domain.UsernameTaken:
            # A registration took the chosen username between our check and insert.
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


async def _ensure(
    engine: AsyncEngine,
    *,
    email: str,
    new_hash: str,
    reset_password: bool,
    same_password: bool,
    existing: UserRow | None,
) -> AdminResult:
    async with db.transaction(engine) as session:
        await session.execute(sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtextextended(_LOCK, 0))))
        repo = UserRepository(session)
        user = await repo.get_by_email(email)
        if user is None:
            user = await repo.add(
                email=email, username=await _free_username(repo, email), password_hash=new_hash, role=domain.ROLE_ADMIN
            )
            event = UserRegistered(user_id=user.id, email=user.email, username=user.username, role=user.role)
            await outbox.add_to_outbox(session, Envelope.wrap(event, producer="users", correlation_id=user.id))
            return AdminResult(user, "created")
        reset = reset_password and not (same_password and existing is not None and existing.id == user.id)
        if user.role == domain.ROLE_ADMIN and not reset:
            return AdminResult(user, "unchanged")
        action = "password_reset" if reset else "promoted"
        user = await repo.update(
            user.id,
            role=domain.ROLE_ADMIN,
            password_hash=new_hash if reset else None,
            bump_credentials=reset,
        )
        if reset:
            event2 = UserCredentialsChanged(user_id=user.id, version=user.credentials_version)
            await outbox.add_to_outbox(session, Envelope.wrap(event2, producer="users", correlation_id=user.id))
        return AdminResult(user, action)


async def _free_username(repo: UserRepository, email: str) -> str:
    base = domain.admin_username_base(email)
    candidate = base
    while await repo.username_taken(candidate):
        candidate = f"{base[:24]}-{uuid.uuid4().hex[:6]}"
    return candidate
