"""Card validation (kit.cards, shared with the cart) and pricing an order from a quote."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from prost.kit.cards import PaymentCardIn, brand, luhn_valid
from prost.orders.domain import MixedCurrencies, UnknownProducts, money, price_order

NEXT_YEAR = datetime.now(UTC).year + 1


def card(**overrides: Any) -> dict[str, Any]:
    return {"card_number": "4242424242424242", "exp_month": 12, "exp_year": NEXT_YEAR, "cvc": "123", **overrides}


@pytest.mark.parametrize(
    "number",
    [
        "4242424242424242",
        "4000000000000002",
        "4000000000009995",
        "4000000000000119",
        "4000000000000341",
        "4242 4242 4242 4242",
        "4242-4242-4242-4242",
    ],
)
def test_the_test_cards_and_grouped_numbers_are_accepted(number: str) -> None:
    parsed = PaymentCardIn.model_validate(card(card_number=number))
    assert parsed.card_number.isdigit()
    assert parsed.last4 == number[-4:]
    assert parsed.brand == "visa"


@pytest.mark.parametrize(
    "overrides",
    [
        {"card_number": "4242424242424241"},  # Luhn
        {"card_number": "42424242"},  # too short
        {"card_number": "4242abcd42424242"},
        {"card_number": ""},
        {"exp_month": 0},
        {"exp_month": 13},
        {"exp_year": 2001},  # expired
        {"exp_year": NEXT_YEAR + 40},
        {"cvc": "12"},
        {"cvc": "12345"},
        {"cvc": "12a"},
        {"cvc": 123},
    ],
)
def test_bad_cards_are_refused(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        PaymentCardIn.model_validate(card(**overrides))


def test_a_card_expiring_this_month_is_still_valid_and_last_month_is_not() -> None:
    now = datetime.now(UTC)
    PaymentCardIn.model_validate(card(exp_month=now.month, exp_year=now.year))
    year, month = (now.year, now.month - 1) if now.month > 1 else (now.year - 1, 12)
    with pytest.raises(ValidationError):
        PaymentCardIn.model_validate(card(exp_month=month, exp_year=year))


def test_the_number_and_cvc_never_show_in_repr_or_in_errors() -> None:
    parsed = PaymentCardIn.model_validate(card(cvc="987"))
    assert "4242424242424242" not in repr(parsed)
    assert "987" not in repr(parsed)
    assert parsed.masked() == "visa ****4242"
    with pytest.raises(ValidationError) as info:
        PaymentCardIn.model_validate(card(card_number="4242424242424241"))
    messages = " ".join(str(e["msg"]) for e in info.value.errors())
    assert "4242424242424241" not in messages


def test_luhn_and_brands() -> None:
    assert luhn_valid("79927398713")
    assert not luhn_valid("79927398710")
    assert brand("5555555555554444") == "mastercard"
    assert brand("378282246310005") == "amex"
    assert brand("6011111111111117") == "discover"
    assert brand("9999999999999995") == "unknown"


# -- pricing -------------------------------------------------------------------------------------

A, B = uuid.uuid4(), uuid.uuid4()


def quote_item(pid: uuid.UUID, price: str, **kw: Any) -> dict[str, Any]:
    return {
        "product_id": str(pid),
        "sku": f"SKU-{pid.hex[:4]}",
        "name": "Thing",
        "price": price,
        "currency": "USD",
        "active": True,
        "available": 5,
        **kw,
    }


def test_prices_and_names_come_from_the_quote() -> None:
    priced = price_order([(A, 2), (B, 1)], [quote_item(A, "19.99"), quote_item(B, "0.5")])
    assert [line.line_total for line in priced.lines] == [Decimal("39.98"), Decimal("0.50")]
    assert priced.total_amount == Decimal("40.48")
    assert priced.currency == "USD"
    assert priced.lines[0].sku == f"SKU-{A.hex[:4]}"
    assert money(priced.total_amount) == "40.48"
    assert money(Decimal("5")) == "5.00"


def test_unknown_or_inactive_products_are_refused() -> None:
    with pytest.raises(UnknownProducts) as info:
        price_order([(A, 1), (B, 1)], [quote_item(A, "1.00")])
    assert str(B) in info.value.message
    with pytest.raises(UnknownProducts):
        price_order([(A, 1)], [quote_item(A, "1.00", active=False)])


def test_products_in_two_currencies_cannot_share_an_order() -> None:
    with pytest.raises(MixedCurrencies):
        price_order([(A, 1), (B, 1)], [quote_item(A, "1.00"), quote_item(B, "1.00", currency="EUR")])


def test_stock_is_not_checked_when_pricing() -> None:
    priced = price_order([(A, 50)], [quote_item(A, "1.00", available=0)])
    assert priced.total_amount == Decimal("50.00")
