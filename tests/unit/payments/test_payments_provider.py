"""The simulated provider on its in-memory ledger, and its pure rules."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from prost.payments import provider as p
from unit.payments.payments_provider_contract import ALL_CARDS, ProviderContract


class TestSimulatedProviderOnMemoryLedger(ProviderContract):
    key_prefix = "memory"

    @pytest.fixture
    def provider(self) -> p.SimulatedProvider:
        return p.SimulatedProvider(p.MemoryLedger())


@pytest.mark.parametrize(
    ("number", "outcome"),
    [
        ("4242424242424242", p.SUCCEED),
        ("4000000000000002", p.DECLINE),
        ("4000000000009995", p.INSUFFICIENT_FUNDS),
        ("4000000000000119", p.ERROR_THEN_SUCCEED),
        ("4000000000000341", p.NO_ANSWER),
        ("5555555555554444", p.SUCCEED),
        ("378282246310005", p.SUCCEED),
    ],
)
def test_the_test_card_table_decides_the_outcome(number: str, outcome: str) -> None:
    assert p.outcome_for_card(number) == outcome


def test_every_card_of_the_contract_suite_is_a_valid_card() -> None:
    from prost.kit.cards import luhn_valid

    assert all(luhn_valid(number) for number in ALL_CARDS)


def _vault(outcome: str, *, exp_year: int = 2035) -> p.VaultCard:
    return p.VaultCard(token="tok_1", last4="0000", brand="visa", exp_month=6, exp_year=exp_year, outcome=outcome)


def _decide(current: p.ChargeRecord | None, card: p.VaultCard | None, amount: str = "9.99") -> p.ChargeRecord:
    return p.decide_charge(
        current,
        card=card,
        idempotency_key="k",
        token="tok_1",
        amount=Decimal(amount),
        currency="USD",
        today=date(2030, 6, 30),
        new_id=lambda prefix: f"{prefix}_new",
    )


def test_a_first_call_creates_one_record_with_one_try() -> None:
    record = _decide(None, _vault(p.SUCCEED))
    assert (record.status, record.tries, record.charge_id) == (p.SUCCEEDED, 1, "ch_new")


def test_the_error_card_stays_pending_for_two_tries_and_keeps_its_charge_id() -> None:
    first = _decide(None, _vault(p.ERROR_THEN_SUCCEED))
    second = _decide(first, _vault(p.ERROR_THEN_SUCCEED))
    third = _decide(second, _vault(p.ERROR_THEN_SUCCEED))
    assert [r.status for r in (first, second, third)] == [p.PENDING, p.PENDING, p.SUCCEEDED]
    assert [r.tries for r in (first, second, third)] == [1, 2, 3]
    assert len({r.charge_id for r in (first, second, third)}) == 1


def test_a_final_record_is_returned_unchanged() -> None:
    final = _decide(None, _vault(p.DECLINE))
    assert _decide(final, _vault(p.DECLINE)) is final


def test_a_card_valid_through_its_expiry_month_is_charged() -> None:
    june = p.VaultCard(token="tok_1", last4="0000", brand="visa", exp_month=6, exp_year=2030, outcome=p.SUCCEED)
    assert _decide(None, june).status == p.SUCCEEDED
    may = p.VaultCard(token="tok_1", last4="0000", brand="visa", exp_month=5, exp_year=2030, outcome=p.SUCCEED)
    assert (_decide(None, may).status, _decide(None, may).decline_code) == (p.DECLINED, "expired_card")


def test_a_negative_amount_is_rejected() -> None:
    with pytest.raises(p.ProviderRejected):
        _decide(None, _vault(p.SUCCEED), amount="-1.00")


def test_a_refund_needs_a_succeeded_charge_and_is_given_once() -> None:
    charged = _decide(None, _vault(p.SUCCEED))
    refunded = p.decide_refund(charged, new_id=lambda prefix: f"{prefix}_1")
    assert refunded.refund_id == "re_1"
    assert p.decide_refund(refunded, new_id=lambda prefix: f"{prefix}_2") is refunded
    with pytest.raises(p.ProviderRejected):
        p.decide_refund(_decide(None, _vault(p.DECLINE)), new_id=str)
    with pytest.raises(p.ProviderRejected):
        p.decide_refund(None, new_id=str)
