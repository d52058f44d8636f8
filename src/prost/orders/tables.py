"""The orders schema. Only the orders service touches these tables.

orders                  one row per order: owner, status, money, the card's token
order_items             its lines, priced from the catalog at order time
saga_states             the place-order saga of each order: the source of truth for
                        where it stands (step, deadline, version)
compensation_log        every compensation the saga started (release stock, refund
                        payment), written before it is sent, until acknowledged
inventory_reservations  the orders' view of what the catalog reserved for an order
outbox, idempotency_records   (kit.db: every schema has them)
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from prost.kit.db import schema_metadata

metadata = schema_metadata("orders")

ORDER_STATUSES = ("pending", "stock_reserved", "confirmed", "rejected", "cancelled")
FAILURE_REASONS = (
    "payment_declined",
    "insufficient_funds",
    "payment_error",
    "timeout",
    "cancelled_by_user",
    "reservation_expired",
    "out_of_stock",
)
SAGA_STEPS = ("reserving_stock", "processing_payment", "confirmed", "rejected", "compensating", "compensated")
SAGA_STATUSES = ("running", "completed", "compensating", "compensated", "failed")
COMPENSATION_ACTIONS = ("release_stock", "refund_payment")
COMPENSATION_STATUSES = ("requested", "acknowledged", "abandoned")
RESERVATION_STATUSES = ("reserved", "committed", "released")


def _in(values: tuple[str, ...]) -> str:
    return ", ".join(f"'{v}'" for v in values)


def _timestamps() -> list[sa.Column[object]]:
    return [
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    ]


orders = sa.Table(
    "orders",
    metadata,
    sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("user_id", pg.UUID(as_uuid=True), nullable=False),
    # Set when the order comes from a cart's checkout (the cart reopens on failure).
    sa.Column("cart_id", pg.UUID(as_uuid=True)),
    sa.Column("status", sa.String(20), nullable=False, server_default="pending"),
    sa.Column("failure_reason", sa.String(30)),
    sa.Column("total_amount", sa.Numeric(12, 2), nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    # The payment provider's token for the card; the number itself never gets here.
    sa.Column("payment_token", sa.String(200), nullable=False),
    sa.Column("card_last4", sa.String(4), nullable=False),
    sa.Column("card_brand", sa.String(20), nullable=False),
    *_timestamps(),
    sa.CheckConstraint(f"status IN ({_in(ORDER_STATUSES)})", name="status"),
    sa.CheckConstraint(f"failure_reason IS NULL OR failure_reason IN ({_in(FAILURE_REASONS)})", name="failure_reason"),
    sa.CheckConstraint(
        "(status IN ('rejected', 'cancelled')) = (failure_reason IS NOT NULL)", name="failure_iff_failed"
    ),
    sa.CheckConstraint("total_amount >= 0", name="total_amount"),
    # "My orders, newest first" and "all orders, newest first" (admins).
    sa.Index("ix_orders_user_id_created_at", "user_id", sa.text("created_at DESC"), sa.text("id DESC")),
    sa.Index("ix_orders_created_at", sa.text("created_at DESC"), sa.text("id DESC")),
    sa.Index(None, "status"),
    sa.Index(None, "cart_id"),
)

order_items = sa.Table(
    "order_items",
    metadata,
    sa.Column(
        "order_id", pg.UUID(as_uuid=True), sa.ForeignKey("orders.orders.id", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("product_id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("position", sa.SmallInteger, nullable=False),
    sa.Column("sku", sa.String(64), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("quantity", sa.Integer, nullable=False),
    sa.Column("unit_price", sa.Numeric(12, 2), nullable=False),
    sa.Column("line_total", sa.Numeric(12, 2), nullable=False),
    sa.CheckConstraint("quantity > 0", name="quantity"),
    sa.CheckConstraint("unit_price >= 0", name="unit_price"),
    sa.CheckConstraint("line_total = unit_price * quantity", name="line_total"),
    sa.Index(None, "product_id"),
)

saga_states = sa.Table(
    "saga_states",
    metadata,
    sa.Column(
        "order_id", pg.UUID(as_uuid=True), sa.ForeignKey("orders.orders.id", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("step", sa.String(30), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    # When the current step is overdue (timeout) or an unacknowledged compensation is due
    # again; NULL once nothing is left to do. The reconciler scans this.
    sa.Column("deadline", sa.DateTime(timezone=True)),
    sa.Column("version", sa.Integer, nullable=False, server_default="1"),
    # The saga's data: lines to reserve, and the step log shown by GET /orders/{id}/saga.
    sa.Column("lines", pg.JSONB, nullable=False),
    sa.Column("steps", pg.JSONB, nullable=False),
    sa.Column("payment_id", pg.UUID(as_uuid=True)),
    sa.Column("reservation_expires_at", sa.DateTime(timezone=True)),
    *_timestamps(),
    sa.CheckConstraint(f"step IN ({_in(SAGA_STEPS)})", name="step"),
    sa.CheckConstraint(f"status IN ({_in(SAGA_STATUSES)})", name="status"),
    sa.CheckConstraint("version > 0", name="version"),
    sa.Index("ix_saga_states_deadline", "deadline", postgresql_where=sa.text("deadline IS NOT NULL")),
    sa.Index(None, "step"),
)

compensation_log = sa.Table(
    "compensation_log",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("order_id", pg.UUID(as_uuid=True), sa.ForeignKey("orders.orders.id", ondelete="CASCADE"), nullable=False),
    sa.Column("action", sa.String(30), nullable=False),
    sa.Column("status", sa.String(20), nullable=False, server_default="requested"),
    sa.Column("reason", sa.String(30), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="1"),
    # The last event sent for it (a retry sends a new one: consumers dedup by event id).
    sa.Column("event_id", pg.UUID(as_uuid=True), nullable=False),
    sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("acknowledged_at", sa.DateTime(timezone=True)),
    *_timestamps(),
    sa.UniqueConstraint("order_id", "action"),
    sa.CheckConstraint(f"action IN ({_in(COMPENSATION_ACTIONS)})", name="action"),
    sa.CheckConstraint(f"status IN ({_in(COMPENSATION_STATUSES)})", name="status"),
    sa.Index(None, "status"),
    sa.Index(None, "created_at"),
)

inventory_reservations = sa.Table(
    "inventory_reservations",
    metadata,
    sa.Column(
        "order_id", pg.UUID(as_uuid=True), sa.ForeignKey("orders.orders.id", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("product_id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("quantity", sa.Integer, nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True)),
    *_timestamps(),
    sa.CheckConstraint("quantity > 0", name="quantity"),
    sa.CheckConstraint(f"status IN ({_in(RESERVATION_STATUSES)})", name="status"),
    sa.Index(None, "product_id"),
    sa.Index(None, "status"),
)

outbox = metadata.tables["orders.outbox"]
idempotency_records = metadata.tables["orders.idempotency_records"]
