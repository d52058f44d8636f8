"""The orders schema's queries; nothing else touches these tables.

`OrderRepository` stores and reads orders. `SagaRepository` loads a saga with its row
locked (`FOR UPDATE`: a user's cancel, an event handler and the reconciler take turns
on one order) and applies a `saga.Decision` in the caller's transaction: the saga
row (version-checked), the order's status, the compensation log, the orders' view of
the reservation and the outgoing events (outbox) all commit together.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from prost.contracts.catalog import StockLine
from prost.kit import outbox
from prost.kit.db import Session, Sql
from prost.kit.messages import Envelope
from prost.orders import saga as sg
from prost.orders.domain import PricedOrder
from prost.orders.tables import compensation_log, order_items, orders, saga_states

SERVICE = "orders"


class StaleSaga(Exception):
    """The saga row changed under a transition that held its lock: a bug, or a retry."""


def envelope_for(event: Any, *, order_id: uuid.UUID, caused_by: Envelope | None) -> Envelope:
    return Envelope.wrap(event, producer=SERVICE, correlation_id=order_id, caused_by=caused_by)


# -- orders ------------------------------------------------------------------------------

# The order, its lines, its saga row and the saga's first event in one round trip,
# written once as text (no per-call SQL building: placing an order is the hot path).
# The lines, the saga and the event need a row from `o`, so nothing is written when
# the order id already existed.
_PLACE_ORDER = outbox.with_events(
    SERVICE,
    """
    WITH o AS (
        INSERT INTO orders.orders (id, user_id, cart_id, status, total_amount, currency,
                                   payment_token, card_last4, card_brand, created_at, updated_at)
        VALUES (:id, :user_id, :cart_id, 'pending', :total_amount, :currency,
                :payment_token, :card_last4, :card_brand, :now, :now)
        ON CONFLICT (id) DO NOTHING
        RETURNING id
    ), i AS (
        INSERT INTO orders.order_items (order_id, product_id, position, sku, name, quantity, unit_price, line_total)
        SELECT o.id, l.product_id, (l.n - 1)::smallint, l.sku, l.name, l.quantity, l.unit_price, l.line_total
        FROM o, unnest(CAST(:product_ids AS uuid[]), CAST(:skus AS text[]), CAST(:names AS text[]),
                       CAST(:quantities AS int[]), CAST(:unit_prices AS numeric[]), CAST(:line_totals AS numeric[]))
                WITH ORDINALITY AS l(product_id, sku, name, quantity, unit_price, line_total, n)
    ), s AS (
        INSERT INTO orders.saga_states (order_id, step, status, deadline, version, lines, steps, created_at, updated_at)
        SELECT o.id, CAST(:step AS text), CAST(:saga_status AS text), CAST(:deadline AS timestamptz),
               CAST(:version AS int), CAST(:lines AS jsonb), CAST(:steps AS jsonb), :now, :now FROM o
    ), {events}
    SELECT count(*) FROM o
    """,
    only_if="o",
)


class OrderRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    async def add(
        self,
        *,
        order_id: uuid.UUID,
        user_id: uuid.UUID,
        cart_id: uuid.UUID | None,
        priced: PricedOrder,
        payment_token: str,
        card_last4: str,
        card_brand: str,
        saga: sg.Decision,
        now: datetime,
    ) -> bool:
        """Insert the order, its lines, its saga and the saga's first events: one
        statement, so it needs no transaction of its own. False, with nothing written,
        when `order_id` already exists."""
        state = saga.saga
        lines = priced.lines
        envelopes, compensations = _outgoing(state, saga.commands, caused_by=None)
        if compensations:
            raise ValueError("a saga starts without compensations")
        (created,) = await outbox.fetch_with_events(
            self.session,
            _PLACE_ORDER,
            envelopes,
            id=order_id,
            user_id=user_id,
            cart_id=cart_id,
            total_amount=priced.total_amount,
            currency=priced.currency,
            payment_token=payment_token,
            card_last4=card_last4,
            card_brand=card_brand,
            now=now,
            product_ids=[line.product_id for line in lines],
            skus=[line.sku for line in lines],
            names=[line.name for line in lines],
            quantities=[line.quantity for line in lines],
            unit_prices=[line.unit_price for line in lines],
            line_totals=[line.line_total for line in lines],
            step=state.step.value,
            saga_status=state.status,
            deadline=state.deadline,
            version=state.version,
            lines=_json(_lines_json(state.lines)),
            steps=_json(_steps_json(state.steps)),
        )
        return bool(created[0])

    async def get(self, order_id: uuid.UUID) -> tuple[Mapping[str, Any], list[Mapping[str, Any]]] | None:
        row = (await self.session.execute(sa.select(orders).where(orders.c.id == order_id))).mappings().first()
        if row is None:
            return None
        items = await self.items_of([order_id])
        return dict(row), items.get(order_id, [])

    async def items_of(self, order_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[Mapping[str, Any]]]:
        if not order_ids:
            return {}
        rows = (
            await self.session.execute(
                sa.select(order_items)
                .where(order_items.c.order_id.in_(order_ids))
                .order_by(order_items.c.order_id, order_items.c.position)
            )
        ).mappings()
        out: dict[uuid.UUID, list[Mapping[str, Any]]] = {}
        for item in rows:
            out.setdefault(item["order_id"], []).append(dict(item))
        return out

    async def list(
        self, *, user_id: uuid.UUID | None, status: str | None, page: int, page_size: int
    ) -> tuple[list[tuple[Mapping[str, Any], list[Mapping[str, Any]]]], int]:
        """A page of orders, newest first (all users when `user_id` is None) and the total."""
        where = []
        if user_id is not None:
            where.append(orders.c.user_id == user_id)
        if status is not None:
            where.append(orders.c.status == status)
        total = await self.session.scalar(sa.select(sa.func.count()).select_from(orders).where(*where))
        rows = (
            (
                await self.session.execute(
                    sa.select(orders)
                    .where(*where)
                    .order_by(orders.c.created_at.desc(), orders.c.id.desc())
                    .limit(page_size)
                    .offset((page - 1) * page_size)
                )
            )
            .mappings()
            .all()
        )
        items = await self.items_of([r["id"] for r in rows])
        return [(dict(r), items.get(r["id"], [])) for r in rows], int(total or 0)


# -- sagas -------------------------------------------------------------------------------


def _ts(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


def saga_from_row(row: Mapping[Any, Any]) -> sg.Saga:
    compensations = {
        sg.Action(c["action"]): sg.Compensation(
            action=sg.Action(c["action"]),
            status=c["status"],
            reason=c["reason"],
            attempts=c["attempts"],
            at=_ts(c["at"]),
        )
        for c in row["compensations"] or []
    }
    return sg.Saga(
        order_id=row["order_id"],
        user_id=row["user_id"],
        cart_id=row["cart_id"],
        lines=tuple(StockLine.model_validate(line) for line in row["lines"]),
        amount=Decimal(row["total_amount"]),
        currency=row["currency"],
        payment_token=row["payment_token"],
        step=sg.Step(row["step"]),
        order_status=sg.OrderStatus(row["order_status"]),
        failure_reason=sg.Reason(row["failure_reason"]) if row["failure_reason"] else None,
        version=row["version"],
        deadline=row["deadline"],
        steps=tuple(sg.StepRecord(s["name"], s["status"], _ts(s["at"])) for s in row["steps"]),
        compensations=compensations,
        payment_id=row["payment_id"],
        reservation_expires_at=row["reservation_expires_at"],
    )


def _steps_json(steps: Sequence[sg.StepRecord]) -> list[dict[str, str]]:
    return [{"name": s.name, "status": s.status, "at": s.at.isoformat()} for s in steps]


def _lines_json(lines: Sequence[StockLine]) -> list[dict[str, Any]]:
    return [{"product_id": str(line.product_id), "quantity": line.quantity} for line in lines]


def _json(value: Any) -> str:
    """A jsonb parameter of an `Sql` statement: JSON text, which the server casts."""
    return orjson.dumps(value).decode()


# One saga transition in one round trip, written once as text: the saga row moves on
# (only from the version this transaction read and locked; `moved` false when only the
# reservation view changes), the order takes its new status (only if it changed, so
# `updated_at` is when the status last changed), and the orders' view of the catalog's
# reservation follows (`track`: `reserved` lines, or every line `committed`/`released`).
_ADVANCE = outbox.with_events(
    SERVICE,
    """
    WITH {events}, s AS (
        UPDATE orders.saga_states
           SET step = :step, status = :saga_status, deadline = :deadline, version = :version,
               steps = coalesce(CAST(:steps AS jsonb), steps), payment_id = :payment_id,
               reservation_expires_at = :reservation_expires_at, updated_at = :now
         WHERE order_id = :order_id AND version = :old_version AND CAST(:moved AS boolean)
        RETURNING order_id
    ), o AS (
        UPDATE orders.orders
           SET status = :order_status, failure_reason = :failure_reason, updated_at = :now
         WHERE id = :order_id AND CAST(:moved AS boolean)
           AND (status, failure_reason) IS DISTINCT FROM (CAST(:order_status AS text), CAST(:failure_reason AS text))
    ), r AS (
        INSERT INTO orders.inventory_reservations
               (order_id, product_id, quantity, status, expires_at, created_at, updated_at)
        SELECT :order_id, l.product_id, l.quantity, 'reserved', CAST(:expires_at AS timestamptz), :now, :now
          FROM unnest(CAST(:product_ids AS uuid[]), CAST(:quantities AS int[])) AS l(product_id, quantity)
         WHERE CAST(:track AS text) = 'reserved'
        ON CONFLICT (order_id, product_id)
        DO UPDATE SET status = 'reserved', expires_at = excluded.expires_at, updated_at = excluded.updated_at
    ), u AS (
        UPDATE orders.inventory_reservations SET status = CAST(:track AS text), updated_at = :now
         WHERE order_id = :order_id AND CAST(:track AS text) IN ('committed', 'released')
    )
    SELECT count(*) FROM s
    """,
)

# The saga with what it needs of its order and its compensation log, for one order
# (`_SAGA_BY_ID`) or several (`_SAGA_BY_IDS`, the reconciler's).
_SAGA_SELECT = """
    SELECT s.*, o.user_id, o.cart_id, o.status AS order_status, o.failure_reason, o.total_amount, o.currency,
           o.payment_token,
           (SELECT coalesce(jsonb_agg(jsonb_build_object('action', c.action, 'status', c.status, 'reason', c.reason,
                                                         'attempts', c.attempts, 'at', c.updated_at)), '[]'::jsonb)
              FROM orders.compensation_log c WHERE c.order_id = s.order_id) AS compensations
      FROM orders.saga_states s JOIN orders.orders o ON o.id = s.order_id
"""
_SAGA_BY_ID = Sql(_SAGA_SELECT + " WHERE s.order_id = :order_id")
_SAGA_BY_IDS = Sql(_SAGA_SELECT + " WHERE s.order_id = ANY(CAST(:order_ids AS uuid[]))")
_LOCK_SAGA = Sql("SELECT order_id FROM orders.saga_states WHERE order_id = :order_id FOR UPDATE")


class SagaRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    async def get_for_update(self, order_id: uuid.UUID) -> sg.Saga | None:
        """The saga with its row locked until the transaction ends.

        Locked first, then read by a statement of its own. Under READ COMMITTED a
        statement that waited for the lock sees the new version of the locked row, but
        the joined order row and the compensation log as they were when it began: a
        cancellation committed meanwhile would show as a saga already compensating
        with an order still `pending`, and writing that back undid the cancellation.
        The next statement sees everything committed before it."""
        if await self.session.fetchval(_LOCK_SAGA, order_id=order_id) is None:
            return None
        return await self.get(order_id)

    async def get(self, order_id: uuid.UUID) -> sg.Saga | None:
        row = await self.session.fetchrow(_SAGA_BY_ID, order_id=order_id)
        return saga_from_row(row) if row is not None else None

    async def due(self, now: datetime, *, limit: int) -> list[sg.Saga]:
        """Sagas whose deadline has passed, locked; rows another replica holds are
        skipped. Locked, then read afresh, as in `get_for_update`."""
        locked = (
            await self.session.scalars(
                sa.select(saga_states.c.order_id)
                .where(saga_states.c.deadline.is_not(None), saga_states.c.deadline <= now)
                .order_by(saga_states.c.deadline)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
        ).all()
        if not locked:
            return []
        rows = await self.session.fetch(_SAGA_BY_IDS, order_ids=list(locked))
        by_id = {row["order_id"]: saga_from_row(row) for row in rows}
        return [by_id[order_id] for order_id in locked if order_id in by_id]

    async def compensations(self, order_id: uuid.UUID) -> list[Mapping[str, Any]]:
        rows = await self.session.execute(
            sa.select(compensation_log).where(compensation_log.c.order_id == order_id).order_by(compensation_log.c.id)
        )
        return [dict(r) for r in rows.mappings()]

    async def apply(self, old: sg.Saga, decision: sg.Decision, *, caused_by: Envelope | None, now: datetime) -> None:
        """Write a decision taken on `old` (whose row this transaction has locked): the
        saga row (only if still at `old.version`), the order's status, the orders' view
        of the reservation and the events in one statement (`_ADVANCE`); then the
        compensation log. A saga no longer at `old.version` raises `StaleSaga`, which
        rolls the events back with the rest."""
        if not decision.changed:
            return
        new = decision.saga
        tracked = next((c for c in decision.commands if isinstance(c, sg.TrackReservation)), None)
        reserved = tracked.lines if tracked is not None and tracked.status == "reserved" else ()
        envelopes, sent_for = _outgoing(new, decision.commands, caused_by=caused_by)
        ((count,),) = await outbox.fetch_with_events(
            self.session,
            _ADVANCE,
            envelopes,
            order_id=old.order_id,
            old_version=old.version,
            moved=new != old,
            step=new.step.value,
            saga_status=new.status,
            deadline=new.deadline,
            version=new.version,
            steps=_json(_steps_json(new.steps)) if new.steps != old.steps else None,
            payment_id=new.payment_id,
            reservation_expires_at=new.reservation_expires_at,
            order_status=new.order_status.value,
            failure_reason=new.failure_reason.value if new.failure_reason else None,
            now=now,
            track=tracked.status if tracked is not None else None,
            product_ids=[line.product_id for line in reserved],
            quantities=[line.quantity for line in reserved],
            expires_at=tracked.expires_at if tracked is not None else None,
        )
        if new != old and count != 1:
            raise StaleSaga(f"saga {old.order_id} is no longer at version {old.version}")
        await self._log_compensations(new, old, sent_for, now=now)

    async def _log_compensations(
        self, new: sg.Saga, old: sg.Saga, sent_for: Mapping[sg.Action, uuid.UUID], *, now: datetime
    ) -> None:
        """The compensation log follows the saga's state: written in the transaction of
        the event that carries the compensation (the relay publishes it later)."""
        before = old.compensations
        for action, comp in new.compensations.items():
            if action in sent_for:
                await self._log_compensation(new.order_id, comp, event_id=sent_for[action], now=now)
            elif before.get(action) != comp:
                await self.session.execute(
                    sa.update(compensation_log)
                    .where(compensation_log.c.order_id == new.order_id, compensation_log.c.action == action.value)
                    .values(
                        status=comp.status,
                        attempts=comp.attempts,
                        acknowledged_at=now if comp.status == sg.ACKNOWLEDGED else None,
                        updated_at=now,
                    )
                )

    async def _log_compensation(
        self, order_id: uuid.UUID, comp: sg.Compensation, *, event_id: uuid.UUID, now: datetime
    ) -> None:
        values = {
            "order_id": order_id,
            "action": comp.action.value,
            "status": comp.status,
            "reason": comp.reason,
            "attempts": comp.attempts,
            "event_id": event_id,
            "requested_at": now,
            "acknowledged_at": now if comp.status == sg.ACKNOWLEDGED else None,
            "created_at": now,
            "updated_at": now,
        }
        stmt = pg.insert(compensation_log).values(**values)
        stmt = stmt.on_conflict_do_update(
            index_elements=[compensation_log.c.order_id, compensation_log.c.action],
            set_={
                k: stmt.excluded[k]
                for k in ("status", "attempts", "event_id", "requested_at", "acknowledged_at", "updated_at")
            },
        )
        await self.session.execute(stmt)


def _outgoing(
    new: sg.Saga, commands: Sequence[sg.Command], *, caused_by: Envelope | None
) -> tuple[list[Envelope], dict[sg.Action, uuid.UUID]]:
    """The events a decision sends, in order, and the event of each compensation it
    starts (the compensation log records which event carried it)."""
    envelopes: list[Envelope] = []
    sent_for: dict[sg.Action, uuid.UUID] = {}
    for command in commands:
        match command:
            case sg.Send(event=event):
                envelopes.append(envelope_for(event, order_id=new.order_id, caused_by=caused_by))
            case sg.Compensate(action=action, event=event):
                envelope = envelope_for(event, order_id=new.order_id, caused_by=caused_by)
                envelopes.append(envelope)
                sent_for[action] = envelope.event_id
            case sg.TrackReservation():
                pass  # written with the saga row (`_ADVANCE`)
    return envelopes, sent_for


def utcnow() -> datetime:
    return datetime.now(UTC)
