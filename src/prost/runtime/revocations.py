"""Keeping every process's view of revoked tokens current, without a lookup per request.

A process that verifies tokens (the gateway and every service) listens for
`user.credentials_changed` on the bus (`MessageBus.listen`: every process gets every
such event) and loads a snapshot of all credentials versions from the users service
at start and every `REFRESH_SECONDS` after, which covers events sent while it was not
listening (before it started, or while its broker connection was down). A token
whose `ver` is below its user's latest version is then refused everywhere.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

from prost.contracts.users import UserCredentialsChanged
from prost.kit.auth import TokenRevocations
from prost.kit.bus.base import MessageBus
from prost.kit.clients import ServiceClients
from prost.kit.errors import DomainError
from prost.kit.messages import Envelope

log = logging.getLogger("prost.runtime")

REFRESH_SECONDS = 60.0


async def listen_for_revocations(bus: MessageBus, revocations: TokenRevocations) -> None:
    async def on_change(envelope: Envelope) -> None:
        change = UserCredentialsChanged.model_validate(envelope.payload)
        revocations.revoke_before(change.user_id, change.version)

    await bus.listen([UserCredentialsChanged.TYPE], on_change)


async def load_snapshot(clients: ServiceClients, revocations: TokenRevocations) -> int:
    body = await clients["users"].get("/internal/users/credential-versions")
    items = body["items"]
    for item in items:
        revocations.revoke_before(uuid.UUID(item["user_id"]), int(item["version"]))
    return len(items)


async def keep_snapshot_fresh(clients: ServiceClients, revocations: TokenRevocations) -> None:
    """Runs until cancelled: load at once (retrying quickly until the users service
    answers), then again every `REFRESH_SECONDS`."""
    delay = 0.2
    while True:
        try:
            await load_snapshot(clients, revocations)
        except (DomainError, KeyError, ValueError, TypeError) as exc:
            log.warning("could not load token revocations (%s); retrying in %.1f s", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)
            continue
        delay = 0.2
        await asyncio.sleep(REFRESH_SECONDS)
