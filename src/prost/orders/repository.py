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

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from prost.contracts.catalog import StockLine
from prost.kit import outbox
from prost.kit.db import Session
from prost.kit.messages import Envelope
from prost.orders import saga as sg
from prost.orders.domain import PricedOrder
from prost.orders.tables import compensation_log, inventory_reservations, order_items, orders, saga_states

SERVICE = "orders"


class StaleSaga(Exception):
    """The saga row changed under a transition that held its lock: a bug, or a retry."""


def envelope_for(event: Any, *, order_id: uuid.UUID, caused_by: Envelope | None) -> Envelope:
    return Envelope.wrap(event, producer=SERVICE, correlation_id=order_id, caused_by=caused_by)


# -- orders ------------------------------------------------------------------------------


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
        """Insert the order, its lines and its saga (one statement), then the saga's first
        event. False, with nothing written, when `order_id` already exists."""
        new = pg.insert(orders).values(
            id=order_id,
            user_id=user_id,
            cart_id=cart_id,
            status=sg.OrderStatus.PENDING.value,
            total_amount=priced.total_amount,
            currency=priced.currency,
            payment_token=payment_token,
            card_last4=card_last4,
            card_brand=card_brand,
            created_at=now,
            updated_at=now,
        )
        o = new.on_conflict_do_nothing(index_elements=[orders.c.id]).returning(orders.c.id).cte("o")
        lines = sa.values(
            sa.column("product_id", pg.UUID(as_uuid=True)),
            sa.column("position", sa.SmallInteger),
            sa.column("sku", sa.String),
            sa.column("name", sa.String),
            sa.column("quantity", sa.Integer),
            sa.column("unit_price", sa.Numeric(12, 2)),
            sa.column("line_total", sa.Numeric(12, 2)),
            name="lines",
        ).data(
            [
                (line.product_id, i, line.sku, line.name, line.quantity, line.unit_price, line.line_total)
                for i, line in enumerate(priced.lines)
            ]
        )
        # Both inserts select FROM `o`: they write nothing when the order existed.
        items = (
            sa.insert(order_items)
            .from_select(
                ["order_id", "product_id", "position", "sku", "name", "quantity", "unit_price", "line_total"],
                sa.select(o.c.id, *lines.c).select_from(o.join(lines, sa.true())),
            )
            .cte("i")
        )
        state = saga.saga
        start = (
            sa.insert(saga_states)
            .from_select(
                ["order_id", "step", "status", "deadline", "version", "lines", "steps", "created_at", "updated_at"],
                sa.select(
                    o.c.id,
                    sa.literal(state.step.value, sa.String),
                    sa.literal(state.status, sa.String),
                    sa.literal(state.deadline, sa.DateTime(timezone=True)),
                    sa.literal(state.version, sa.Integer),
                    sa.literal(_lines_json(state.lines), pg.JSONB),
                    sa.literal(_steps_json(state.steps), pg.JSONB),
                    sa.literal(now, sa.DateTime(timezone=True)),
                    sa.literal(now, sa.DateTime(timezone=True)),
                ).select_from(o),
            )
            .cte("s")
        )
        created = await self.session.scalar(sa.select(sa.func.count()).select_from(o).add_cte(items, start))
        if not created:
            return False
        await SagaRepository(self.session).carry_out(state, saga.commands, caused_by=None, now=now)
        return True

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

_COMPENSATIONS = (
    sa.select(
        sa.func.coalesce(
            sa.func.jsonb_agg(
                sa.func.jsonb_build_object(
                    "action",
                    compensation_log.c.action,
                    "status",
                    compensation_log.c.status,
                    "reason",
                    compensation_log.c.reason,
                    "attempts",
                    compensation_log.c.attempts,
                    "at",
                    compensation_log.c.updated_at,
                )
            ),
            sa.text("'[]'::jsonb"),
        )
    )
    .where(compensation_log.c.order_id == saga_states.c.order_id)
    .scalar_subquery()
    .label("compensations")
)

_SAGA_COLUMNS = (
    saga_states,
    orders.c.user_id,
    orders.c.cart_id,
    orders.c.status.label("order_status"),
    orders.c.failure_reason,
    orders.c.total_amount,
    orders.c.currency,
    orders.c.payment_token,
    _COMPENSATIONS,
)


def _ts(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


def saga_from_row(row: Mapping[str, Any]) -> sg.Saga:
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


class SagaRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def _select(self) -> sa.Select[Any]:
        return sa.select(*_SAGA_COLUMNS).select_from(saga_states.join(orders, orders.c.id == saga_states.c.order_id))

    async def get_for_update(self, order_id: uuid.UUID) -> sg.Saga | None:
        """The saga with its row locked until the transaction ends."""
        query = self._select().where(saga_states.c.order_id == order_id).with_for_update(of=saga_states)
        row = (await self.session.execute(query)).mappings().first()
        return saga_from_row(row) if row is not None else None

    async def get(self, order_id: uuid.UUID) -> sg.Saga | None:
        row = (await self.session.execute(self._select().where(saga_states.c.order_id == order_id))).mappings().first()
        return saga_from_row(row) if row is not None else None

    async def due(self, now: datetime, *, limit: int) -> list[sg.Saga]:
        """Sagas whose deadline has passed, locked; rows another replica holds are skipped."""
        query = (
            self._select()
            .where(saga_states.c.deadline.is_not(None), saga_states.c.deadline <= now)
            .order_by(saga_states.c.deadline)
            .limit(limit)
            .with_for_update(of=saga_states, skip_locked=True)
        )
        return [saga_from_row(row) for row in (await self.session.execute(query)).mappings()]

    async def compensations(self, order_id: uuid.UUID) -> list[Mapping[str, Any]]:
        rows = await self.session.execute(
            sa.select(compensation_log).where(compensation_log.c.order_id == order_id).order_by(compensation_log.c.id)
        )
        return [dict(r) for r in rows.mappings()]

    async def apply(self, old: sg.Saga, decision: sg.Decision, *, caused_by: Envelope | None, now: datetime) -> None:
        """Write a decision taken on `old` (whose row this transaction has locked): the
        saga row (only if still at `old.version`), the order's status and the orders'
        view of the reservation in one statement; then compensations and events."""
        if not decision.changed:
            return
        new = decision.saga
        tracked = [c for c in decision.commands if isinstance(c, sg.TrackReservation)]
        writes: list[sa.CTE] = [_track(old.order_id, c, now=now).cte(f"r{i}") for i, c in enumerate(tracked)]
        if (new.order_status, new.failure_reason) != (old.order_status, old.failure_reason):
            writes.append(
                sa.update(orders)
                .where(orders.c.id == old.order_id)
                .values(
                    status=new.order_status.value,
                    failure_reason=new.failure_reason.value if new.failure_reason else None,
                    updated_at=now,
                )
                .returning(orders.c.id)
                .cte("o")
            )
        if new != old:
            moved = (
                sa.update(saga_states)
                .where(saga_states.c.order_id == old.order_id, saga_states.c.version == old.version)
                .values(
                    step=new.step.value,
                    status=new.status,
                    deadline=new.deadline,
                    version=new.version,
                    steps=_steps_json(new.steps) if new.steps != old.steps else saga_states.c.steps,
                    payment_id=new.payment_id,
                    reservation_expires_at=new.reservation_expires_at,
                    updated_at=now,
                )
                .returning(saga_states.c.order_id)
                .cte("s")
            )
            count = await self.session.scalar(sa.select(sa.func.count()).select_from(moved).add_cte(*writes))
            if count != 1:
                raise StaleSaga(f"saga {old.order_id} is no longer at version {old.version}")
        elif writes:
            await self.session.execute(sa.select(sa.func.count()).select_from(writes[0]).add_cte(*writes[1:]))
        await self.carry_out(new, decision.commands, caused_by=caused_by, now=now, old=old)

    async def carry_out(
        self,
        new: sg.Saga,
        commands: Sequence[sg.Command],
        *,
        caused_by: Envelope | None,
        now: datetime,
        old: sg.Saga | None = None,
    ) -> None:
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
                    pass  # written with the saga row (`apply`)
        # The compensation log follows the saga's state: written before the event is
        # sent (same transaction as the outbox row, which the relay publishes later).
        before = old.compensations if old is not None else {}
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
        if envelopes:
            await outbox.add_all_to_outbox(self.session, envelopes)

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


def _track(order_id: uuid.UUID, command: sg.TrackReservation, *, now: datetime) -> Any:
    """The statement keeping `inventory_reservations` (the orders' view of the catalog's
    reservation for the order): lines `reserved` until `expires_at`, then `committed`
    (the order was confirmed: the catalog commits them) or `released`."""
    t = inventory_reservations
    if command.status == "reserved":
        insert = pg.insert(t).values(
            [
                {
                    "order_id": order_id,
                    "product_id": line.product_id,
                    "quantity": line.quantity,
                    "status": "reserved",
                    "expires_at": command.expires_at,
                    "created_at": now,
                    "updated_at": now,
                }
                for line in command.lines
            ]
        )
        return insert.on_conflict_do_update(
            index_elements=[t.c.order_id, t.c.product_id],
            set_={"status": "reserved", "expires_at": insert.excluded.expires_at, "updated_at": now},
        ).returning(t.c.order_id)
    return (
        sa.update(t)
        .where(t.c.order_id == order_id)
        .values(status=command.status, updated_at=now)
        .returning(t.c.order_id)
    )


def utcnow() -> datetime:
    return datetime.now(UTC)
