"""The cart schema. Only the cart service touches these tables.

- `carts`: one per shopping session. A user has at most one *current* cart (status
  `open` or `checked_out`), guarded by a partial unique index, so first-use creation
  is race-safe (`INSERT ... ON CONFLICT DO NOTHING`, then read). After the order is
  confirmed the cart becomes `ordered` and a fresh `open` one is made.
- `cart_items`: the lines (quantity, plus the product's sku/name/price as last seen,
  used only when the catalog cannot be asked right after a change).
- `inventory_locks`: the cart's own view of its holds in the catalog, one per line:
  held quantity, expiry and a status (see `prost.cart.domain.LockStatus`).
- `saga_states`: one row per checkout attempt: the order id generated *before*
  orders is called (so a retry reuses it), the lines sent, and how it ended.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from prost.kit.db import schema_metadata

metadata = schema_metadata("cart")

carts = sa.Table(
    "carts",
    metadata,
    sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("user_id", pg.UUID(as_uuid=True), nullable=False),
    sa.Column("status", sa.String(20), nullable=False, server_default="open"),
    sa.Column("currency", sa.String(3), nullable=False, server_default="USD"),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("checked_out_at", sa.DateTime(timezone=True)),
    sa.CheckConstraint("status IN ('open', 'checked_out', 'ordered')", name="status"),
    # One current cart per user: `open`, or `checked_out` while its order runs.
    sa.Index(
        "uq_carts_user_id_current",
        "user_id",
        unique=True,
        postgresql_where=sa.text("status IN ('open', 'checked_out')"),
    ),
    sa.Index(None, "user_id"),
    sa.Index(None, "status"),
    sa.Index(None, "created_at"),
)

cart_items = sa.Table(
    "cart_items",
    metadata,
    sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("cart_id", pg.UUID(as_uuid=True), sa.ForeignKey("cart.carts.id", ondelete="CASCADE"), nullable=False),
    sa.Column("product_id", pg.UUID(as_uuid=True), nullable=False),
    sa.Column("quantity", sa.Integer, nullable=False),
    sa.Column("sku", sa.Text, nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("unit_price", sa.Numeric(12, 2), nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.CheckConstraint("quantity BETWEEN 1 AND 1000", name="quantity"),
    sa.CheckConstraint("unit_price >= 0", name="unit_price"),
    sa.UniqueConstraint("cart_id", "product_id"),
    sa.Index(None, "product_id"),
    sa.Index(None, "created_at"),
)

inventory_locks = sa.Table(
    "inventory_locks",
    metadata,
    sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("cart_id", pg.UUID(as_uuid=True), sa.ForeignKey("cart.carts.id", ondelete="CASCADE"), nullable=False),
    sa.Column("product_id", pg.UUID(as_uuid=True), nullable=False),
    sa.Column("quantity", sa.Integer, nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True)),
    # When this row last took the catalog's word for the hold (stale events are older).
    sa.Column("held_at", sa.DateTime(timezone=True)),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.CheckConstraint("quantity >= 0", name="quantity"),
    sa.CheckConstraint(
        "status IN ('active', 'expired', 'pending', 'unavailable', 'converted')",
        name="status",
    ),
    sa.UniqueConstraint("cart_id", "product_id"),
    sa.Index(None, "status", "expires_at"),
    # The re-hold loop looks for carts with lines waiting for a hold.
    sa.Index("ix_inventory_locks_pending", "cart_id", postgresql_where=sa.text("status = 'pending'")),
)

saga_states = sa.Table(
    "saga_states",
    metadata,
    sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("cart_id", pg.UUID(as_uuid=True), sa.ForeignKey("cart.carts.id", ondelete="CASCADE"), nullable=False),
    sa.Column("order_id", pg.UUID(as_uuid=True), nullable=False),
    sa.Column("user_id", pg.UUID(as_uuid=True), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("lines", pg.JSONB, nullable=False),
    sa.Column("failure_reason", sa.String(50)),
    sa.Column("version", sa.Integer, nullable=False, server_default="1"),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("placed_at", sa.DateTime(timezone=True)),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
    sa.CheckConstraint(
        "status IN ('starting', 'placed', 'confirmed', 'cancelled', 'superseded')",
        name="status",
    ),
    sa.UniqueConstraint("order_id"),
    # At most one checkout in flight per cart.
    sa.Index(
        "uq_saga_states_cart_id_live",
        "cart_id",
        unique=True,
        postgresql_where=sa.text("status IN ('starting', 'placed')"),
    ),
    sa.Index(None, "cart_id"),
    sa.Index(None, "user_id"),
    sa.Index(None, "status"),
    sa.Index(None, "created_at"),
)

outbox = metadata.tables["cart.outbox"]
idempotency_records = metadata.tables["cart.idempotency_records"]
