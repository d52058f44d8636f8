"""The reservation sweeper: marks due holds and reservations `expired`, gives their
units back and announces `stock.released` (reason `expired`).

Expiry already counts without it (reads subtract due reservations, writers expire
what they need first); the sweeper makes it visible to the carts and the orders
service and keeps `products.reserved` close to the truth. Any number of replicas may
run it: each sweep locks the products it works on with `FOR UPDATE SKIP LOCKED`, so
two sweepers never take the same product, and a product busy with a writer is left
for the next round.
"""

from __future__ import annotations

import asyncio
import logging

from prost.catalog import inventory
from prost.catalog.repository import run_in_transaction
from prost.kit import db
from prost.kit.db import Session
from prost.kit.service import ServiceContext

log = logging.getLogger("prost.catalog.sweeper")


async def sweep_expired_reservations(ctx: ServiceContext) -> None:
    """Sweep until cancelled; right away again while there is work, else after
    `PROST_SWEEP_INTERVAL_SECONDS`."""

    async def sweep(session: Session) -> int:
        return await inventory.sweep_expired(session)

    while True:
        try:
            ended = await run_in_transaction(ctx.engine, sweep)
        except db.DATABASE_ERRORS as exc:
            log.warning("sweep failed (%s); trying again later", exc)
            ended = 0
        if ended:
            log.info("expired %d reservation(s)", ended)
            await asyncio.sleep(0)
        else:
            await asyncio.sleep(ctx.settings.sweep_interval_seconds)
