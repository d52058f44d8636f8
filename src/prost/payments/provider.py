"""The payment provider port, and the simulated provider that is its default.

`PaymentProvider` is what payments needs of any card processor:

- `tokenize(card)` → `CardToken`: the provider's vault keeps the card and hands back
  a token (prost keeps only the token, the last four digits and the brand);
- `charge(token, amount, currency, idempotency_key)` → `Charge` (succeeded, or
  declined with a code). The same key always returns the first result: a retried or
  redelivered charge is never taken twice;
- `refund(charge_id, idempotency_key)` → `Refund`, idempotent the same way.

Errors: `ProviderError` is transient (retry with the same key); `ProviderRejected`
means the request itself is wrong (unknown token, key reused with another amount,
refund of a charge that did not succeed) and retrying cannot help. A provider that
does not answer simply does not return: the caller bounds the wait.

`SimulatedProvider` plays API.md's test-card table. Its records (vault, charges by
key) live in a `Ledger`: `PostgresLedger` (tables `payments.card_tokens` and
`payments.provider_charges`, standing for the provider's own database) by default,
`MemoryLedger` for unit tests; both run one test suite. The decisions themselves are
the pure functions `outcome_for_card`, `decide_charge` and `decide_refund`.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Protocol

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from prost.kit import cards, db
from prost.kit.db import Session, Sql
from prost.kit.service import ServiceContext
from prost.payments.tables import provider_charges

# -- the port ----------------------------------------------------------------------


class ProviderError(Exception):
    """A transient failure at the provider: try again with the same idempotency key."""


class ProviderRejected(Exception):
    """The provider refused the request itself; the same request will fail again."""


@dataclass(frozen=True, slots=True)
class CardToken:
    token: str
    last4: str
    brand: str


@dataclass(frozen=True, slots=True)
class Charge:
    charge_id: str
    status: str
    """`succeeded` or `declined`."""
    decline_code: str | None
    """For a decline: `card_declined`, `insufficient_funds` or `expired_card`."""
    amount: Decimal
    currency: str
    last4: str
    brand: str

    @property
    def succeeded(self) -> bool:
        return self.status == SUCCEEDED


@dataclass(frozen=True, slots=True)
class Refund:
    refund_id: str
    charge_id: str
    amount: Decimal
    currency: str


class PaymentProvider(Protocol):
    async def tokenize(self, card: cards.PaymentCardIn) -> CardToken: ...

    async def charge(self, *, token: str, amount: Decimal, currency: str, idempotency_key: str) -> Charge: ...

    async def refund(self, *, charge_id: str, idempotency_key: str) -> Refund: ...


PROVIDER = "payments.provider"
"""Key of the service's `PaymentProvider` in `ServiceContext.extras` (bootstrap sets it)."""


def provider_of(ctx: ServiceContext) -> PaymentProvider:
    provider: PaymentProvider = ctx.extras[PROVIDER]
    return provider


# -- the simulated provider's rules (pure) -------------------------------------------

SUCCEED, DECLINE, INSUFFICIENT_FUNDS, ERROR_THEN_SUCCEED, NO_ANSWER = (
    "succeed",
    "decline",
    "insufficient_funds",
    "error_then_succeed",
    "no_answer",
)
PENDING, SUCCEEDED, DECLINED = "pending", "succeeded", "declined"

TEST_CARDS: dict[str, str] = {
    "4242424242424242": SUCCEED,
    "4000000000000002": DECLINE,
    "4000000000009995": INSUFFICIENT_FUNDS,
    "4000000000000119": ERROR_THEN_SUCCEED,
    "4000000000000341": NO_ANSWER,
}
"""API.md's test cards; any other valid number succeeds."""

ERRORS_BEFORE_SUCCESS = 2
"""`...0119`: the first two calls for a key fail with a provider error."""


def outcome_for_card(number: str) -> str:
    return TEST_CARDS.get(number, SUCCEED)


@dataclass(frozen=True, slots=True)
class VaultCard:
    """What the provider keeps of a tokenised card: never the number or the CVC."""

    token: str
    last4: str
    brand: str
    exp_month: int
    exp_year: int
    outcome: str

    def expired_on(self, day: date) -> bool:
        """Valid through the last day of the expiry month."""
        return (self.exp_year, self.exp_month) < (day.year, day.month)


@dataclass(frozen=True, slots=True)
class ChargeRecord:
    """The provider's record of one idempotency key."""

    idempotency_key: str
    charge_id: str
    token: str
    amount: Decimal
    currency: str
    status: str
    decline_code: str | None
    tries: int
    refund_id: str | None = None


def decide_charge(
    current: ChargeRecord | None,
    *,
    card: VaultCard | None,
    idempotency_key: str,
    token: str,
    amount: Decimal,
    currency: str,
    today: date,
    new_id: Callable[[str], str],
) -> ChargeRecord:
    """One call of `charge` for a key: the record as it is after that call.

    A key that already has a result returns it unchanged (and refuses other
    parameters, as real providers do). `pending` after the call means the call failed
    with a provider error."""
    if current is not None:
        if (current.token, current.amount, current.currency) != (token, amount, currency):
            raise ProviderRejected("idempotency key reused with other charge parameters")
        if current.status != PENDING:
            return current
    if card is None:
        raise ProviderRejected("no such card token")
    if amount < 0:
        raise ProviderRejected("amount must not be negative")
    tries = (current.tries if current is not None else 0) + 1
    base = current or ChargeRecord(
        idempotency_key=idempotency_key,
        charge_id=new_id("ch"),
        token=token,
        amount=amount,
        currency=currency,
        status=PENDING,
        decline_code=None,
        tries=0,
    )
    if card.outcome == ERROR_THEN_SUCCEED and tries <= ERRORS_BEFORE_SUCCESS:
        return replace(base, tries=tries)
    if card.expired_on(today):
        return replace(base, tries=tries, status=DECLINED, decline_code="expired_card")
    if card.outcome == DECLINE:
        return replace(base, tries=tries, status=DECLINED, decline_code="card_declined")
    if card.outcome == INSUFFICIENT_FUNDS:
        return replace(base, tries=tries, status=DECLINED, decline_code="insufficient_funds")
    return replace(base, tries=tries, status=SUCCEEDED)


def decide_refund(current: ChargeRecord | None, *, new_id: Callable[[str], str]) -> ChargeRecord:
    """A refund of the whole charge; a second refund returns the first."""
    if current is None:
        raise ProviderRejected("no such charge")
    if current.status != SUCCEEDED:
        raise ProviderRejected("only a succeeded charge can be refunded")
    if current.refund_id is not None:
        return current
    return replace(current, refund_id=new_id("re"))


def random_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


# -- where the simulated provider keeps its records ------------------------------------

Decide = Callable[[ChargeRecord | None], ChargeRecord]


class Ledger(Protocol):
    """The simulated provider's storage. `update_*` read a record under a lock, apply
    `decide` and store its result atomically (`decide` raising stores nothing)."""

    async def add_card(self, card: VaultCard) -> None: ...

    async def card(self, token: str) -> VaultCard | None: ...

    async def update_charge(self, idempotency_key: str, decide: Decide) -> ChargeRecord: ...

    async def update_charge_by_id(self, charge_id: str, decide: Decide) -> ChargeRecord: ...


class MemoryLedger:
    """In-process records (tests); one lock makes every update atomic."""

    def __init__(self) -> None:
        self.cards: dict[str, VaultCard] = {}
        self.charges: dict[str, ChargeRecord] = {}
        self._lock = asyncio.Lock()

    async def add_card(self, card: VaultCard) -> None:
        self.cards[card.token] = card

    async def card(self, token: str) -> VaultCard | None:
        return self.cards.get(token)

    async def update_charge(self, idempotency_key: str, decide: Decide) -> ChargeRecord:
        async with self._lock:
            record = decide(self.charges.get(idempotency_key))
            self.charges[idempotency_key] = record
            return record

    async def update_charge_by_id(self, charge_id: str, decide: Decide) -> ChargeRecord:
        async with self._lock:
            found = next((c for c in self.charges.values() if c.charge_id == charge_id), None)
            record = decide(found)
            self.charges[record.idempotency_key] = record
            return record


class PostgresLedger:
    """Records in `payments.card_tokens` and `payments.provider_charges`; a row lock
    (`FOR UPDATE`) serialises calls for one key, across processes too."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    _ADD_CARD = Sql(
        "INSERT INTO payments.card_tokens (token, last4, brand, exp_month, exp_year, outcome) "
        "VALUES (:token, :last4, :brand, :exp_month, :exp_year, :outcome)"
    )
    _CARD = Sql(
        "SELECT token, last4, brand, exp_month, exp_year, outcome FROM payments.card_tokens WHERE token = :token"
    )

    async def add_card(self, card: VaultCard) -> None:
        async with db.autocommit(self.engine) as session:
            await session.run(
                self._ADD_CARD,
                token=card.token,
                last4=card.last4,
                brand=card.brand,
                exp_month=card.exp_month,
                exp_year=card.exp_year,
                outcome=card.outcome,
            )

    async def card(self, token: str) -> VaultCard | None:
        async with db.autocommit(self.engine) as session:
            row = await session.fetchrow(self._CARD, token=token)
        return VaultCard(*row) if row is not None else None

    _COLUMNS = (
        provider_charges.c.idempotency_key,
        provider_charges.c.charge_id,
        provider_charges.c.token,
        provider_charges.c.amount,
        provider_charges.c.currency,
        provider_charges.c.status,
        provider_charges.c.decline_code,
        provider_charges.c.tries,
        provider_charges.c.refund_id,
    )

    # What a record changes (all of it but its key), column for field.
    _CHANGES = ("charge_id", "token", "amount", "currency", "status", "decline_code", "tries", "refund_id")

    @classmethod
    def _values(cls, record: ChargeRecord, current: ChargeRecord | None) -> dict[str, object]:
        values: dict[str, object] = {f: getattr(record, f) for f in cls._CHANGES}
        values["updated_at"] = sa.func.now()
        if record.refund_id is not None and (current is None or current.refund_id is None):
            values["refunded_at"] = sa.func.now()
        return values

    _INSERT = Sql(
        f"INSERT INTO payments.provider_charges (idempotency_key, {', '.join(_CHANGES)}, updated_at, refunded_at) "
        f"VALUES (:idempotency_key, {', '.join(':' + f for f in _CHANGES)}, now(), CASE WHEN :refunded THEN now() END) "
        "ON CONFLICT (idempotency_key) DO NOTHING RETURNING idempotency_key"
    )

    async def _insert(self, session: Session, record: ChargeRecord) -> bool:
        params = {f: getattr(record, f) for f in ("idempotency_key", *self._CHANGES)}
        inserted = await session.fetchrow(self._INSERT, **params, refunded=record.refund_id is not None)
        return inserted is not None

    async def _update(self, where: sa.ColumnElement[bool], decide: Decide) -> ChargeRecord:
        t = provider_charges
        # Two first calls for one key can both find no row; the loser of the insert
        # race goes round again and then waits on the winner's row lock.
        while True:
            async with db.transaction(self.engine) as conn:
                row = (await conn.execute(sa.select(*self._COLUMNS).where(where).with_for_update())).first()
                current = ChargeRecord(*row) if row is not None else None
                record = decide(current)
                if record == current:
                    return record
                if current is not None:
                    await conn.execute(
                        sa.update(t)
                        .where(t.c.idempotency_key == record.idempotency_key)
                        .values(self._values(record, current))
                    )
                    return record
                if await self._insert(conn, record):
                    return record

    async def update_charge(self, idempotency_key: str, decide: Decide) -> ChargeRecord:
        # Most keys are new: try the first call's record straight away (one statement);
        # a key that exists falls back to reading it under its row lock.
        try:
            fresh = decide(None)
        except ProviderRejected:
            fresh = None
        if fresh is not None and fresh.idempotency_key == idempotency_key:
            async with db.autocommit(self.engine) as conn:
                if await self._insert(conn, fresh):
                    return fresh
        return await self._update(provider_charges.c.idempotency_key == idempotency_key, decide)

    async def update_charge_by_id(self, charge_id: str, decide: Decide) -> ChargeRecord:
        return await self._update(provider_charges.c.charge_id == charge_id, decide)


# -- the simulated provider -------------------------------------------------------------


CARD_CACHE_SIZE = 10_000


class SimulatedProvider:
    """API.md's test cards, with `latency_ms` of simulated network time per call."""

    def __init__(
        self,
        ledger: Ledger,
        *,
        latency_ms: int = 0,
        new_id: Callable[[str], str] = random_id,
        today: Callable[[], date] = lambda: datetime.now(UTC).date(),
    ) -> None:
        self.ledger = ledger
        self.latency = max(0, latency_ms) / 1000
        self._new_id = new_id
        self._today = today
        # Vault cards never change: the ones seen lately are kept here (a provider's own
        # cache), which spares most charges a lookup.
        self._cards: OrderedDict[str, VaultCard] = OrderedDict()

    def _remember(self, card: VaultCard) -> None:
        self._cards[card.token] = card
        self._cards.move_to_end(card.token)
        if len(self._cards) > CARD_CACHE_SIZE:
            self._cards.popitem(last=False)

    async def _card(self, token: str) -> VaultCard | None:
        card = self._cards.get(token)
        if card is None:
            card = await self.ledger.card(token)
            if card is not None:
                self._remember(card)
        return card

    async def _network(self) -> None:
        if self.latency:
            await asyncio.sleep(self.latency)

    async def tokenize(self, card: cards.PaymentCardIn) -> CardToken:
        await self._network()
        stored = VaultCard(
            token=self._new_id("tok"),
            last4=card.last4,
            brand=card.brand,
            exp_month=card.exp_month,
            exp_year=card.exp_year,
            outcome=outcome_for_card(card.card_number),
        )
        await self.ledger.add_card(stored)
        self._remember(stored)
        return CardToken(token=stored.token, last4=stored.last4, brand=stored.brand)

    async def charge(self, *, token: str, amount: Decimal, currency: str, idempotency_key: str) -> Charge:
        await self._network()
        card = await self._card(token)
        if card is not None and card.outcome == NO_ANSWER:
            # The provider takes the request and never answers; only the caller's
            # timeout ends this.
            await asyncio.Future()

        def decide(current: ChargeRecord | None) -> ChargeRecord:
            return decide_charge(
                current,
                card=card,
                idempotency_key=idempotency_key,
                token=token,
                amount=amount,
                currency=currency,
                today=self._today(),
                new_id=self._new_id,
            )

        record = await self.ledger.update_charge(idempotency_key, decide)
        if record.status == PENDING:
            raise ProviderError(f"provider error on try {record.tries} (simulated)")
        if card is None:  # decide_charge refuses an unknown token; this keeps the types honest
            raise ProviderRejected("no such card token")
        return Charge(
            charge_id=record.charge_id,
            status=record.status,
            decline_code=record.decline_code,
            amount=record.amount,
            currency=record.currency,
            last4=card.last4,
            brand=card.brand,
        )

    async def refund(self, *, charge_id: str, idempotency_key: str) -> Refund:
        # The simulated provider keys refunds by charge (one full refund per charge),
        # so `idempotency_key` adds nothing here; a real provider would use it.
        await self._network()
        record = await self.ledger.update_charge_by_id(
            charge_id, lambda current: decide_refund(current, new_id=self._new_id)
        )
        if record.refund_id is None:
            raise ProviderRejected("the charge was not refunded")
        return Refund(
            refund_id=record.refund_id, charge_id=record.charge_id, amount=record.amount, currency=record.currency
        )
