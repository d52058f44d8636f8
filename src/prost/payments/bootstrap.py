"""The payments service, wired: its internal route, its subscriptions, its provider, its
resumer, and the owner of provider work that outlives its message (cancelled at stop).

The provider is the one concrete thing chosen here: the simulated provider of
API.md's test cards, keeping its records in the payments schema, with
`PROST_PAYMENT_LATENCY_MS` of simulated latency. A context that already carries a
provider (a test's) keeps it.
"""

from __future__ import annotations

from prost.kit.service import ServiceContext, ServiceDefinition
from prost.payments import api, handlers
from prost.payments.provider import PROVIDER, PostgresLedger, SimulatedProvider


async def install_provider(ctx: ServiceContext) -> None:
    if PROVIDER not in ctx.extras:
        ctx.extras[PROVIDER] = SimulatedProvider(PostgresLedger(ctx.engine), latency_ms=ctx.settings.payment_latency_ms)


def definition() -> ServiceDefinition:
    return ServiceDefinition(
        name="payments",
        internal_routers=[api.router],
        subscriptions=handlers.SUBSCRIPTIONS,
        background=[handlers.resume_unsettled_payments, handlers.cancel_work_in_flight],
        on_startup=[install_provider],
    )
