"""Payments' rules: failure reasons, refunds, request checks and the retry policy."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest

from prost.kit.settings import Settings
from prost.payments import domain
from prost.payments.domain import RefundAction, RetryPolicy


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        ("card_declined", "payment_declined"),
        ("expired_card", "payment_declined"),
        ("insufficient_funds", "insufficient_funds"),
        ("something_new", "payment_error"),
        (None, "payment_error"),
    ],
)
def test_a_decline_code_maps_to_a_contract_reason(code: str | None, reason: str) -> None:
    assert domain.failure_reason(code) == reason
    assert domain.failure_reason(code) in domain.FAILURE_REASONS


@pytest.mark.parametrize(
    ("status", "action"),
    [
        ("succeeded", RefundAction.REFUND),
        ("processing", RefundAction.DEFER),
        ("refunded", RefundAction.ALREADY_REFUNDED),
        ("failed", RefundAction.NOTHING_NOT_CHARGED),
        (None, RefundAction.NOTHING_NO_PAYMENT),
    ],
)
def test_only_a_succeeded_charge_is_refunded_and_a_processing_one_waits(
    status: str | None, action: RefundAction
) -> None:
    assert domain.refund_action(status) is action


@pytest.mark.parametrize(
    ("amount", "currency", "ok"),
    [
        ("19.99", "USD", True),
        ("0.00", "EUR", True),
        ("19.9", "USD", True),
        ("19.990", "USD", True),
        ("-0.01", "USD", False),
        ("19.999", "USD", False),
        ("10000000000.00", "USD", False),
        ("NaN", "USD", False),
        ("1.00", "usd", False),
        ("1.00", "US", False),
        ("1.00", "ÜSD", False),
    ],
)
def test_a_request_that_no_provider_could_charge_is_named(amount: str, currency: str, ok: bool) -> None:
    assert (domain.request_problem(amount=Decimal(amount), currency=currency) is None) is ok


def test_the_provider_key_is_derived_from_the_order() -> None:
    order_id = uuid.uuid4()
    assert domain.provider_key(order_id) == domain.provider_key(order_id)
    assert str(order_id) in domain.provider_key(order_id)
    assert domain.refund_key(domain.provider_key(order_id)) != domain.provider_key(order_id)


def test_the_provider_timeout_defaults_to_longer_than_the_payment_step() -> None:
    policy = RetryPolicy.from_settings(Settings(saga_step_timeout_seconds=30, saga_payment_timeout_seconds=20))
    assert policy.call_timeout > 20
    assert policy.budget < 20
    default = RetryPolicy.from_settings(Settings())
    assert default.call_timeout > Settings().payment_step_timeout_seconds
    explicit = RetryPolicy.from_settings(Settings(saga_step_timeout_seconds=30, payment_provider_timeout_seconds=40))
    assert explicit.call_timeout == 40


def test_retries_back_off_and_stop_at_the_attempt_limit() -> None:
    policy = RetryPolicy(max_attempts=4, base_delay=0.2, budget=100, call_timeout=1)
    delays = [policy.delay_after(attempt, elapsed=0) for attempt in (1, 2, 3, 4)]
    assert delays == [0.2, 0.4, 0.8, None]


def test_retries_stop_when_the_next_call_would_start_past_the_budget() -> None:
    policy = RetryPolicy(max_attempts=10, base_delay=1.0, budget=15, call_timeout=45)
    assert policy.delay_after(1, elapsed=13.0) == 1.0
    assert policy.delay_after(1, elapsed=14.5) is None


def test_a_stalled_charge_is_one_nobody_could_still_be_working_on() -> None:
    policy = RetryPolicy.from_settings(Settings(saga_step_timeout_seconds=30))
    assert policy.stalled_after > policy.budget + policy.call_timeout
