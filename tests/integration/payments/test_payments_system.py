"""Payments inside the running system: its internal API, and every test card charged
through the bus, with no card number in any log line, event, response or table.

The in-process system is the session's `system` (memory bus); one test runs a system
of its own on RabbitMQ, with short saga timeouts so the `...0341` card times out fast.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from payments_support import FLAKY, GOOD, SILENT, TEST_CARDS, events_for, order_of, payment_row, requested
from sqlalchemy.ext.asyncio import AsyncEngine

from prost.kit.db import create_engine
from prost.kit.settings import Settings
from prost.payments.tables import card_tokens, metadata

from helpers import bearer, eventually

EXPECTED = {
    "4242424242424242": ("succeeded", None),
    "4000000000000002": ("failed", "payment_declined"),
    "4000000000009995": ("failed", "insufficient_funds"),
    "4000000000000119": ("succeeded", None),
    "4000000000000341": ("failed", "payment_error"),
    "5555555555554444": ("succeeded", None),
}


def body(number: str, **overrides: Any) -> dict[str, Any]:
    return {"card_number": number, "exp_month": 12, "exp_year": 2035, "cvc": "123", **overrides}


def service_headers(system: Any) -> dict[str, str]:
    return bearer(system.host.auth.issue_service_token("orders"))


async def everything_payments_stored(engine: AsyncEngine) -> str:
    """Every value of every row of the payments schema (outbox included), as text."""
    parts: list[str] = []
    async with engine.connect() as conn:
        for table in metadata.sorted_tables:
            for row in await conn.execute(sa.select(table)):
                parts.extend(str(value) for value in row)
    return "\n".join(parts)


async def vault_size(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(sa.select(sa.func.count()).select_from(card_tokens)) or 0)


# -- the internal API --------------------------------------------------------------------


async def test_a_service_tokenises_a_card_and_gets_only_token_last4_and_brand(
    system: Any, client: httpx.AsyncClient
) -> None:
    r = await client.post(
        "/internal/payments/tokens", json=body("5555 5555 5555 4444"), headers=service_headers(system)
    )
    assert r.status_code == 201, r.text
    token = r.json()
    assert set(token) == {"token", "last4", "brand"}
    assert (token["last4"], token["brand"]) == ("4444", "mastercard")
    assert "5555555555554444" not in r.text


async def test_tokenising_needs_a_service_token(system: Any, client: httpx.AsyncClient) -> None:
    r = await client.post("/internal/payments/tokens", json=body(GOOD))
    assert (r.status_code, r.json()["error"]) == (401, "unauthorized")
    customer, _ = system.host.auth.issue(user_id=uuid.uuid4(), email="c@prost.test", username="cust", role="customer")
    r = await client.post("/internal/payments/tokens", json=body(GOOD), headers=bearer(customer))
    assert (r.status_code, r.json()["error"]) == (403, "forbidden")


@pytest.mark.parametrize(
    "card",
    [
        body("4242424242424241"),  # Luhn
        body(GOOD, exp_year=2020),  # expired
        body(GOOD, exp_month=13),
        body(GOOD, cvc="12"),
        body(GOOD, cvc="12a"),
        {"card_number": GOOD, "exp_month": 12, "exp_year": 2035},  # no CVC
    ],
)
async def test_a_bad_card_is_a_422_that_does_not_echo_it(
    system: Any, client: httpx.AsyncClient, engine: AsyncEngine, card: dict[str, Any]
) -> None:
    before = await vault_size(engine)
    r = await client.post("/internal/payments/tokens", json=card, headers=service_headers(system))
    assert r.status_code == 422
    assert r.json()["error"] == "validation_error"
    assert card["card_number"] not in r.text
    assert card["card_number"][:12] not in r.text
    assert await vault_size(engine) == before


# -- every test card, through the bus ----------------------------------------------------


async def test_every_test_card_through_the_running_system_leaves_no_card_number_anywhere(
    system: Any, client: httpx.AsyncClient, engine: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    headers = service_headers(system)
    answers: list[str] = []
    tokens: dict[str, str] = {}
    for number in TEST_CARDS:
        r = await client.post("/internal/payments/tokens", json=body(number), headers=headers)
        assert r.status_code == 201, r.text
        answers.append(r.text)
        tokens[number] = r.json()["token"]
    bad = await client.post("/internal/payments/tokens", json=body(GOOD, exp_year=2020), headers=headers)
    answers.append(bad.text)

    envelopes = {number: requested(token) for number, token in tokens.items()}
    # The good card's request goes twice, as a redelivery would.
    await system.bus.publish([*envelopes.values(), envelopes[GOOD]])

    async def settled() -> bool:
        rows = [await payment_row(engine, order_of(e)) for e in envelopes.values()]
        return all(row is not None and row["status"] != "processing" for row in rows)

    await eventually(settled, timeout=60)  # the 0341 card: once the provider timeout passed

    for number, envelope in envelopes.items():
        row = await payment_row(engine, order_of(envelope))
        assert row is not None
        assert (row["status"], row["failure_reason"]) == EXPECTED[number], number
        # The card's last four digits come with the provider's answer (0341 gives none).
        assert row["last4"] == (None if number == SILENT else number[-4:])
        events = await events_for(engine, order_of(envelope))
        assert len(events) == 1
        assert events[0].event_type == ("payment.processed" if EXPECTED[number][0] == "succeeded" else "payment.failed")
    flaky = await payment_row(engine, order_of(envelopes[FLAKY]))
    assert flaky is not None
    assert flaky["attempts"] == 3

    logged = caplog.text + "\n".join(str(r.__dict__) for r in caplog.records)
    stored = await everything_payments_stored(engine)
    assert GOOD[-4:] in stored  # the scan does see what is stored
    for number in TEST_CARDS:
        for where, text in (("logs", logged), ("responses", "\n".join(answers)), ("payments schema", stored)):
            assert number not in text, f"{number} found in {where}"


@pytest.mark.rabbitmq
async def test_every_test_card_on_rabbitmq_with_short_saga_timeouts(
    broker_url: str,
    make_database: Callable[[], AbstractAsyncContextManager[str]],
    settings_factory: Callable[..., Settings],
) -> None:
    from prost.runtime.embedded import System

    async with make_database() as url:
        settings = settings_factory(
            database_url=url,
            broker_url=broker_url,
            saga_step_timeout_seconds=1,
            payment_retry_base_ms=20,
            sweep_interval_seconds=0.5,
        )
        engine = create_engine(url)
        try:
            async with System(settings, services=["payments"]) as system:
                async with httpx.AsyncClient(base_url=system.url, timeout=30) as client:
                    headers = service_headers(system)
                    envelopes = {}
                    for number in TEST_CARDS:
                        r = await client.post("/internal/payments/tokens", json=body(number), headers=headers)
                        assert r.status_code == 201, r.text
                        envelopes[number] = requested(r.json()["token"])
                await system.bus.publish([*envelopes.values(), envelopes[GOOD], envelopes[FLAKY]])

                async def settled() -> bool:
                    rows = [await payment_row(engine, order_of(e)) for e in envelopes.values()]
                    return all(row is not None and row["status"] != "processing" for row in rows)

                await eventually(settled, timeout=30)
                for number, envelope in envelopes.items():
                    row = await payment_row(engine, order_of(envelope))
                    assert row is not None
                    assert (row["status"], row["failure_reason"]) == EXPECTED[number], number
                    assert len(await events_for(engine, order_of(envelope))) == 1
                async with engine.connect() as conn:
                    charges = await conn.scalar(
                        sa.text("SELECT count(*) FROM payments.provider_charges WHERE status = 'succeeded'")
                    )
                assert charges == 3  # 4242, 0119 and 5555, each once despite the duplicates
        finally:
            await engine.dispose()
