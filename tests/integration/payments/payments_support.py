"""Shared parts of the payments suite.

- `context(engine, settings, provider)`: a payments `ServiceContext` on the run's
  database, so a test calls the handlers as the runtime would (a real engine, the
  simulated provider on its PostgreSQL ledger, or a wrapper of it);
- `requested(...)` / `refund_requested(...)`: the envelopes orders would publish;
- readers for the payment row, the outbox events of one order and the provider's
  record of one key;
- provider wrappers for the crash and race cases.
"""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from prost.contracts.orders import PaymentRefundRequested, PaymentRequested
from prost.kit.auth import TokenAuthority
from prost.kit.bus.memory import MemoryBus
from prost.kit.cards import PaymentCardIn
from prost.kit.clients import ServiceClients
from prost.kit.messages import Envelope
from prost.kit.service import ServiceContext
from prost.kit.settings import Settings
from prost.payments.provider import PROVIDER, Charge, PaymentProvider, PostgresLedger, Refund, SimulatedProvider
from prost.payments.tables import outbox, payments, provider_charges

GOOD = "4242424242424242"
DECLINED = "4000000000000002"
INSUFFICIENT = "4000000000009995"
FLAKY = "4000000000000119"
SILENT = "4000000000000341"
OTHER = "5555555555554444"
TEST_CARDS = (GOOD, DECLINED, INSUFFICIENT, FLAKY, SILENT, OTHER)


def simulated(engine: AsyncEngine) -> SimulatedProvider:
    return SimulatedProvider(PostgresLedger(engine))


def context(engine: AsyncEngine, settings: Settings, provider: PaymentProvider) -> ServiceContext:
    auth = TokenAuthority(secret="payments-test-" + "x" * 40)
    return ServiceContext(
        name="payments",
        settings=settings,
        engine=engine,
        bus=MemoryBus(),
        auth=auth,
        clients=ServiceClients(caller="payments", urls={}, auth=auth),
        extras={PROVIDER: provider},
    )


def card(number: str) -> PaymentCardIn:
    return PaymentCardIn(card_number=number, exp_month=12, exp_year=2035, cvc="123")


def requested(token: str, *, order_id: uuid.UUID | None = None, amount: str = "42.50") -> Envelope:
    order_id = order_id or uuid.uuid4()
    event = PaymentRequested(
        order_id=order_id,
        user_id=uuid.uuid4(),
        amount=Decimal(amount),
        currency="USD",
        payment_token=token,
        idempotency_key=f"order-{order_id}-charge",
    )
    return Envelope.wrap(event, producer="orders", correlation_id=order_id)


def refund_requested(order_id: uuid.UUID, payment_id: uuid.UUID | None = None) -> Envelope:
    event = PaymentRefundRequested(order_id=order_id, payment_id=payment_id, reason="timeout")
    return Envelope.wrap(event, producer="orders", correlation_id=order_id)


def order_of(envelope: Envelope) -> uuid.UUID:
    return uuid.UUID(envelope.payload["order_id"])


async def payment_row(engine: AsyncEngine, order_id: uuid.UUID) -> dict[str, Any] | None:
    async with engine.connect() as conn:
        row = (await conn.execute(sa.select(payments).where(payments.c.order_id == order_id))).first()
    return dict(row._mapping) if row is not None else None


async def events_for(engine: AsyncEngine, order_id: uuid.UUID) -> list[Envelope]:
    """Every event payments wrote to its outbox about one order, oldest first."""
    async with engine.connect() as conn:
        rows = (
            await conn.scalars(
                sa.select(outbox.c.envelope)
                .where(outbox.c.envelope["correlation_id"].astext == str(order_id))
                .order_by(outbox.c.seq)
            )
        ).all()
    return [Envelope.model_validate(raw) for raw in rows]


async def charge_record(engine: AsyncEngine, key: str) -> dict[str, Any] | None:
    async with engine.connect() as conn:
        row = (await conn.execute(sa.select(provider_charges).where(provider_charges.c.idempotency_key == key))).first()
    return dict(row._mapping) if row is not None else None


async def age(engine: AsyncEngine, order_id: uuid.UUID, seconds: int = 3600) -> None:
    """Make a payment look untouched for a while (as after a crash long ago)."""
    async with engine.begin() as conn:
        await conn.execute(
            sa.update(payments)
            .where(payments.c.order_id == order_id)
            .values(updated_at=sa.func.now() - sa.func.make_interval(0, 0, 0, 0, 0, 0, seconds))
        )


class Crash(Exception):
    """Stands for the process dying at that point."""


class CrashingProvider:
    """The real provider, but the process "dies" once: before or after the call."""

    def __init__(self, inner: SimulatedProvider, *, after_call: bool) -> None:
        self.inner = inner
        self.after_call = after_call
        self.crashed = False

    async def tokenize(self, card: PaymentCardIn) -> Any:
        return await self.inner.tokenize(card)

    async def _maybe_crash(self) -> None:
        if not self.crashed:
            self.crashed = True
            raise Crash("the process died")

    async def charge(self, **kw: Any) -> Charge:
        if not self.after_call:
            await self._maybe_crash()
        result = await self.inner.charge(**kw)
        if self.after_call:
            await self._maybe_crash()
        return result

    async def refund(self, **kw: Any) -> Refund:
        if not self.after_call:
            await self._maybe_crash()
        result = await self.inner.refund(**kw)
        if self.after_call:
            await self._maybe_crash()
        return result


class GatedProvider:
    """The real provider, whose charges wait until the test opens the gate."""

    def __init__(self, inner: SimulatedProvider) -> None:
        self.inner = inner
        self.gate = asyncio.Event()
        self.waiting = asyncio.Event()

    async def tokenize(self, card: PaymentCardIn) -> Any:
        return await self.inner.tokenize(card)

    async def charge(self, **kw: Any) -> Charge:
        self.waiting.set()
        await self.gate.wait()
        return await self.inner.charge(**kw)

    async def refund(self, **kw: Any) -> Refund:
        return await self.inner.refund(**kw)
