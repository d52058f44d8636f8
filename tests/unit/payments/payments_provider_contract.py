"""What every `SimulatedProvider` does, whatever ledger keeps its records.

`ProviderContract` is run twice: on the in-memory ledger (unit tests) and on the
PostgreSQL one (integration tests). A subclass provides the `provider` fixture.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import date
from decimal import Decimal

import pytest

from prost.kit.cards import PaymentCardIn
from prost.payments.provider import Charge, ProviderError, ProviderRejected, SimulatedProvider

GOOD = "4242424242424242"
DECLINED = "4000000000000002"
INSUFFICIENT = "4000000000009995"
FLAKY = "4000000000000119"
SILENT = "4000000000000341"
OTHER = "5555555555554444"
ALL_CARDS = (GOOD, DECLINED, INSUFFICIENT, FLAKY, SILENT, OTHER)


def card(number: str, *, exp_month: int = 12, exp_year: int = 2035) -> PaymentCardIn:
    return PaymentCardIn(card_number=number, exp_month=exp_month, exp_year=exp_year, cvc="123")


async def charge_until_answered(provider: SimulatedProvider, token: str, key: str, amount: str = "19.99") -> Charge:
    """Charge, retrying provider errors (as payments does); at most five calls."""
    for _ in range(5):
        try:
            return await provider.charge(token=token, amount=Decimal(amount), currency="USD", idempotency_key=key)
        except ProviderError:
            continue
    raise AssertionError("the provider never answered")


class ProviderContract:
    key_prefix = "contract"

    def key(self, name: str) -> str:
        return f"{self.key_prefix}-{name}-{uuid.uuid4().hex}"

    async def test_tokenising_keeps_only_last4_brand_and_expiry(self, provider: SimulatedProvider) -> None:
        token = await provider.tokenize(card(GOOD))
        assert token.last4 == "4242"
        assert token.brand == "visa"
        assert GOOD not in token.token
        stored = await provider.ledger.card(token.token)
        assert stored is not None
        assert (stored.last4, stored.brand, stored.exp_month, stored.exp_year) == ("4242", "visa", 12, 2035)
        assert GOOD not in repr(stored)

    @pytest.mark.parametrize(
        ("number", "status", "decline_code"),
        [
            (GOOD, "succeeded", None),
            (DECLINED, "declined", "card_declined"),
            (INSUFFICIENT, "declined", "insufficient_funds"),
            (OTHER, "succeeded", None),
        ],
    )
    async def test_each_test_card_gets_its_outcome(
        self, provider: SimulatedProvider, number: str, status: str, decline_code: str | None
    ) -> None:
        token = await provider.tokenize(card(number))
        charge = await provider.charge(
            token=token.token, amount=Decimal("19.99"), currency="USD", idempotency_key=self.key("card")
        )
        assert (charge.status, charge.decline_code) == (status, decline_code)
        assert (charge.amount, charge.currency, charge.last4) == (Decimal("19.99"), "USD", number[-4:])

    async def test_the_0119_card_errors_twice_then_succeeds(self, provider: SimulatedProvider) -> None:
        token = await provider.tokenize(card(FLAKY))
        key = self.key("flaky")
        for _ in range(2):
            with pytest.raises(ProviderError):
                await provider.charge(token=token.token, amount=Decimal("5.00"), currency="USD", idempotency_key=key)
        charge = await provider.charge(token=token.token, amount=Decimal("5.00"), currency="USD", idempotency_key=key)
        assert charge.succeeded

    async def test_the_0119_card_errors_twice_again_for_another_key(self, provider: SimulatedProvider) -> None:
        token = await provider.tokenize(card(FLAKY))
        assert (await charge_until_answered(provider, token.token, self.key("first"))).succeeded
        with pytest.raises(ProviderError):
            await provider.charge(
                token=token.token, amount=Decimal("5.00"), currency="USD", idempotency_key=self.key("second")
            )

    async def test_the_0341_card_never_answers(self, provider: SimulatedProvider) -> None:
        token = await provider.tokenize(card(SILENT))
        call = provider.charge(token=token.token, amount=Decimal("1.00"), currency="USD", idempotency_key=self.key("s"))
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(call, timeout=0.2)

    @pytest.mark.parametrize("number", [GOOD, DECLINED, FLAKY])
    async def test_a_repeated_key_returns_the_first_result(self, provider: SimulatedProvider, number: str) -> None:
        token = await provider.tokenize(card(number))
        key = self.key("repeat")
        first = await charge_until_answered(provider, token.token, key)
        again = await provider.charge(token=token.token, amount=Decimal("19.99"), currency="USD", idempotency_key=key)
        assert again == first

    async def test_concurrent_calls_with_one_key_take_one_charge(self, provider: SimulatedProvider) -> None:
        token = await provider.tokenize(card(GOOD))
        key = self.key("race")
        charges = await asyncio.gather(
            *(
                provider.charge(token=token.token, amount=Decimal("3.50"), currency="USD", idempotency_key=key)
                for _ in range(8)
            )
        )
        assert len({c.charge_id for c in charges}) == 1

    async def test_a_key_reused_with_another_amount_is_rejected(self, provider: SimulatedProvider) -> None:
        token = await provider.tokenize(card(GOOD))
        key = self.key("reuse")
        await provider.charge(token=token.token, amount=Decimal("10.00"), currency="USD", idempotency_key=key)
        with pytest.raises(ProviderRejected):
            await provider.charge(token=token.token, amount=Decimal("11.00"), currency="USD", idempotency_key=key)

    async def test_an_unknown_token_is_rejected(self, provider: SimulatedProvider) -> None:
        with pytest.raises(ProviderRejected):
            await provider.charge(
                token="tok_nope", amount=Decimal("1.00"), currency="USD", idempotency_key=self.key("u")
            )

    async def test_a_card_that_expired_since_tokenising_is_declined(self, provider: SimulatedProvider) -> None:
        token = await provider.tokenize(card(GOOD, exp_month=12, exp_year=2035))
        later = SimulatedProvider(provider.ledger, today=lambda: date(2036, 1, 1))
        charge = await later.charge(
            token=token.token, amount=Decimal("1.00"), currency="USD", idempotency_key=self.key("e")
        )
        assert (charge.status, charge.decline_code) == ("declined", "expired_card")

    async def test_a_refund_is_given_once(self, provider: SimulatedProvider) -> None:
        token = await provider.tokenize(card(GOOD))
        charge = await charge_until_answered(provider, token.token, self.key("refund"))
        first = await provider.refund(charge_id=charge.charge_id, idempotency_key="r1")
        again = await provider.refund(charge_id=charge.charge_id, idempotency_key="r1")
        assert first == again
        assert (first.charge_id, first.amount, first.currency) == (charge.charge_id, Decimal("19.99"), "USD")

    async def test_only_a_succeeded_charge_can_be_refunded(self, provider: SimulatedProvider) -> None:
        token = await provider.tokenize(card(DECLINED))
        charge = await charge_until_answered(provider, token.token, self.key("declined"))
        with pytest.raises(ProviderRejected):
            await provider.refund(charge_id=charge.charge_id, idempotency_key="r")
        with pytest.raises(ProviderRejected):
            await provider.refund(charge_id="ch_unknown", idempotency_key="r")

    async def test_latency_does_not_change_outcomes(self, provider: SimulatedProvider) -> None:
        slow = SimulatedProvider(provider.ledger, latency_ms=5)
        token = await slow.tokenize(card(INSUFFICIENT))
        charge = await charge_until_answered(slow, token.token, self.key("slow"))
        assert charge.decline_code == "insufficient_funds"
