"""The cart's tables and every query on them (SQLAlchemy Core, parameterised).

Locking: a cart row is taken `FOR NO KEY UPDATE` before its lines, locks or saga rows
change. The cart row is the one lock per cart, so two requests of one user, the event
handlers and the re-hold loop take turns, and never deadlock on each other. (`NO KEY`
lets rows that only reference the cart, like a saga row, be inserted meanwhile.)
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from prost.cart.domain import (
    LIVE_SAGA,
    CartRecord,
    CartStatus,
    Hold,
    Line,
    LockStatus,
    Product,
    SagaRecord,
    SagaStatus,
)
from prost.cart.tables import cart_items, carts, inventory_locks, saga_states
from prost.kit.db import Session

_CURRENT = (CartStatus.OPEN.value, CartStatus.CHECKED_OUT.value)


def _cart(row: Any) -> CartRecord:
    return CartRecord(id=row.id, user_id=row.user_id, status=CartStatus(row.status), currency=row.currency)


def _saga(row: Any) -> SagaRecord:
    return SagaRecord(
        id=row.id,
        cart_id=row.cart_id,
        order_id=row.order_id,
        user_id=row.user_id,
        status=SagaStatus(row.status),
        lines=list(row.lines),
    )


class CartRepository:
    """Carts, their lines and their locks."""

    # -- carts --------------------------------------------------------------------------

    @staticmethod
    async def get_current(session: Session, *, user_id: uuid.UUID, lock: bool = False) -> CartRecord | None:
        """The user's current cart (`open` or `checked_out`), if there is one."""
        query = sa.select(carts).where(carts.c.user_id == user_id, carts.c.status.in_(_CURRENT))
        if lock:
            query = query.with_for_update(key_share=True)
        row = (await session.execute(query)).first()
        return _cart(row) if row is not None else None

    @staticmethod
    async def get(session: Session, *, cart_id: uuid.UUID, lock: bool = False) -> CartRecord | None:
        query = sa.select(carts).where(carts.c.id == cart_id)
        if lock:
            query = query.with_for_update(key_share=True)
        row = (await session.execute(query)).first()
        return _cart(row) if row is not None else None

    @staticmethod
    async def add_open(session: Session, *, user_id: uuid.UUID) -> None:
        """Create an open cart unless the user already has a current one.

        Race-safe: two first uses at once meet on the partial unique index; the second
        insert waits for the first transaction and then does nothing."""
        stmt = (
            pg.insert(carts)
            .values(id=uuid.uuid4(), user_id=user_id, status=CartStatus.OPEN.value)
            .on_conflict_do_nothing(
                index_elements=[carts.c.user_id],
                # A literal predicate: the planner must prove it implies the partial
                # index's, which it cannot do for bound parameters in a generic plan.
                index_where=sa.text("status IN ('open', 'checked_out')"),
            )
        )
        await session.execute(stmt)

    @staticmethod
    async def set_status(session: Session, *, cart_id: uuid.UUID, status: CartStatus) -> None:
        values: dict[str, Any] = {"status": status.value, "updated_at": sa.func.now()}
        if status == CartStatus.CHECKED_OUT:
            values["checked_out_at"] = sa.func.now()
        await session.execute(sa.update(carts).where(carts.c.id == cart_id).values(**values))

    @staticmethod
    async def touch(session: Session, *, cart_id: uuid.UUID, currency: str | None = None) -> None:
        values: dict[str, Any] = {"updated_at": sa.func.now()}
        if currency is not None:
            values["currency"] = currency
        await session.execute(sa.update(carts).where(carts.c.id == cart_id).values(**values))

    @staticmethod
    async def claim_carts_waiting_for_holds(session: Session, *, limit: int) -> list[uuid.UUID]:
        """Open carts with lines waiting for a hold, locked; other replicas skip them."""
        waiting = sa.select(inventory_locks.c.cart_id).where(
            inventory_locks.c.status == LockStatus.PENDING.value, inventory_locks.c.cart_id == carts.c.id
        )
        query = (
            sa.select(carts.c.id)
            .where(carts.c.status == CartStatus.OPEN.value, sa.exists(waiting))
            .order_by(carts.c.updated_at)
            .limit(limit)
            .with_for_update(key_share=True, skip_locked=True)
        )
        return list((await session.execute(query)).scalars())

    # -- lines --------------------------------------------------------------------------

    @staticmethod
    async def lines(session: Session, *, cart_id: uuid.UUID) -> list[Line]:
        """The cart's lines in the order they were added, each with its lock."""
        query = (
            sa.select(
                cart_items.c.product_id,
                cart_items.c.quantity,
                cart_items.c.sku,
                cart_items.c.name,
                cart_items.c.unit_price,
                cart_items.c.currency,
                inventory_locks.c.status.label("lock_status"),
                inventory_locks.c.quantity.label("lock_quantity"),
                inventory_locks.c.expires_at,
            )
            .select_from(
                cart_items.outerjoin(
                    inventory_locks,
                    sa.and_(
                        inventory_locks.c.cart_id == cart_items.c.cart_id,
                        inventory_locks.c.product_id == cart_items.c.product_id,
                    ),
                )
            )
            .where(cart_items.c.cart_id == cart_id)
            .order_by(cart_items.c.created_at, cart_items.c.product_id)
        )
        return [
            Line(
                product_id=r.product_id,
                quantity=r.quantity,
                sku=r.sku,
                name=r.name,
                unit_price=r.unit_price,
                currency=r.currency,
                lock_status=LockStatus(r.lock_status) if r.lock_status is not None else None,
                lock_quantity=r.lock_quantity or 0,
                expires_at=r.expires_at,
            )
            for r in (await session.execute(query)).all()
        ]

    @staticmethod
    async def save_line(session: Session, *, cart_id: uuid.UUID, product: Product, quantity: int) -> None:
        """Insert or update a line (quantity, and the product as the catalog just said)."""
        values = {
            "sku": product.sku,
            "name": product.name,
            "unit_price": product.price,
            "currency": product.currency,
            "quantity": quantity,
        }
        stmt = pg.insert(cart_items).values(id=uuid.uuid4(), cart_id=cart_id, product_id=product.product_id, **values)
        stmt = stmt.on_conflict_do_update(
            index_elements=[cart_items.c.cart_id, cart_items.c.product_id],
            set_={**values, "updated_at": sa.func.now()},
        )
        await session.execute(stmt)

    @staticmethod
    async def remove_line(session: Session, *, cart_id: uuid.UUID, product_id: uuid.UUID) -> None:
        await session.execute(
            sa.delete(inventory_locks).where(
                inventory_locks.c.cart_id == cart_id, inventory_locks.c.product_id == product_id
            )
        )
        await session.execute(
            sa.delete(cart_items).where(cart_items.c.cart_id == cart_id, cart_items.c.product_id == product_id)
        )

    # -- locks (the cart's view of its holds) --------------------------------------------

    @staticmethod
    async def record_hold(session: Session, *, cart_id: uuid.UUID, hold: Hold) -> None:
        """The catalog holds `hold.quantity` units for this line until `hold.expires_at`."""
        values = {
            "quantity": hold.quantity,
            "status": LockStatus.ACTIVE.value,
            "expires_at": hold.expires_at,
            "held_at": sa.func.now(),
        }
        stmt = pg.insert(inventory_locks).values(id=uuid.uuid4(), cart_id=cart_id, product_id=hold.product_id, **values)
        stmt = stmt.on_conflict_do_update(
            index_elements=[inventory_locks.c.cart_id, inventory_locks.c.product_id],
            set_={**values, "updated_at": sa.func.now()},
        )
        await session.execute(stmt)

    @staticmethod
    async def record_no_hold(
        session: Session, *, cart_id: uuid.UUID, product_ids: Iterable[uuid.UUID], status: LockStatus
    ) -> None:
        """Lines that have no hold now (`pending`, `unavailable`, or `expired`, which
        keeps its expiry but moves it no later than now)."""
        ids = list(product_ids)
        if not ids:
            return
        values: dict[str, Any] = {"status": status.value, "updated_at": sa.func.now(), "held_at": sa.func.now()}
        if status == LockStatus.EXPIRED:
            values["expires_at"] = sa.func.least(
                sa.func.coalesce(inventory_locks.c.expires_at, sa.func.now()), sa.func.now()
            )
        await session.execute(
            sa.update(inventory_locks)
            .where(inventory_locks.c.cart_id == cart_id, inventory_locks.c.product_id.in_(ids))
            .values(**values)
        )
        # A line whose lock row is missing (should not happen) gets one, so it is visible.
        for pid in ids:
            await session.execute(
                pg.insert(inventory_locks)
                .values(
                    id=uuid.uuid4(),
                    cart_id=cart_id,
                    product_id=pid,
                    quantity=0,
                    status=status.value,
                    held_at=sa.func.now(),
                )
                .on_conflict_do_nothing(index_elements=[inventory_locks.c.cart_id, inventory_locks.c.product_id])
            )

    @staticmethod
    async def refresh_holds(session: Session, *, cart_id: uuid.UUID, holds: Sequence[Hold]) -> None:
        """Take the catalog's word after an extend: listed holds are active until their
        new expiry; active locks it did not list have lapsed."""
        listed = {h.product_id: h for h in holds}
        for hold in listed.values():
            await session.execute(
                sa.update(inventory_locks)
                .where(
                    inventory_locks.c.cart_id == cart_id,
                    inventory_locks.c.product_id == hold.product_id,
                    inventory_locks.c.status.in_([LockStatus.ACTIVE.value, LockStatus.EXPIRED.value]),
                )
                .values(
                    quantity=hold.quantity,
                    status=LockStatus.ACTIVE.value,
                    expires_at=hold.expires_at,
                    held_at=sa.func.now(),
                    updated_at=sa.func.now(),
                )
            )
        lapsed = sa.update(inventory_locks).where(
            inventory_locks.c.cart_id == cart_id, inventory_locks.c.status == LockStatus.ACTIVE.value
        )
        if listed:
            lapsed = lapsed.where(inventory_locks.c.product_id.not_in(list(listed)))
        await session.execute(
            lapsed.values(
                status=LockStatus.EXPIRED.value,
                expires_at=sa.func.least(inventory_locks.c.expires_at, sa.func.now()),
                updated_at=sa.func.now(),
            )
        )

    @staticmethod
    async def set_locks(
        session: Session, *, cart_id: uuid.UUID, status: LockStatus, where: Sequence[LockStatus] | None = None
    ) -> int:
        """Move the cart's locks (those in `where`, default all) to `status`."""
        stmt = sa.update(inventory_locks).where(inventory_locks.c.cart_id == cart_id)
        if where is not None:
            stmt = stmt.where(inventory_locks.c.status.in_([s.value for s in where]))
        result = await session.execute(stmt.values(status=status.value, updated_at=sa.func.now()))
        return int(result.rowcount)

    @staticmethod
    async def expire_locks(session: Session, *, cart_id: uuid.UUID, product_ids: Sequence[uuid.UUID]) -> int:
        """The catalog's sweeper expired these holds. Only locks whose known expiry has
        passed change: one with a later expiry stands for a newer hold (the event is stale)."""
        result = await session.execute(
            sa.update(inventory_locks)
            .where(
                inventory_locks.c.cart_id == cart_id,
                inventory_locks.c.product_id.in_(list(product_ids)),
                inventory_locks.c.status == LockStatus.ACTIVE.value,
                inventory_locks.c.expires_at <= sa.func.now(),
            )
            .values(status=LockStatus.EXPIRED.value, updated_at=sa.func.now())
        )
        return int(result.rowcount)

    @staticmethod
    async def drop_locks_released_before(
        session: Session, *, cart_id: uuid.UUID, product_ids: Sequence[uuid.UUID], released_at: datetime
    ) -> int:
        """The catalog released these holds itself (not by expiry). Locks recorded after
        that moment stand for newer holds and stay."""
        result = await session.execute(
            sa.update(inventory_locks)
            .where(
                inventory_locks.c.cart_id == cart_id,
                inventory_locks.c.product_id.in_(list(product_ids)),
                inventory_locks.c.status == LockStatus.ACTIVE.value,
                inventory_locks.c.held_at < released_at,
            )
            .values(
                status=LockStatus.EXPIRED.value,
                expires_at=sa.func.least(inventory_locks.c.expires_at, released_at),
                updated_at=sa.func.now(),
            )
        )
        return int(result.rowcount)


class SagaRepository:
    """The cart's record of its checkouts (`cart.saga_states`)."""

    @staticmethod
    async def live(session: Session, *, cart_id: uuid.UUID) -> SagaRecord | None:
        """The checkout in flight for this cart (`starting` or `placed`), if any."""
        query = sa.select(saga_states).where(
            saga_states.c.cart_id == cart_id, saga_states.c.status.in_([s.value for s in LIVE_SAGA])
        )
        row = (await session.execute(query)).first()
        return _saga(row) if row is not None else None

    @staticmethod
    async def get_by_order(session: Session, *, order_id: uuid.UUID, lock: bool = False) -> SagaRecord | None:
        query = sa.select(saga_states).where(saga_states.c.order_id == order_id)
        if lock:
            query = query.with_for_update()
        row = (await session.execute(query)).first()
        return _saga(row) if row is not None else None

    @staticmethod
    async def add(
        session: Session, *, cart_id: uuid.UUID, order_id: uuid.UUID, user_id: uuid.UUID, lines: list[dict[str, object]]
    ) -> SagaRecord:
        row = (
            await session.execute(
                sa.insert(saga_states)
                .values(
                    id=uuid.uuid4(),
                    cart_id=cart_id,
                    order_id=order_id,
                    user_id=user_id,
                    status=SagaStatus.STARTING.value,
                    lines=lines,
                )
                .returning(saga_states)
            )
        ).one()
        return _saga(row)

    @staticmethod
    async def move(session: Session, *, saga_id: uuid.UUID, to: SagaStatus, reason: str | None = None) -> None:
        values: dict[str, Any] = {"status": to.value, "updated_at": sa.func.now(), "version": saga_states.c.version + 1}
        if to == SagaStatus.PLACED:
            values["placed_at"] = sa.func.now()
        if to in (SagaStatus.CONFIRMED, SagaStatus.CANCELLED, SagaStatus.SUPERSEDED):
            values["finished_at"] = sa.func.now()
        if reason is not None:
            values["failure_reason"] = reason[:50]
        await session.execute(sa.update(saga_states).where(saga_states.c.id == saga_id).values(**values))
