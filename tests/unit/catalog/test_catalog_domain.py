"""The catalog's rules without a database: prices, slugs, SKUs, and matching an
order against stock."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest

from prost.catalog import domain
from prost.catalog.domain import StockState


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("19.99", "19.99"),
        (19.99, "19.99"),
        ("20", "20.00"),
        (20, "20.00"),
        ("20.000", "20.00"),
        ("0", "0.00"),
        (" 5.5 ", "5.50"),
        ("9999999999.99", "9999999999.99"),
        ("1e2", "100.00"),
    ],
)
def test_a_price_with_at_most_two_places_is_accepted_with_exactly_two(given: object, expected: str) -> None:
    assert str(domain.parse_price(given)) == expected


@pytest.mark.parametrize(
    ("given", "why"),
    [
        ("19.999", "two decimal places"),
        (19.999, "two decimal places"),
        ("0.001", "two decimal places"),
        ("-1", "negative"),
        (-0.01, "negative"),
        ("abc", "decimal number"),
        ("", "decimal number"),
        ("NaN", "finite"),
        ("sNaN", "finite"),
        ("Infinity", "finite"),
        ("-Infinity", "finite"),
        (float("nan"), "finite"),
        (float("inf"), "finite"),
        (True, "decimal number"),
        (None, "decimal number"),
        ([1], "decimal number"),
        ("10000000000.00", "exceed"),
        (1e20, "exceed"),
        ("1" * 50, "decimal number"),
    ],
)
def test_a_bad_price_is_refused_with_the_rule_it_breaks(given: object, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        domain.parse_price(given)


@pytest.mark.parametrize("slug", ["tools", "garden-tools", "a", "2024-sale", "x" * 100])
def test_a_slug_of_lowercase_words_joined_by_hyphens_is_accepted(slug: str) -> None:
    assert domain.check_slug(slug) == slug


@pytest.mark.parametrize(
    "slug", ["", "Tools", "garden tools", "garden--tools", "-tools", "tools-", "a_b", "é", "x" * 101]
)
def test_a_malformed_slug_is_refused(slug: str) -> None:
    with pytest.raises(ValueError, match="slug"):
        domain.check_slug(slug)


@pytest.mark.parametrize("sku", ["", " ", "-AB", "A B", "A/B", "Ä1", "A" * 65])
def test_a_malformed_sku_is_refused(sku: str) -> None:
    with pytest.raises(ValueError, match="SKU"):
        domain.check_sku(sku)


def test_a_sku_is_trimmed() -> None:
    assert domain.check_sku("  AB-1.x_2 ") == "AB-1.x_2"


def test_only_the_store_currency_is_accepted() -> None:
    assert domain.check_currency("USD") == "USD"
    with pytest.raises(ValueError, match="USD"):
        domain.check_currency("EUR")


def test_available_ignores_reservations_that_are_due_and_never_goes_below_zero() -> None:
    assert domain.available(stock=10, reserved=7, expired_reserved=0) == 3
    assert domain.available(stock=10, reserved=7, expired_reserved=4) == 7
    assert domain.available(stock=0, reserved=0, expired_reserved=0) == 0


def test_merged_lines_add_up_a_repeated_product_and_come_in_id_order() -> None:
    a, b = sorted([uuid.uuid4(), uuid.uuid4()])
    assert list(domain.merge_lines([(b, 1), (a, 2), (b, 3)]).items()) == [(a, 2), (b, 4)]


def test_a_plan_uses_the_carts_hold_before_free_stock() -> None:
    pid = uuid.uuid4()
    plans, short = domain.plan_reservation(
        {pid: 5}, {pid: StockState(pid, stock=10, reserved=10, active=True)}, {pid: 5}
    )
    assert short == []
    assert plans[0].extra == 0


def test_a_hold_larger_than_its_line_gives_back_the_rest() -> None:
    pid = uuid.uuid4()
    plans, _ = domain.plan_reservation({pid: 2}, {pid: StockState(pid, stock=10, reserved=5, active=True)}, {pid: 5})
    assert plans[0].extra == -3


def test_a_plan_reports_every_short_line_and_treats_unknown_and_inactive_products_as_empty() -> None:
    ok, short, unknown, inactive = (uuid.uuid4() for _ in range(4))
    states = {
        ok: StockState(ok, stock=5, reserved=0, active=True),
        short: StockState(short, stock=5, reserved=3, active=True),
        inactive: StockState(inactive, stock=5, reserved=0, active=False),
    }
    plans, shortages = domain.plan_reservation({ok: 5, short: 3, unknown: 1, inactive: 1}, states, {short: 0})
    assert [p.product_id for p in plans] == [ok]
    assert {(s.product_id, s.requested, s.available) for s in shortages} == {
        (short, 3, 2),
        (unknown, 1, 0),
        (inactive, 1, 0),
    }


def test_parse_price_returns_a_decimal() -> None:
    assert domain.parse_price("1.5") == Decimal("1.50")
