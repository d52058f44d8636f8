"""Stock and reservations: every change that can promise or take units.

The model (DESIGN.md section 6, tables.py):
- `products.stock` units on hand; `products.reserved` = sum of the product's `active`
  reservations, changed in the same transaction as those rows; CHECK
  `0 <= reserved <= stock` is the database's last word against overselling.
- A reservation is a cart's hold (`cart_hold`, owner = cart) or an order's
  (`order`, owner = order). `active` → `committed` (sold), `released` (given back:
  cancelled, removed, converted into an order's) or `expired`.
- An active reservation past `expires_at` no longer counts as promised: reads
  subtract it (`repository.available_column`), and a writer that finds too few free
  units first expires the product's due reservations (`expire_due`) under the same
  lock, announcing them, before it decides. The sweeper does the same in the
  background for everything due (`sweep_expired`).

Concurrency. Rows are locked in one global order: the order's `order_stock` row,
then `products` rows by id (`lock_products`), then reservation rows; every change of
a reservation's status or quantity happens while its product is locked. So two
writers on one product queue on its row, two orders over the same products cannot
deadlock, and a commit and an expiry of the same reservation cannot both happen
(the second finds it no longer `active`). Two sweepers skip each other's products
(`FOR UPDATE SKIP LOCKED`).

Saga outcomes are returned to `handlers.py`, which announces them; expiries are
announced here (`stock.released`, reason `expired`) because several paths expire.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from prost.catalog import domain
from prost.catalog.domain import ShortLine, StockState
from prost.catalog.repository import PRODUCT_COLUMNS, SELECT_PRODUCT, ProductRow, product_row
from prost.catalog.tables import inventory_reservations, order_stock, products
from prost.contracts.catalog import StockLine, StockReleased
from prost.kit import outbox
from prost.kit.db import Session, Sql
from prost.kit.messages import Envelope

log = logging.getLogger("prost.catalog.inventory")

PRODUCER = "catalog"
_P = products
_R = inventory_reservations
_O = order_stock

OrderState = Literal["reserved", "failed", "committed", "cancelled"]


def _from_now(seconds: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    """now() + that many seconds (a bound parameter, or a literal), in Core; `_TTL_FROM_NOW`
    is the same for `Sql` statements."""
    return sa.func.now() + sa.func.make_interval(0, 0, 0, 0, 0, 0, seconds)


_TTL_FROM_NOW = "now() + make_interval(0, 0, 0, 0, 0, 0, CAST(:ttl AS float8))"


def _end_reservations(ids: str, *, status: str, end_reason: str) -> str:
    """An `Sql` CTE body ending the reservations whose ids are the array parameter `ids`."""
    return (
        f"UPDATE catalog.inventory_reservations SET status = '{status}', end_reason = '{end_reason}',"
        f" updated_at = now() WHERE id = ANY(CAST(:{ids} AS uuid[])) RETURNING id"
    )


# -- locks and counters ------------------------------------------------------------


# Hot statements are `Sql`, built once with bound parameters (docs/design.md,
# "Statements built once"). Locks are taken in id order.
_STOCK_STATE = "SELECT id, stock, reserved, active FROM catalog.products WHERE "
_NAMED = "id = ANY(CAST(:ids AS uuid[]))"
_OWNED = (
    "id IN (SELECT product_id FROM catalog.inventory_reservations"
    " WHERE kind = :kind AND owner_id = :owner_id AND status = 'active')"
)
_LOCK_NAMED, _LOCK_OWNED, _LOCK_NAMED_OR_OWNED = (
    Sql(_STOCK_STATE + where + " ORDER BY id FOR UPDATE") for where in (_NAMED, _OWNED, f"{_NAMED} OR {_OWNED}")
)


async def lock_products(
    session: Session, product_ids: Iterable[uuid.UUID] = (), *, reserved_by: tuple[str, uuid.UUID] | None = None
) -> dict[uuid.UUID, StockState]:
    """Lock the products' rows in id order (the global order) and read their counters.
    `reserved_by=(kind, owner_id)` adds the products of that owner's active
    reservations (read without locks, as the way to find them), in the same statement.
    Unknown ids are simply absent."""
    ids = sorted(set(product_ids))
    if reserved_by is None:
        if not ids:
            return {}
        rows = await session.fetch(_LOCK_NAMED, ids=ids)
    else:
        kind, owner_id = reserved_by
        if ids:
            rows = await session.fetch(_LOCK_NAMED_OR_OWNED, ids=ids, kind=kind, owner_id=owner_id)
        else:
            rows = await session.fetch(_LOCK_OWNED, kind=kind, owner_id=owner_id)
    return {r["id"]: StockState(r["id"], r["stock"], r["reserved"], r["active"]) for r in rows}


# `reserved += delta` for parallel arrays of product ids and deltas (the CTE of the
# writes below, and a statement of its own).
_ADD_RESERVED_CTE = (
    "UPDATE catalog.products p SET reserved = p.reserved + d.delta"
    " FROM unnest(CAST(:d_id AS uuid[]), CAST(:d_delta AS int[])) AS d(id, delta) WHERE p.id = d.id"
)
_ADD_RESERVED = Sql(_ADD_RESERVED_CTE)

_RESERVE_ORDER = Sql(
    # A reservation's writes in one round trip: the counters go up by what the cart's
    # holds did not cover, the holds it takes over end (`converted`), and the order's
    # rows are inserted, returning their expiry. Arrays may be empty.
    f"""
    WITH counted AS ({_ADD_RESERVED_CTE} RETURNING p.id),
    converted AS ({_end_reservations("h_ids", status="released", end_reason="converted")})
    INSERT INTO catalog.inventory_reservations (id, kind, owner_id, product_id, quantity, expires_at)
    SELECT n.id, 'order', CAST(:owner_id AS uuid), n.product_id, n.quantity, {_TTL_FROM_NOW}
      FROM unnest(CAST(:n_id AS uuid[]), CAST(:n_product_id AS uuid[]), CAST(:n_quantity AS int[]))
           AS n(id, product_id, quantity)
    RETURNING expires_at
    """
)

_COMMIT_ORDER = Sql(
    # Three writes of a commit in one round trip (data-modifying CTEs all run, on
    # different tables here): the reservations end, the units leave the shelf, the
    # order is marked. Arrays may be empty.
    f"""
    WITH committed AS ({_end_reservations("r_ids", status="committed", end_reason="committed")}),
    sold AS (
        UPDATE catalog.products p
           SET stock = p.stock - s.sold, reserved = p.reserved - s.unreserved, updated_at = now()
          FROM unnest(CAST(:s_id AS uuid[]), CAST(:s_sold AS int[]), CAST(:s_unreserved AS int[]))
               AS s(id, sold, unreserved)
         WHERE p.id = s.id RETURNING p.id
    ), marked AS (
        UPDATE catalog.order_stock SET state = 'committed', updated_at = now() WHERE order_id = :order_id
        RETURNING order_id
    )
    SELECT 1
    """
)


async def _add_reserved(session: Session, deltas: Mapping[uuid.UUID, int]) -> None:
    """`reserved += delta` per product (the rows are already locked)."""
    changes = [(pid, d) for pid, d in sorted(deltas.items()) if d]
    if changes:
        await session.run(_ADD_RESERVED, d_id=[c[0] for c in changes], d_delta=[c[1] for c in changes])


def _by_product(rows: Iterable[Any]) -> dict[uuid.UUID, int]:
    sums: dict[uuid.UUID, int] = {}
    for r in rows:
        sums[r.product_id] = sums.get(r.product_id, 0) + r.quantity
    return sums


# -- expiry ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ended:
    """A reservation that stopped being active."""

    kind: str
    owner_id: uuid.UUID
    product_id: uuid.UUID
    quantity: int


def released_events(ended: Sequence[Ended], *, reason: str, caused_by: Envelope | None = None) -> list[Envelope]:
    """One `stock.released` per (kind, owner), lines in product order."""
    groups: dict[tuple[str, uuid.UUID], list[Ended]] = {}
    for e in ended:
        groups.setdefault((e.kind, e.owner_id), []).append(e)
    envelopes = []
    for (kind, owner_id), items in groups.items():
        order_id = owner_id if kind == "order" else None
        lines = [
            StockLine(product_id=e.product_id, quantity=e.quantity) for e in sorted(items, key=lambda e: e.product_id)
        ]
        envelopes.append(
            Envelope.wrap(
                StockReleased(kind=kind, owner_id=owner_id, order_id=order_id, reason=reason, lines=lines),
                producer=PRODUCER,
                correlation_id=order_id,
                caused_by=caused_by,
            )
        )
    return envelopes


async def expire_due(session: Session, product_ids: Sequence[uuid.UUID]) -> list[Ended]:
    """Expire the due reservations of these products, whose rows the caller has
    locked: mark them `expired`, give their units back, announce `stock.released`."""
    if not product_ids:
        return []
    rows = (
        await session.execute(
            sa.update(_R)
            .where(
                _R.c.product_id.in_(list(product_ids)),
                _R.c.status == "active",
                _R.c.expires_at <= sa.func.now(),
            )
            .values(status="expired", end_reason="expired", updated_at=sa.func.now())
            .returning(_R.c.kind, _R.c.owner_id, _R.c.product_id, _R.c.quantity)
        )
    ).all()
    if not rows:
        return []
    await _add_reserved(session, {pid: -q for pid, q in _by_product(rows).items()})
    ended = [Ended(r.kind, r.owner_id, r.product_id, r.quantity) for r in rows]
    await outbox.add_all_to_outbox(session, released_events(ended, reason="expired"))
    return ended


async def sweep_expired(session: Session, *, max_products: int = 200) -> int:
    """One sweep: lock up to `max_products` products that have due reservations,
    skipping those another transaction holds (another sweeper, or a writer that will
    expire them itself), and expire their due reservations. Returns how many ended."""
    due = sa.select(_R.c.product_id).where(_R.c.status == "active", _R.c.expires_at <= sa.func.now())
    locked = (
        await session.scalars(
            sa.select(_P.c.id)
            .where(_P.c.id.in_(due))
            .order_by(_P.c.id)
            .limit(max_products)
            .with_for_update(skip_locked=True)
        )
    ).all()
    return len(await expire_due(session, list(locked)))


async def _free_after_expiry(
    session: Session, states: dict[uuid.UUID, StockState], wanted: Mapping[uuid.UUID, int]
) -> dict[uuid.UUID, StockState]:
    """When a product has fewer free units than `wanted`, expire its due reservations
    and read its counters again (the rows stay locked)."""
    short = [pid for pid, n in wanted.items() if pid in states and n > states[pid].free]
    if short and await expire_due(session, short):
        states = {**states, **await lock_products(session, short)}
    return states


# -- holds (the cart's internal API) -------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hold:
    product_id: uuid.UUID
    quantity: int
    status: str
    expires_at: datetime | None


# The statements of `set_hold`, built once (it is the hottest write path).
_DUE = _R.alias("due")
_LOCK_PRODUCT = sa.select(*PRODUCT_COLUMNS).where(_P.c.id == sa.bindparam("p_id")).with_for_update()
_HOLD_AND_DUE = sa.select(
    sa.select(sa.func.coalesce(sa.func.sum(_DUE.c.quantity), 0))
    .where(_DUE.c.product_id == sa.bindparam("p_id"), _DUE.c.status == "active", _DUE.c.expires_at <= sa.func.now())
    .scalar_subquery()
    .label("due"),
    _R.c.id,
    _R.c.quantity,
    (_R.c.expires_at > sa.func.now()).label("live"),
).select_from(
    sa.select(sa.literal(1).label("one"))
    .subquery("one")
    .outerjoin(
        _R,
        sa.and_(
            _R.c.kind == "cart_hold",
            _R.c.owner_id == sa.bindparam("c_id"),
            _R.c.product_id == sa.bindparam("p_id"),
            _R.c.status == "active",
        ),
    )
)
_BUMP = (
    sa.update(_P)
    .where(_P.c.id == sa.bindparam("p_id"))
    .values(reserved=_P.c.reserved + sa.bindparam("delta", type_=sa.Integer))
    .returning(_P.c.id)
    .cte("bump")
)
_HOLD_EXPIRES = _from_now(sa.bindparam("ttl", type_=sa.Float))
_INSERT_HOLD = (
    sa.insert(_R)
    .from_select(
        ["id", "kind", "owner_id", "product_id", "quantity", "expires_at"],
        sa.select(
            sa.bindparam("h_id", type_=pg.UUID(as_uuid=True)),
            sa.literal("cart_hold"),
            sa.bindparam("c_id", type_=pg.UUID(as_uuid=True)),
            _BUMP.c.id,
            sa.bindparam("qty", type_=sa.Integer),
            _HOLD_EXPIRES,
        ),
    )
    .returning(_R.c.expires_at)
    .add_cte(_BUMP)
)
_UPDATE_HOLD = (
    sa.update(_R)
    .where(_R.c.id == sa.bindparam("h_id"), _R.c.product_id == _BUMP.c.id)
    .values(quantity=sa.bindparam("qty", type_=sa.Integer), expires_at=_HOLD_EXPIRES, updated_at=sa.func.now())
    .returning(_R.c.expires_at)
    .add_cte(_BUMP)
)


async def set_hold(
    session: Session, *, cart_id: uuid.UUID, product_id: uuid.UUID, quantity: int, ttl_seconds: float
) -> tuple[Hold, ProductRow]:
    """Make the cart's hold on the product exactly `quantity` units (0 removes it),
    valid for `ttl_seconds` from now, and return it with the product as it is now.
    All or nothing: `OutOfStock` changes nothing.

    The usual case takes three statements: lock the product, read the cart's hold and
    the product's due units, then move the counter and write the hold in one go."""
    locked = (await session.execute(_LOCK_PRODUCT, {"p_id": product_id})).first()
    if locked is None or not locked.active:
        raise domain.ProductNotFound()
    state = StockState(product_id, locked.stock, locked.reserved, locked.active)
    current = (await session.execute(_HOLD_AND_DUE, {"p_id": product_id, "c_id": cart_id})).one()
    due: int = current.due
    hold_id: uuid.UUID | None = current.id
    held = current.quantity if hold_id is not None and current.live else 0
    if hold_id is not None and not current.live:
        # The cart's own hold ran out and it is placing a new one: end the old one
        # quietly (the cart is the one asking; no `stock.released` for it).
        await session.execute(
            sa.update(_R)
            .where(_R.c.id == hold_id)
            .values(status="expired", end_reason="expired", updated_at=sa.func.now())
        )
        await _add_reserved(session, {product_id: -current.quantity})
        state = (await lock_products(session, [product_id]))[product_id]
        due -= current.quantity
        hold_id = None
    if quantity == 0:
        if hold_id is not None:
            await _end_hold(session, hold_id, product_id, current.quantity, reason="released")
        return Hold(product_id, 0, "released", None), await _product(session, product_id)
    extra = quantity - held
    if extra > state.free:
        expired = await expire_due(session, [product_id])
        if expired:
            state = (await lock_products(session, [product_id]))[product_id]
            due -= sum(e.quantity for e in expired)
        if extra > state.free:
            raise domain.OutOfStock(f"only {max(0, state.free + held)} available")
    values = {"p_id": product_id, "c_id": cart_id, "delta": extra, "qty": quantity, "ttl": float(ttl_seconds)}
    if hold_id is not None:
        expires_at = (await session.execute(_UPDATE_HOLD, {**values, "h_id": hold_id})).scalar_one()
    else:
        expires_at = (await session.execute(_INSERT_HOLD, {**values, "h_id": uuid.uuid4()})).scalar_one()
    reserved = state.reserved + extra
    product = ProductRow(
        **{c.name: getattr(locked, c.name) for c in PRODUCT_COLUMNS if c.name not in ("stock", "reserved")},
        stock=state.stock,
        reserved=reserved,
        available=domain.available(stock=state.stock, reserved=reserved, expired_reserved=due),
    )
    return Hold(product_id, quantity, "active", expires_at), product


async def _product(session: Session, product_id: uuid.UUID) -> ProductRow:
    row = (await session.execute(SELECT_PRODUCT, {"product_id": product_id})).one()
    return product_row(row)


async def _end_hold(session: Session, hold_id: uuid.UUID, product_id: uuid.UUID, quantity: int, *, reason: str) -> None:
    await session.execute(
        sa.update(_R).where(_R.c.id == hold_id).values(status="released", end_reason=reason, updated_at=sa.func.now())
    )
    await _add_reserved(session, {product_id: -quantity})


async def release_hold(session: Session, *, cart_id: uuid.UUID, product_id: uuid.UUID) -> bool:
    """Give back the cart's hold on the product, if it has one (idempotent)."""
    if not await lock_products(session, [product_id]):
        return False
    current = (
        await session.execute(
            sa.select(_R.c.id, _R.c.quantity).where(
                _R.c.kind == "cart_hold",
                _R.c.owner_id == cart_id,
                _R.c.product_id == product_id,
                _R.c.status == "active",
            )
        )
    ).first()
    if current is None:
        return False
    await _end_hold(session, current.id, product_id, current.quantity, reason="released")
    return True


# One statement, so it needs no transaction of its own: the owner's products are
# locked in id order (the CTE, as `lock_products` does), and each reservation row is
# changed only once its product is held. A reservation that a writer holding the
# product ended meanwhile is seen as ended when the lock is granted (the update checks
# `status` again on the row's latest version).
_EXTEND = Sql(
    f"WITH locked AS (SELECT id FROM catalog.products WHERE {_OWNED} ORDER BY id FOR UPDATE)"
    " UPDATE catalog.inventory_reservations"
    f" SET expires_at = {_TTL_FROM_NOW}, updated_at = now()"
    # An expired reservation is over, even before the sweeper marks it.
    " WHERE kind = :kind AND owner_id = :owner_id AND status = 'active' AND expires_at > now()"
    " AND product_id IN (SELECT id FROM locked)"
    " RETURNING product_id, quantity, expires_at"
)


async def _extend(session: Session, *, kind: str, owner_id: uuid.UUID, ttl_seconds: float) -> list[Hold]:
    rows = await session.fetch(_EXTEND, kind=kind, owner_id=owner_id, ttl=float(ttl_seconds))
    holds = (Hold(r["product_id"], r["quantity"], "active", r["expires_at"]) for r in rows)
    return sorted(holds, key=lambda h: h.product_id)


async def extend_holds(session: Session, *, cart_id: uuid.UUID, ttl_seconds: float) -> list[Hold]:
    """Push the cart's live holds to now + ttl; returns them (expired ones are not revived)."""
    return await _extend(session, kind="cart_hold", owner_id=cart_id, ttl_seconds=ttl_seconds)


async def list_holds(session: Session, *, cart_id: uuid.UUID) -> list[Hold]:
    """The cart's latest hold per product: `active`, `expired` (also when due but not
    yet swept), `released` (removed, or converted into an order) or `committed`."""
    live_first = sa.case((_R.c.status == "active", 0), else_=1)
    status = sa.case(
        ((_R.c.status == "active") & (_R.c.expires_at <= sa.func.now()), sa.literal("expired")),
        else_=_R.c.status,
    )
    rows = (
        await session.execute(
            sa.select(_R.c.product_id, _R.c.quantity, status.label("status"), _R.c.expires_at)
            .where(_R.c.kind == "cart_hold", _R.c.owner_id == cart_id)
            .order_by(_R.c.product_id, live_first, _R.c.updated_at.desc())
            .ext(pg.distinct_on(_R.c.product_id))
        )
    ).all()
    return [Hold(r.product_id, r.quantity, r.status, r.expires_at) for r in rows]


# -- admin stock -------------------------------------------------------------------


async def set_stock(session: Session, *, product_id: uuid.UUID, stock: int) -> None:
    """Set the units on hand; refused (`StockBelowReserved`) below the units that are
    promised by live reservations."""
    states = await lock_products(session, [product_id])
    if product_id not in states:
        raise domain.ProductNotFound()
    if stock < states[product_id].reserved:
        await expire_due(session, [product_id])
        states = await lock_products(session, [product_id])
    reserved = states[product_id].reserved
    if stock < reserved:
        raise domain.StockBelowReserved(f"stock cannot be set below the {reserved} units currently reserved")
    await session.execute(sa.update(_P).where(_P.c.id == product_id).values(stock=stock, updated_at=sa.func.now()))


# -- orders (the saga's part) ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OrderClaim:
    created: bool
    state: OrderState
    shortages: list[dict[str, Any]] | None = None


async def _claim_order(
    session: Session,
    order_id: uuid.UUID,
    *,
    state: OrderState,
    cart_id: uuid.UUID | None = None,
    expect_row: bool = False,
) -> OrderClaim:
    """Create the order's `order_stock` row in `state`, or lock the existing one.

    The row is the first lock every saga step takes: steps about one order run one
    after the other, and whichever arrives first decides (a cancellation that comes
    before the order leaves `cancelled`, and the late order reserves nothing).
    `expect_row`: the step usually comes after the reservation made the row, so lock
    first and insert only when it is missing (one statement instead of two)."""
    if expect_row and (row := await _lock_order_row(session, order_id)) is not None:
        return OrderClaim(False, row["state"], row["shortages"])
    inserted = await session.fetchval(_INSERT_ORDER_ROW, order_id=order_id, state=state, cart_id=cart_id)
    if inserted is not None:
        return OrderClaim(True, state)
    row = await _lock_order_row(session, order_id)
    assert row is not None  # it conflicted, and rows of order_stock are never deleted
    return OrderClaim(False, row["state"], row["shortages"])


_INSERT_ORDER_ROW = Sql(
    "INSERT INTO catalog.order_stock (order_id, state, cart_id) VALUES (:order_id, :state, :cart_id)"
    " ON CONFLICT (order_id) DO NOTHING RETURNING order_id"
)
_LOCK_ORDER_ROW = Sql("SELECT state, shortages FROM catalog.order_stock WHERE order_id = :order_id FOR UPDATE")


async def _lock_order_row(session: Session, order_id: uuid.UUID) -> Any:
    return await session.fetchrow(_LOCK_ORDER_ROW, order_id=order_id)


async def _set_order_state(session: Session, order_id: uuid.UUID, state: OrderState, **values: Any) -> None:
    await session.execute(
        sa.update(_O).where(_O.c.order_id == order_id).values(state=state, updated_at=sa.func.now(), **values)
    )


_ORDER_ROWS = Sql(
    "SELECT id, product_id, quantity, expires_at FROM catalog.inventory_reservations"
    " WHERE kind = 'order' AND owner_id = :order_id AND status = 'active' ORDER BY product_id"
)


async def _order_rows(session: Session, order_id: uuid.UUID) -> list[Any]:
    return await session.fetch(_ORDER_ROWS, order_id=order_id)


@dataclass(frozen=True, slots=True)
class Reservation:
    """What `reserve_for_order` decided. `lines` and `expires_at` when reserved,
    `shortages` when not; `repeated` when the order had already been handled."""

    outcome: Literal["reserved", "failed", "ignored"]
    lines: list[StockLine] = field(default_factory=list)
    expires_at: datetime | None = None
    shortages: list[ShortLine] = field(default_factory=list)
    repeated: bool = False


async def reserve_for_order(
    session: Session,
    *,
    order_id: uuid.UUID,
    lines: Iterable[tuple[uuid.UUID, int]],
    cart_id: uuid.UUID | None,
    ttl_seconds: float,
) -> Reservation:
    """Reserve every line of the order or none.

    With `cart_id`, the cart's live holds on the order's products become the order's
    reservation in this transaction (a hold larger than its line gives back the rest);
    what the holds do not cover comes from free stock. If any line is short, nothing
    changes for the order or the cart's holds (due reservations expired on the way
    stay expired: that is true whatever the outcome)."""
    claim = await _claim_order(session, order_id, state="reserved", cart_id=cart_id)
    if not claim.created:
        return await _repeat_reservation(session, order_id, claim)
    wanted = domain.merge_lines(lines)
    if not wanted:
        return Reservation("reserved")
    states = await lock_products(session, wanted)
    held: dict[uuid.UUID, int] = {}
    hold_rows: list[Any] = []
    if cart_id is not None:
        hold_rows = list(
            (
                await session.execute(
                    sa.select(_R.c.id, _R.c.product_id, _R.c.quantity).where(
                        _R.c.kind == "cart_hold",
                        _R.c.owner_id == cart_id,
                        _R.c.status == "active",
                        _R.c.expires_at > sa.func.now(),
                        _R.c.product_id.in_(list(wanted)),
                    )
                )
            ).all()
        )
        held = {r.product_id: r.quantity for r in hold_rows}
    plans, short = domain.plan_reservation(wanted, states, held)
    if short:
        states = await _free_after_expiry(
            session, states, {s.product_id: wanted[s.product_id] - held.get(s.product_id, 0) for s in short}
        )
        plans, short = domain.plan_reservation(wanted, states, held)
    if short:
        shortages = [
            {"product_id": str(s.product_id), "requested": s.requested, "available": s.available} for s in short
        ]
        await _set_order_state(session, order_id, "failed", shortages=shortages)
        return Reservation("failed", shortages=short)

    extra = [(p.product_id, p.extra) for p in sorted(plans, key=lambda p: p.product_id) if p.extra]
    expires_at = await session.fetchval(
        _RESERVE_ORDER,
        d_id=[pid for pid, _ in extra],
        d_delta=[n for _, n in extra],
        h_ids=[r.id for r in hold_rows],
        n_id=[uuid.uuid4() for _ in plans],
        n_product_id=[p.product_id for p in plans],
        n_quantity=[p.quantity for p in plans],
        owner_id=order_id,
        ttl=float(ttl_seconds),
    )
    return Reservation(
        "reserved",
        lines=[StockLine(product_id=p.product_id, quantity=p.quantity) for p in plans],
        expires_at=expires_at,
    )


async def _repeat_reservation(session: Session, order_id: uuid.UUID, claim: OrderClaim) -> Reservation:
    """`order.placed` again for an order already handled: answer as the first time
    when that answer still holds, else nothing (it was committed, cancelled, or its
    reservation has run out: the orders service moves on without us)."""
    if claim.state == "failed":
        shortages = [
            ShortLine(uuid.UUID(s["product_id"]), s["requested"], s["available"]) for s in claim.shortages or []
        ]
        return Reservation("failed", shortages=shortages, repeated=True)
    if claim.state == "reserved":
        rows = (
            await session.execute(
                sa.select(
                    _R.c.product_id, _R.c.quantity, _R.c.expires_at, (_R.c.expires_at > sa.func.now()).label("live")
                )
                .where(_R.c.kind == "order", _R.c.owner_id == order_id, _R.c.status == "active")
                .order_by(_R.c.product_id)
            )
        ).all()
        if rows and all(r.live for r in rows):
            return Reservation(
                "reserved",
                lines=[StockLine(product_id=r.product_id, quantity=r.quantity) for r in rows],
                expires_at=min(r.expires_at for r in rows),
                repeated=True,
            )
    return Reservation("ignored", repeated=True)


async def extend_order(session: Session, *, order_id: uuid.UUID, ttl_seconds: float) -> list[Hold]:
    """While payment runs: push the order's live reservation to now + ttl. Nothing
    for an order that is not (or no longer) reserved, or whose reservation ran out.

    Needs no lock on the order's row: only `active` reservations move, and a commit or
    a release that ends them first is seen (the update waits for their row locks and
    checks `status` again). Doing it twice moves the deadline twice, to ttl from the
    later one: harmless, so it needs no inbox record either. One statement: it needs
    no transaction of its own (`db.autocommit` will do)."""
    return await _extend(session, kind="order", owner_id=order_id, ttl_seconds=ttl_seconds)


@dataclass(frozen=True, slots=True)
class Commit:
    outcome: Literal["committed", "ignored"]
    lines: list[StockLine] = field(default_factory=list)
    missing: list[ShortLine] = field(default_factory=list)
    """Lines whose reservation had ended and whose units free stock could not give."""


async def commit_order(session: Session, *, order_id: uuid.UUID, lines: Iterable[tuple[uuid.UUID, int]]) -> Commit:
    """The order is confirmed: its reserved units leave the shelf (stock and reserved
    go down together). A line whose reservation already ended (expired or released)
    is taken from free stock if there is enough; if not, it is reported in `missing`
    and nothing is taken for it. Once committed or cancelled, nothing changes."""
    wanted = domain.merge_lines(lines)
    claim = await _claim_order(session, order_id, state="committed", expect_row=True)
    if not claim.created and claim.state in ("committed", "cancelled"):
        if claim.state == "cancelled":
            log.warning("order %s confirmed after its stock was released; nothing committed", order_id)
        return Commit("ignored")
    if claim.created or claim.state == "failed":
        log.warning("order %s confirmed without a reservation here; taking its units from free stock", order_id)
    states = await lock_products(session, wanted, reserved_by=("order", order_id))
    reserved_rows = await _order_rows(session, order_id)
    from_reservation = {r["product_id"]: r["quantity"] for r in reserved_rows}
    from_free = {pid: q for pid, q in wanted.items() if pid not in from_reservation}
    states = await _free_after_expiry(session, states, from_free)
    missing = [
        ShortLine(pid, q, max(0, states[pid].free) if pid in states else 0)
        for pid, q in from_free.items()
        if pid not in states or q > states[pid].free
    ]
    taken = {pid: q for pid, q in from_free.items() if pid in states and q <= states[pid].free}
    sold = sorted({**from_reservation, **taken}.items())
    await session.run(
        _COMMIT_ORDER,
        r_ids=[r["id"] for r in reserved_rows],
        s_id=[pid for pid, _ in sold],
        s_sold=[q for _, q in sold],
        s_unreserved=[from_reservation.get(pid, 0) for pid, _ in sold],
        order_id=order_id,
    )
    if missing:
        log.error(
            "order %s confirmed but %d line(s) had lost their reservation and free stock cannot cover them: %s; "
            "those units were not taken and need a person's attention",
            order_id,
            len(missing),
            ", ".join(f"{m.product_id} wants {m.requested}, {m.available} free" for m in missing),
        )
    return Commit(
        "committed",
        lines=[StockLine(product_id=pid, quantity=q) for pid, q in sold],
        missing=missing,
    )


@dataclass(frozen=True, slots=True)
class Release:
    """`released`: the order holds nothing any more (`lines` = what this call gave
    back, empty when there was nothing left to give); `sold`: it was committed."""

    outcome: Literal["released", "sold"]
    lines: list[StockLine] = field(default_factory=list)


async def release_order(session: Session, *, order_id: uuid.UUID) -> Release:
    """The order ended without a sale: give back its active reservation. Before the
    order was ever reserved, this leaves a `cancelled` mark so it never will be; after
    a first release nothing more is given back; after a commit nothing changes."""
    claim = await _claim_order(session, order_id, state="cancelled", expect_row=True)
    if claim.created or claim.state == "cancelled":
        return Release("released")
    if claim.state == "committed":
        log.warning("order %s cancelled after its stock was committed; stock left as sold", order_id)
        return Release("sold")
    await lock_products(session, reserved_by=("order", order_id))
    rows = (
        await session.execute(
            sa.update(_R)
            .where(_R.c.kind == "order", _R.c.owner_id == order_id, _R.c.status == "active")
            .values(status="released", end_reason="cancelled", updated_at=sa.func.now())
            .returning(_R.c.product_id, _R.c.quantity)
        )
    ).all()
    released = _by_product(rows)
    await _add_reserved(session, {pid: -q for pid, q in released.items()})
    await _set_order_state(session, order_id, "cancelled")
    return Release("released", lines=[StockLine(product_id=pid, quantity=q) for pid, q in sorted(released.items())])
