"""`payments.payments`: every query the service makes on its own books.

Each function takes the caller's session (one transaction) and keyword arguments.
State changes are conditional updates (`WHERE status = ...`), so two deliveries of
one event, a redelivery racing the resumer, or a refund racing a charge's outcome
can each change a payment at most once; the loser sees `None` and does nothing.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from prost.kit.db import Session
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


def _payment(row: Any) -> domain.Payment:
    return domain.Payment(**row._mapping)


@dataclass(frozen=True, slots=True)
class NewPayment:
    """What a payment request asks for."""

    order_id: uuid.UUID
    user_id: uuid.UUID
    amount: Decimal
    currency: str
    idempotency_key: str
    card_token: str


_ADD = (
    pg.insert(payments)
    .values(
        id=sa.bindparam("id"),
        order_id=sa.bindparam("order_id"),
        user_id=sa.bindparam("user_id"),
        amount=sa.bindparam("amount"),
        currency=sa.bindparam("currency"),
        status=domain.PROCESSING,
        idempotency_key=sa.bindparam("idempotency_key"),
        card_token=sa.bindparam("card_token"),
        attempts=1,
    )
    .on_conflict_do_nothing()
    .returning(*_COLUMNS)
)


async def add(session: Session, new: NewPayment) -> domain.Payment | None:
    """The order's payment, created `processing` (its first attempt counted); None when
    the order already has one (or the key belongs to another order's). One statement."""
    params = {
        "id": uuid.uuid4(),
        "order_id": new.order_id,
        "user_id": new.user_id,
        "amount": new.amount,
        "currency": new.currency,
        "idempotency_key": new.idempotency_key,
        "card_token": new.card_token,
    }
    inserted = (await session.execute(_ADD, params)).first()
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


_SETTLE = (
    sa.update(payments)
    .where(payments.c.id == sa.bindparam("payment_id"), payments.c.status == domain.PROCESSING)
    .values(
        status=sa.bindparam("status"),
        failure_reason=sa.bindparam("failure_reason"),
        provider_charge_id=sa.bindparam("charge_id"),
        # The card's last four and brand, when the provider told them; else as they were.
        last4=sa.func.coalesce(sa.bindparam("last4", type_=payments.c.last4.type), payments.c.last4),
        brand=sa.func.coalesce(sa.bindparam("brand", type_=payments.c.brand.type), payments.c.brand),
        updated_at=sa.func.now(),
        settled_at=sa.func.now(),
    )
    .returning(*_COLUMNS)
)


async def settle(
    session: Session,
    *,
    payment_id: uuid.UUID,
    status: str,
    failure_reason: str | None = None,
    charge_id: str | None = None,
    last4: str | None = None,
    brand: str | None = None,
) -> domain.Payment | None:
    """Record the charge's outcome; None when the payment had already left `processing`."""
    params = {
        "payment_id": payment_id,
        "status": status,
        "failure_reason": failure_reason,
        "charge_id": charge_id,
        "last4": last4,
        "brand": brand,
    }
    row = (await session.execute(_SETTLE, params)).first()
    return _payment(row) if row is not None else None


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
