"""The cart's rules, without a database or a catalog."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from prost.cart import domain
from prost.cart.domain import CartRecord, CartStatus, Hold, Line, LockStatus, Product, SagaRecord, SagaStatus

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def line(
    quantity: int = 1,
    *,
    price: str = "19.99",
    status: LockStatus | None = LockStatus.ACTIVE,
    expires_in: float | None = 600,
    product_id: uuid.UUID | None = None,
) -> Line:
    return Line(
        product_id=product_id or uuid.uuid4(),
        quantity=quantity,
        sku="SKU-1",
        name="Thing",
        unit_price=Decimal(price),
        currency="USD",
        lock_status=status,
        lock_quantity=quantity if status == LockStatus.ACTIVE else 0,
        expires_at=NOW + timedelta(seconds=expires_in) if expires_in is not None else None,
    )


def quote(of: Line, *, price: str = "19.99", available: int = 10, active: bool = True) -> Product:
    return Product(
        product_id=of.product_id,
        sku="SKU-NOW",
        name="Thing now",
        price=Decimal(price),
        currency="USD",
        active=active,
        available=available,
    )


def cart(status: CartStatus = CartStatus.OPEN) -> CartRecord:
    return CartRecord(id=uuid.uuid4(), user_id=uuid.uuid4(), status=status, currency="USD")


# -- quantities -----------------------------------------------------------------------


@pytest.mark.parametrize("quantity", [1, 500, 1000])
def test_a_quantity_from_1_to_1000_is_accepted(quantity: int) -> None:
    assert domain.check_quantity(quantity) == quantity


@pytest.mark.parametrize("quantity", [-1, 0, 1001])
def test_a_quantity_outside_1_to_1000_is_refused_as_a_validation_error(quantity: int) -> None:
    with pytest.raises(domain.QuantityOutOfRange) as caught:
        domain.check_quantity(quantity)
    assert caught.value.status == 422
    assert caught.value.code == "validation_error"


def test_adding_to_a_line_grows_it() -> None:
    assert domain.quantity_after_adding(3, 4) == 7


def test_adding_beyond_1000_units_in_one_line_is_refused() -> None:
    with pytest.raises(domain.QuantityOutOfRange):
        domain.quantity_after_adding(999, 2)


def test_a_checked_out_cart_cannot_be_changed() -> None:
    domain.check_editable(cart(CartStatus.OPEN))
    with pytest.raises(domain.CartReadOnly) as caught:
        domain.check_editable(cart(CartStatus.CHECKED_OUT))
    assert caught.value.status == 409


def test_the_first_line_sets_the_currency_and_later_lines_must_match_it() -> None:
    first = line()
    euro = Product(product_id=uuid.uuid4(), sku="E", name="E", price=Decimal(1), currency="EUR")
    domain.check_currency("USD", [], euro)
    domain.check_currency("USD", [], quote(first))
    with pytest.raises(domain.CurrencyMismatch):
        domain.check_currency("USD", [first], euro)


# -- what the client sees -------------------------------------------------------------


def test_the_cart_is_priced_at_the_catalogs_current_prices_with_exact_totals() -> None:
    a, b = line(3, price="19.99"), line(1, price="5.00")
    view = domain.present(
        cart(), [a, b], {a.product_id: quote(a, price="0.10"), b.product_id: quote(b, price="5.05")}, NOW
    )
    assert [i.unit_price for i in view.items] == [Decimal("0.10"), Decimal("5.05")]
    assert [i.line_total for i in view.items] == [Decimal("0.30"), Decimal("5.05")]
    assert view.total_amount == Decimal("5.35")
    assert str(view.total_amount) == "5.35"
    assert view.items[0].sku == "SKU-NOW"


def test_a_line_the_quote_does_not_cover_keeps_the_price_last_seen() -> None:
    a = line(2, price="1.25")
    view = domain.present(cart(), [a], {}, NOW)
    assert view.items[0].unit_price == Decimal("1.25")
    assert view.total_amount == Decimal("2.50")
    assert view.items[0].sku == "SKU-1"


def test_an_empty_cart_totals_zero() -> None:
    view = domain.present(cart(), [], {}, NOW)
    assert view.items == []
    assert view.total_amount == Decimal("0.00")


def test_a_held_line_shows_its_expiry_in_the_future_and_is_available() -> None:
    a = line(expires_in=600)
    item = domain.present(cart(), [a], {a.product_id: quote(a, available=0)}, NOW).items[0]
    assert item.hold_expires_at == NOW + timedelta(seconds=600)
    assert item.available


def test_a_lapsed_hold_shows_an_expiry_in_the_past() -> None:
    for status in (LockStatus.ACTIVE, LockStatus.EXPIRED):
        a = line(2, status=status, expires_in=-5)
        item = domain.present(cart(), [a], {a.product_id: quote(a, available=1)}, NOW).items[0]
        assert item.hold_expires_at is not None
        assert item.hold_expires_at < NOW
        assert not item.available  # 1 unit free, 2 wanted


def test_a_lapsed_line_is_available_when_enough_stock_is_free_now() -> None:
    a = line(2, status=LockStatus.EXPIRED, expires_in=-5)
    assert domain.present(cart(), [a], {a.product_id: quote(a, available=2)}, NOW).items[0].available


def test_a_line_without_a_hold_shows_no_expiry() -> None:
    for status in (LockStatus.PENDING, LockStatus.UNAVAILABLE):
        a = line(status=status, expires_in=None)
        item = domain.present(cart(), [a], {a.product_id: quote(a, available=0)}, NOW).items[0]
        assert item.hold_expires_at is None
        assert not item.available


def test_a_line_of_an_inactive_product_is_not_available() -> None:
    a = line(status=LockStatus.UNAVAILABLE, expires_in=None)
    assert not domain.present(cart(), [a], {a.product_id: quote(a, available=50, active=False)}, NOW).items[0].available


def test_a_line_handed_to_the_order_counts_as_held() -> None:
    a = line(status=LockStatus.CONVERTED, expires_in=-100)
    item = domain.present(cart(CartStatus.CHECKED_OUT), [a], {}, NOW).items[0]
    assert item.available


# -- checkout -------------------------------------------------------------------------


def test_reconcile_places_missing_lapsed_and_resized_holds_and_releases_strays() -> None:
    kept, lapsed, resized = line(2), line(1), line(5)
    stray = uuid.uuid4()
    later = NOW + timedelta(hours=1)
    holds = [
        Hold(product_id=kept.product_id, quantity=2, expires_at=later),
        Hold(product_id=resized.product_id, quantity=4, expires_at=later),
        Hold(product_id=stray, quantity=3, expires_at=later),
    ]
    plan = domain.reconcile([kept, lapsed, resized], holds)
    assert [x.product_id for x in plan.place] == [lapsed.product_id, resized.product_id]
    assert plan.release == [stray]


def test_reconcile_asks_nothing_when_the_holds_match() -> None:
    a = line(2)
    plan = domain.reconcile([a], [Hold(product_id=a.product_id, quantity=2, expires_at=NOW)])
    assert plan.place == []
    assert plan.release == []


def test_order_lines_are_in_a_stable_order() -> None:
    a, b = line(1), line(2)
    assert domain.order_lines([a, b]) == domain.order_lines([b, a])
    assert {x["product_id"] for x in domain.order_lines([a, b])} == {str(a.product_id), str(b.product_id)}


def _saga(status: SagaStatus, lines: list[Line]) -> SagaRecord:
    return SagaRecord(
        id=uuid.uuid4(),
        cart_id=uuid.uuid4(),
        order_id=uuid.uuid4(),
        user_id=uuid.uuid4(),
        status=status,
        lines=domain.order_lines(lines),
    )


def test_a_retried_checkout_of_the_same_lines_reuses_the_order_id() -> None:
    a = line(2)
    saga = _saga(SagaStatus.STARTING, [a])
    assert domain.reusable_order_id(saga, [a]) == saga.order_id


def test_a_checkout_of_changed_lines_gets_a_new_order_id() -> None:
    a = line(2)
    saga = _saga(SagaStatus.STARTING, [a])
    grown = dataclasses.replace(a, quantity=3)
    assert domain.reusable_order_id(saga, [grown]) is None
    assert domain.reusable_order_id(None, [a]) is None
    assert domain.reusable_order_id(_saga(SagaStatus.CANCELLED, [a]), [a]) is None


@pytest.mark.parametrize(
    ("status", "follows"),
    [
        (SagaStatus.STARTING, True),
        (SagaStatus.PLACED, True),
        (SagaStatus.CONFIRMED, False),
        (SagaStatus.CANCELLED, False),
        (SagaStatus.SUPERSEDED, False),
    ],
)
def test_only_a_checkout_in_flight_follows_its_orders_events(status: SagaStatus, follows: bool) -> None:
    assert domain.takes_order_events(status) is follows
