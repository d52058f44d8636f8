"""`payments.payments`: every query the service makes on its own books.

Each function takes the caller's session (one transaction) and keyword arguments.
State changes are conditional updates (`WHERE status = ...`), so two deliveries of
one event, a redelivery racing the resumer, or a refund racing a charge's outcome
can each change a payment at most once; the loser sees `None` and does nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from prost.kit import db, inbox, outbox
from prost.kit.db import Session, Sql
from prost.kit.messages import Envelope
from prost.payments import domain
from prost.payments.tables import payments

_COLUMNS = (
    payments.c.id,
    payments.c.order_id,
    payments.c.user_id,
    payments.c.amount,
    payments.c.currency,
    payments.c.status,
    payments.c.failure_reason,
    payments.c.idempotency_key,
    payments.c.card_token,
    payments.c.provider_charge_id,
    payments.c.provider_refund_id,
    payments.c.last4,
    payments.c.brand,
    payments.c.attempts,
    payments.c.refund_requested_at,
)


class KeyConflict(Exception):
    """The idempotency key already belongs to another order's payment."""


_RETURNING = "RETURNING " + ", ".join(c.name for c in _COLUMNS)


def _payment(row: Any) -> domain.Payment:
    """A payment from a row of `_COLUMNS`, read either way (`Sql` or Core)."""
    return domain.Payment(**db.mapping(row))


@dataclass(frozen=True, slots=True)
class NewPayment:
    """What a payment request asks for."""

    order_id: uuid.UUID
    user_id: uuid.UUID
    amount: Decimal
    currency: str
    idempotency_key: str
    card_token: str


_ADD = Sql(
    "INSERT INTO payments.payments (id, order_id, user_id, amount, currency, status, idempotency_key, card_token,"
    " attempts) VALUES (:id, :order_id, :user_id, :amount, :currency, :status, :idempotency_key, :card_token, 1)"
    " ON CONFLICT DO NOTHING " + _RETURNING
)


async def add(session: Session, new: NewPayment) -> domain.Payment | None:
    """The order's payment, created `processing` (its first attempt counted); None when
    the order already has one (or the key belongs to another order's). One statement."""
    inserted = await session.fetchrow(
        _ADD,
        id=uuid.uuid4(),
        order_id=new.order_id,
        user_id=new.user_id,
        amount=new.amount,
        currency=new.currency,
        status=domain.PROCESSING,
        idempotency_key=new.idempotency_key,
        card_token=new.card_token,
    )
    return _payment(inserted) if inserted is not None else None


async def existing(session: Session, new: NewPayment) -> domain.Payment:
    """The payment `add` found already there, locked for the caller's transaction
    (payments are never deleted); `KeyConflict` when what was there is another order's
    payment with the same idempotency key."""
    found = await get_by_order(session, order_id=new.order_id, for_update=True)
    if found is None:
        raise KeyConflict(f"idempotency key {new.idempotency_key!r} belongs to another order's payment")
    return found


async def get(session: Session, *, payment_id: uuid.UUID) -> domain.Payment | None:
    row = (await session.execute(sa.select(*_COLUMNS).where(payments.c.id == payment_id))).first()
    return _payment(row) if row is not None else None


async def get_by_order(session: Session, *, order_id: uuid.UUID, for_update: bool = False) -> domain.Payment | None:
    query = sa.select(*_COLUMNS).where(payments.c.order_id == order_id)
    if for_update:
        query = query.with_for_update()
    row = (await session.execute(query)).first()
    return _payment(row) if row is not None else None


async def begin_attempt(session: Session, *, payment_id: uuid.UUID) -> bool:
    """Count one more provider call, if the payment is still processing."""
    t = payments
    done = await session.execute(
        sa.update(t)
        .where(t.c.id == payment_id, t.c.status == domain.PROCESSING)
        .values(attempts=t.c.attempts + 1, updated_at=sa.func.now())
        .returning(t.c.id)
    )
    return done.first() is not None


# A charge's outcome in one statement: the inbox record of the event that asked for it
# (`r`; none for the resumer's), the payment leaving `processing` if that record is
# new (`s`: the outcome `settled` made) and the event that announces it, if `s` wrote.
_SETTLE = outbox.with_events(
    domain.SERVICE,
    f"WITH r AS ({inbox.record_sql(domain.SERVICE)}), s AS ("
    "UPDATE payments.payments SET status = :status, failure_reason = :failure_reason,"
    " provider_charge_id = :charge_id, last4 = :last4, brand = :brand,"
    " updated_at = now(), settled_at = now()"
    " WHERE id = :payment_id AND status = :processing"
    " AND (CAST(:event_id AS uuid) IS NULL OR EXISTS (SELECT FROM r)) " + _RETURNING + "), {events} SELECT * FROM s",
    only_if="s",
)


def settled(
    payment: domain.Payment,
    *,
    status: str,
    failure_reason: str | None = None,
    charge_id: str | None = None,
    last4: str | None = None,
    brand: str | None = None,
) -> domain.Payment:
    """`payment` as `settle` will leave it (what its announcement is made of): the card's
    last four and brand when the provider told them, else as they were."""
    return replace(
        payment,
        status=status,
        failure_reason=failure_reason,
        provider_charge_id=charge_id,
        last4=last4 if last4 is not None else payment.last4,
        brand=brand if brand is not None else payment.brand,
    )


async def settle(
    session: Session, outcome: domain.Payment, *, caused_by: uuid.UUID | None, announce: Sequence[Envelope]
) -> domain.Payment | None:
    """Record the charge's `outcome` (from `settled`) and send `announce` with it, in one
    statement, with the inbox record of the event `caused_by` (if any). None, with
    nothing written but that record, when the payment had already left `processing`;
    None with nothing written at all when that event was recorded before."""
    rows = await outbox.fetch_with_events(
        session,
        _SETTLE,
        announce,
        event_id=caused_by,
        service_name=domain.SERVICE,
        payment_id=outcome.id,
        processing=domain.PROCESSING,
        status=outcome.status,
        failure_reason=outcome.failure_reason,
        charge_id=outcome.provider_charge_id,
        last4=outcome.last4,
        brand=outcome.brand,
    )
    return _payment(rows[0]) if rows else None


async def note_refund_request(session: Session, *, payment_id: uuid.UUID, reason: str) -> domain.Payment | None:
    """Remember that a refund was asked for (the first request's time and reason stay)."""
    t = payments
    row = (
        await session.execute(
            sa.update(t)
            .where(t.c.id == payment_id)
            .values(
                refund_requested_at=sa.func.coalesce(t.c.refund_requested_at, sa.func.now()),
                refund_reason=sa.func.coalesce(t.c.refund_reason, reason),
                updated_at=sa.func.now(),
            )
            .returning(*_COLUMNS)
        )
    ).first()
    return _payment(row) if row is not None else None


async def mark_refunded(session: Session, *, payment_id: uuid.UUID, refund_id: str) -> domain.Payment | None:
    """`succeeded` → `refunded`; None when it was not (or no longer) succeeded."""
    t = payments
    row = (
        await session.execute(
            sa.update(t)
            .where(t.c.id == payment_id, t.c.status == domain.SUCCEEDED)
            .values(
                status=domain.REFUNDED,
                provider_refund_id=refund_id,
                refunded_at=sa.func.now(),
                updated_at=sa.func.now(),
            )
            .returning(*_COLUMNS)
        )
    ).first()
    return _payment(row) if row is not None else None


async def _claim(
    session: Session, condition: sa.ColumnElement[bool], *, older_than: float, limit: int
) -> list[domain.Payment]:
    # Taking a row bumps its updated_at: another replica's resumer skips it (locked now,
    # recent later) until it, too, has stalled for `older_than`.
    t = payments
    victims = (
        sa.select(t.c.id)
        .where(condition, t.c.updated_at < sa.func.now() - sa.func.make_interval(0, 0, 0, 0, 0, 0, older_than))
        .order_by(t.c.updated_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    rows = (
        await session.execute(
            sa.update(t).where(t.c.id.in_(victims)).values(updated_at=sa.func.now()).returning(*_COLUMNS)
        )
    ).all()
    return [_payment(row) for row in rows]


async def claim_stalled_charges(session: Session, *, older_than: float, limit: int = 20) -> list[domain.Payment]:
    """Charges left `processing` with nobody working on them."""
    return await _claim(session, payments.c.status == domain.PROCESSING, older_than=older_than, limit=limit)


async def claim_pending_refunds(session: Session, *, older_than: float, limit: int = 20) -> list[domain.Payment]:
    """Succeeded charges whose requested refund has not been completed."""
    condition = sa.and_(payments.c.status == domain.SUCCEEDED, payments.c.refund_requested_at.is_not(None))
    return await _claim(session, condition, older_than=older_than, limit=limit)
