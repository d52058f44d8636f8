"""The users service, wired: routes, subscriptions, start-up steps and loops.

Start-up (in order): warm the bcrypt pool (so the first unknown-email login takes no
longer than any other), refuse the tokens older than each user's last credentials
change, and make sure of the admin account when `PROST_ADMIN_EMAIL` and
`PROST_ADMIN_PASSWORD` are set. Background: purge login attempts that left the
window; close the bcrypt pool when the service stops.
"""

from __future__ import annotations

import asyncio
import logging

from prost.kit import db
from prost.kit.service import ServiceContext, ServiceDefinition
from prost.users import api, handlers, internal
from prost.users.admin import ensure_admin
from prost.users.repository import LoginAttemptRepository, UserRepository

log = logging.getLogger("prost.users")

PURGE_EVERY_SECONDS = 60.0


async def warm_password_pool(ctx: ServiceContext) -> None:
    await api.password_hasher(ctx).dummy_hash()


async def load_token_revocations(ctx: ServiceContext) -> None:
    if ctx.auth.revocations is None:
        return
    async with db.autocommit(ctx.engine) as conn:
        for user_id, version in await UserRepository(conn).changed_credentials():
            ctx.auth.revocations.revoke_before(user_id, version)


async def ensure_admin_account(ctx: ServiceContext) -> None:
    s = ctx.settings
    if not s.admin_email or s.admin_password is None:
        return
    result = await ensure_admin(
        ctx.engine, api.password_hasher(ctx), email=s.admin_email, password=s.admin_password.get_secret_value()
    )
    if result.action != "unchanged":
        log.info("admin account %s: %s", result.user.email, result.action)


async def purge_login_attempts(ctx: ServiceContext) -> None:
    """Delete login attempts older than the window; any number of replicas may run it."""
    limits = api.login_limits(ctx)
    while True:
        async with db.transaction(ctx.engine) as session:
            await LoginAttemptRepository(session, limits).purge()
        await asyncio.sleep(PURGE_EVERY_SECONDS)


async def close_password_pool(ctx: ServiceContext) -> None:
    """Idles until the service stops, then shuts the bcrypt threads down."""
    try:
        await asyncio.Event().wait()
    finally:
        api.password_hasher(ctx).close()


def definition() -> ServiceDefinition:
    return ServiceDefinition(
        name="users",
        public_routers=[api.router],
        internal_routers=[internal.router],
        subscriptions=handlers.SUBSCRIPTIONS,
        background=[purge_login_attempts, close_password_pool],
        on_startup=[warm_password_pool, load_token_revocations, ensure_admin_account],
    )
