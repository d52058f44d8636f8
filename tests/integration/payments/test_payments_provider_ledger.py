"""The simulated provider on its PostgreSQL ledger: the same contract as in memory,
plus what only the database shows (one row per key, nothing of the card number)."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal

import pytest
import sqlalchemy as sa
from payments_support import GOOD, TEST_CARDS, card, charge_record, simulated
from sqlalchemy.ext.asyncio import AsyncEngine

from prost.payments.provider import ProviderError, SimulatedProvider
from prost.payments.tables import card_tokens, provider_charges
from unit.payments.payments_provider_contract import ProviderContract


class TestSimulatedProviderOnPostgresLedger(ProviderContract):
    key_prefix = "postgres"

    @pytest.fixture
    def provider(self, engine: AsyncEngine) -> SimulatedProvider:
        return simulated(engine)


async def test_two_providers_racing_on_one_key_store_one_charge(engine: AsyncEngine) -> None:
    # Two provider objects (two replicas of payments): only the database orders them.
    first, second = simulated(engine), simulated(engine)
    token = await first.tokenize(card(GOOD))
    key = f"race-{uuid.uuid4()}"
    charges = await asyncio.gather(
        *(
            p.charge(token=token.token, amount=Decimal("8.00"), currency="USD", idempotency_key=key)
            for p in (first, second) * 5
        )
    )
    assert len({c.charge_id for c in charges}) == 1
    record = await charge_record(engine, key)
    assert record is not None
    assert (record["status"], record["tries"]) == ("succeeded", 1)


async def test_the_0119_card_counts_its_tries_in_the_ledger(engine: AsyncEngine) -> None:
    provider = simulated(engine)
    token = await provider.tokenize(card("4000000000000119"))
    key = f"flaky-{uuid.uuid4()}"
    for _ in range(2):
        with pytest.raises(ProviderError):
            await provider.charge(token=token.token, amount=Decimal("1.00"), currency="USD", idempotency_key=key)
        record = await charge_record(engine, key)
        assert record is not None
        assert record["status"] == "pending"
    await provider.charge(token=token.token, amount=Decimal("1.00"), currency="USD", idempotency_key=key)
    record = await charge_record(engine, key)
    assert record is not None
    assert (record["status"], record["tries"]) == ("succeeded", 3)


async def test_the_vault_stores_no_card_number(engine: AsyncEngine) -> None:
    provider = simulated(engine)
    tokens = [await provider.tokenize(card(number)) for number in TEST_CARDS]
    async with engine.connect() as conn:
        rows = (
            await conn.execute(sa.select(card_tokens).where(card_tokens.c.token.in_([t.token for t in tokens])))
        ).all()
    assert len(rows) == len(TEST_CARDS)
    dumped = " ".join(str(value) for row in rows for value in row)
    for number in TEST_CARDS:
        assert number not in dumped
        assert number[:12] not in dumped
    assert {c.name for c in card_tokens.columns}.isdisjoint({"card_number", "number", "cvc", "pan"})
    assert {c.name for c in provider_charges.columns}.isdisjoint({"card_number", "number", "cvc", "pan"})
