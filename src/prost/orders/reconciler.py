"""The saga reconciler: drives on sagas that made no progress past their deadline.

A running step past `PROST_SAGA_STEP_TIMEOUT_SECONDS` is compensated (`timeout`); a
compensation nobody acknowledged is sent again, with growing delays. It is what makes
every saga end in a final state whatever was lost: an event parked as dead, a service
that was down, a crash between two steps.

Safe with replicas: each pass locks a batch of due sagas `FOR UPDATE SKIP LOCKED`,
so two reconcilers never take the same saga, and a saga an event handler or a user's
cancel holds is simply left for the next pass (the transition under way moves it on).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from prost.kit import db
from prost.kit.logs import correlation_id_var
from prost.kit.service import ServiceContext
from prost.orders import saga as sg
from prost.orders.repository import SagaRepository, utcnow

log = logging.getLogger("prost.orders.reconciler")

BATCH = 50


async def reconcile_once(
    engine: AsyncEngine, policy: sg.Policy, *, now: datetime | None = None, limit: int = BATCH
) -> int:
    """One pass over due sagas; returns how many it took."""
    now = now or utcnow()
    async with db.transaction(engine) as session:
        sagas = SagaRepository(session)
        due = await sagas.due(now, limit=limit)
        for current in due:
            decision = sg.decide(current, sg.DeadlinePassed(), now=now, policy=policy)
            if decision.changed:
                token = correlation_id_var.set(str(current.order_id))
                try:
                    log.info(
                        "saga %s: deadline passed in %s; now %s (%s)",
                        current.order_id,
                        current.step.value,
                        decision.saga.step.value,
                        decision.saga.order_status.value,
                    )
                finally:
                    correlation_id_var.reset(token)
            await sagas.apply(current, decision, caused_by=None, now=now)
    return len(due)


async def reconcile_sagas(ctx: ServiceContext) -> None:
    """Background loop: a pass every `PROST_SWEEP_INTERVAL_SECONDS` (at once again
    while passes come back full)."""
    policy = sg.Policy.from_settings(ctx.settings)
    interval = max(0.05, ctx.settings.sweep_interval_seconds)
    while True:
        try:
            taken = await reconcile_once(ctx.engine, policy)
        except db.DATABASE_ERRORS as exc:
            log.warning("saga reconciler pass failed (%s); retrying", exc)
            taken = 0
        if taken < BATCH:
            await asyncio.sleep(interval)
