"""The catalog schema. Only the catalog service touches these tables.

    categories ─┐
                └─< products ─< inventory_reservations      order_stock (one row per order)

- `products.stock` is the units on hand; `products.reserved` is the sum of the
  quantities of the product's reservations whose status is `active` (expired or not),
  kept in the same transaction as every change of those rows. The CHECK
  `reserved <= stock` is the last guard against overselling: whatever the code does,
  the database refuses a state where more is promised than is on the shelf.
- `available` = stock − reserved + (active reservations already past `expires_at`):
  an expired reservation stops counting at once, before the sweeper marks it.
- `products.search_grams` (generated) holds the 1-, 2- and 3-character grams of
  the lower-cased name, description and SKU, computed by the SQL function
  `catalog.search_grams` (made by the first migration); a GIN index on it serves
  `q` (docs/design.md: the embedded PostgreSQL has no pg_trgm).
- `product_counts` holds the number of active products per category, kept exact by
  triggers on `products` in the same transaction as the change, so a listing's
  `total` needs no count over the rows unless it filters by search or price.
- `order_stock` is the catalog's memory of each order: reserved, failed, committed
  or cancelled. It makes every saga instruction idempotent and order-independent (a
  cancellation that arrives before the order leaves a `cancelled` row behind, so the
  late `order.placed` reserves nothing).

Lock order, everywhere: `order_stock` row, then `products` rows by id, then
`inventory_reservations` rows. Every change of a reservation's status or quantity
happens while its product's row is locked.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from prost.kit.db import schema_metadata

metadata = schema_metadata("catalog")

categories = sa.Table(
    "categories",
    metadata,
    sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("slug", sa.String(100), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.UniqueConstraint("slug"),
    sa.Index(None, "name"),
)

products = sa.Table(
    "products",
    metadata,
    sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("sku", sa.String(64), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("description", sa.Text, nullable=False, server_default=""),
    sa.Column("price", sa.Numeric(12, 2), nullable=False),
    sa.Column("currency", sa.String(3), nullable=False, server_default="USD"),
    sa.Column("category_id", pg.UUID(as_uuid=True), sa.ForeignKey("catalog.categories.id", ondelete="SET NULL")),
    sa.Column("stock", sa.Integer, nullable=False),
    sa.Column("reserved", sa.Integer, nullable=False, server_default="0"),
    sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column(
        "search_grams",
        pg.ARRAY(sa.Text),
        sa.Computed("catalog.search_grams(lower(name || chr(10) || description || chr(10) || sku))", persisted=True),
        nullable=False,
    ),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.CheckConstraint("price >= 0", name="price_not_negative"),
    sa.CheckConstraint("stock >= 0", name="stock_not_negative"),
    sa.CheckConstraint("reserved >= 0", name="reserved_not_negative"),
    sa.CheckConstraint("reserved <= stock", name="reserved_within_stock"),
    sa.CheckConstraint("currency ~ '^[A-Z]{3}$'", name="currency_code"),
    sa.Index("uq_products_sku_lower", sa.func.lower(sa.column("sku")), unique=True),
    # The listing indexes: only active products are ever listed, so each is partial.
    sa.Index("ix_products_active_name", "name", "id", postgresql_where=sa.text("active")),
    sa.Index("ix_products_active_price", "price", "id", postgresql_where=sa.text("active")),
    sa.Index("ix_products_active_created_at", "created_at", "id", postgresql_where=sa.text("active")),
    sa.Index("ix_products_active_category_price", "category_id", "price", postgresql_where=sa.text("active")),
    sa.Index(
        "ix_products_active_search",
        "search_grams",
        postgresql_using="gin",
        postgresql_where=sa.text("active"),
    ),
    sa.Index(None, "category_id"),
)

inventory_reservations = sa.Table(
    "inventory_reservations",
    metadata,
    sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("kind", sa.String(10), nullable=False),
    sa.Column("owner_id", pg.UUID(as_uuid=True), nullable=False),
    sa.Column("product_id", pg.UUID(as_uuid=True), sa.ForeignKey("catalog.products.id"), nullable=False),
    sa.Column("quantity", sa.Integer, nullable=False),
    sa.Column("status", sa.String(10), nullable=False, server_default="active"),
    # Why a row stopped being active: cancelled | expired | released | converted | committed.
    sa.Column("end_reason", sa.String(10)),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.CheckConstraint("kind IN ('cart_hold', 'order')", name="kind"),
    sa.CheckConstraint("status IN ('active', 'committed', 'released', 'expired')", name="status"),
    sa.CheckConstraint("quantity > 0", name="quantity_positive"),
    # One live reservation per (kind, owner, product); history rows may repeat it.
    sa.Index(
        "uq_inventory_reservations_active_owner_product",
        "kind",
        "owner_id",
        "product_id",
        unique=True,
        postgresql_where=sa.text("status = 'active'"),
    ),
    sa.Index(None, "owner_id", "kind"),
    sa.Index(None, "product_id", "status"),
    # The sweeper's queue and the per-product "already expired" sum.
    sa.Index(
        "ix_inventory_reservations_active_expires_at", "expires_at", postgresql_where=sa.text("status = 'active'")
    ),
    sa.Index(
        "ix_inventory_reservations_active_product_expires_at",
        "product_id",
        "expires_at",
        postgresql_where=sa.text("status = 'active'"),
    ),
    sa.Index(None, "created_at"),
)

order_stock = sa.Table(
    "order_stock",
    metadata,
    sa.Column("order_id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("state", sa.String(10), nullable=False),
    sa.Column("cart_id", pg.UUID(as_uuid=True)),
    # What `stock.reservation_failed` said, so that a repeated `order.placed` says it again.
    sa.Column("shortages", pg.JSONB),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.CheckConstraint("state IN ('reserved', 'failed', 'committed', 'cancelled')", name="state"),
    sa.Index(None, "state"),
    sa.Index(None, "created_at"),
)

product_counts = sa.Table(
    "product_counts",
    metadata,
    # The category, or the nil UUID for products without one.
    sa.Column("category_key", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("active_products", sa.BigInteger, nullable=False, server_default="0"),
    sa.CheckConstraint("active_products >= 0", name="active_products_not_negative"),
)
"""Active products per category, kept by triggers on `products` (second migration):
the `total` of an unfiltered or category-only listing without counting rows."""

outbox = metadata.tables["catalog.outbox"]
idempotency_records = metadata.tables["catalog.idempotency_records"]
