"""catalog schema: categories, products, inventory_reservations, order_stock

The product search index needs two SQL functions (no extension: the embedded
PostgreSQL ships without pg_trgm); they are made before `products`, whose generated
column `search_grams` calls one, and dropped after it.

Revision ID: 376412f5dc21
Revises:
Create Date: 2026-11-25 12:21:52.750695
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "376412f5dc21"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


SEARCH_FUNCTIONS = (
    r"""CREATE FUNCTION catalog.search_grams(t text) RETURNS text[]
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
        SELECT coalesce(array_agg(DISTINCT substr(t, i, n)), '{}')
        FROM generate_series(1, 3) AS n
        CROSS JOIN LATERAL generate_series(1, length(t) - n + 1) AS i
    $$""",
    r"""COMMENT ON FUNCTION catalog.search_grams(text) IS
    'Every 1-, 2- and 3-character substring of t, once: the keys of the product search index'""",
    r"""CREATE FUNCTION catalog.search_query_grams(t text) RETURNS text[]
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
        SELECT CASE WHEN length(t) < 3 THEN ARRAY[t]
               ELSE (SELECT array_agg(DISTINCT substr(t, i, 3)) FROM generate_series(1, length(t) - 2) AS i)
               END
    $$""",
    r"""COMMENT ON FUNCTION catalog.search_query_grams(text) IS
    'The grams every text containing t has: its trigrams, or t itself when shorter than 3'""",
)


def upgrade() -> None:
    for statement in SEARCH_FUNCTIONS:
        op.execute(statement)
    op.create_table(
        "categories",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("slug", sa.String(length=100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_categories")),
        sa.UniqueConstraint("slug", name=op.f("uq_categories_slug")),
        schema="catalog",
    )
    op.create_index(op.f("ix_categories_name"), "categories", ["name"], unique=False, schema="catalog")
    op.create_table(
        "idempotency_records",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("event_id", sa.UUID(), nullable=True),
        sa.Column("service_name", sa.String(length=50), nullable=True),
        sa.Column("key", sa.String(length=255), nullable=True),
        sa.Column("user_id", sa.UUID(), nullable=True),
        sa.Column("scope", sa.String(length=100), nullable=True),
        sa.Column("fingerprint", sa.String(length=64), nullable=True),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("response", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("kind IN ('event', 'http')", name=op.f("ck_idempotency_records_kind")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_idempotency_records")),
        sa.UniqueConstraint("event_id", "service_name", name=op.f("uq_idempotency_records_event_id_service_name")),
        sa.UniqueConstraint("scope", "user_id", "key", name=op.f("uq_idempotency_records_scope_user_id_key")),
        schema="catalog",
    )
    op.create_index(
        op.f("ix_idempotency_records_created_at"), "idempotency_records", ["created_at"], unique=False, schema="catalog"
    )
    op.create_table(
        "order_stock",
        sa.Column("order_id", sa.UUID(), nullable=False),
        sa.Column("state", sa.String(length=10), nullable=False),
        sa.Column("cart_id", sa.UUID(), nullable=True),
        sa.Column("shortages", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "state IN ('reserved', 'failed', 'committed', 'cancelled')", name=op.f("ck_order_stock_state")
        ),
        sa.PrimaryKeyConstraint("order_id", name=op.f("pk_order_stock")),
        schema="catalog",
    )
    op.create_index(op.f("ix_order_stock_created_at"), "order_stock", ["created_at"], unique=False, schema="catalog")
    op.create_index(op.f("ix_order_stock_state"), "order_stock", ["state"], unique=False, schema="catalog")
    op.create_table(
        "outbox",
        sa.Column("seq", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("event_id", sa.UUID(), nullable=False),
        sa.Column("event_type", sa.String(length=100), nullable=False),
        sa.Column("envelope", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_outbox")),
        sa.UniqueConstraint("event_id", name=op.f("uq_outbox_event_id")),
        schema="catalog",
    )
    op.create_index(op.f("ix_outbox_sent_at"), "outbox", ["sent_at"], unique=False, schema="catalog")
    op.create_index(
        "ix_outbox_unsent",
        "outbox",
        ["seq"],
        unique=False,
        schema="catalog",
        postgresql_where=sa.text("sent_at IS NULL"),
    )
    op.create_table(
        "products",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("sku", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), server_default="", nullable=False),
        sa.Column("price", sa.Numeric(precision=12, scale=2), nullable=False),
        sa.Column("currency", sa.String(length=3), server_default="USD", nullable=False),
        sa.Column("category_id", sa.UUID(), nullable=True),
        sa.Column("stock", sa.Integer(), nullable=False),
        sa.Column("reserved", sa.Integer(), server_default="0", nullable=False),
        sa.Column("active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column(
            "search_grams",
            postgresql.ARRAY(sa.Text()),
            sa.Computed(
                "catalog.search_grams(lower(name || chr(10) || description || chr(10) || sku))", persisted=True
            ),
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("currency ~ '^[A-Z]{3}$'", name=op.f("ck_products_currency_code")),
        sa.CheckConstraint("price >= 0", name=op.f("ck_products_price_not_negative")),
        sa.CheckConstraint("reserved <= stock", name=op.f("ck_products_reserved_within_stock")),
        sa.CheckConstraint("reserved >= 0", name=op.f("ck_products_reserved_not_negative")),
        sa.CheckConstraint("stock >= 0", name=op.f("ck_products_stock_not_negative")),
        sa.ForeignKeyConstraint(
            ["category_id"],
            ["catalog.categories.id"],
            name=op.f("fk_products_category_id_categories"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_products")),
        schema="catalog",
    )
    op.create_index(
        "ix_products_active_category_price",
        "products",
        ["category_id", "price"],
        unique=False,
        schema="catalog",
        postgresql_where=sa.text("active"),
    )
    op.create_index(
        "ix_products_active_created_at",
        "products",
        ["created_at", "id"],
        unique=False,
        schema="catalog",
        postgresql_where=sa.text("active"),
    )
    op.create_index(
        "ix_products_active_name",
        "products",
        ["name", "id"],
        unique=False,
        schema="catalog",
        postgresql_where=sa.text("active"),
    )
    op.create_index(
        "ix_products_active_price",
        "products",
        ["price", "id"],
        unique=False,
        schema="catalog",
        postgresql_where=sa.text("active"),
    )
    op.create_index(
        "ix_products_active_search",
        "products",
        ["search_grams"],
        unique=False,
        schema="catalog",
        postgresql_using="gin",
        postgresql_where=sa.text("active"),
    )
    op.create_index(op.f("ix_products_category_id"), "products", ["category_id"], unique=False, schema="catalog")
    op.create_index(
        "uq_products_sku_lower", "products", [sa.literal_column("lower(sku)")], unique=True, schema="catalog"
    )
    op.create_table(
        "inventory_reservations",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("owner_id", sa.UUID(), nullable=False),
        sa.Column("product_id", sa.UUID(), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=10), server_default="active", nullable=False),
        sa.Column("end_reason", sa.String(length=10), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("kind IN ('cart_hold', 'order')", name=op.f("ck_inventory_reservations_kind")),
        sa.CheckConstraint(
            "status IN ('active', 'committed', 'released', 'expired')", name=op.f("ck_inventory_reservations_status")
        ),
        sa.CheckConstraint("quantity > 0", name=op.f("ck_inventory_reservations_quantity_positive")),
        sa.ForeignKeyConstraint(
            ["product_id"], ["catalog.products.id"], name=op.f("fk_inventory_reservations_product_id_products")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inventory_reservations")),
        schema="catalog",
    )
    op.create_index(
        "ix_inventory_reservations_active_expires_at",
        "inventory_reservations",
        ["expires_at"],
        unique=False,
        schema="catalog",
        postgresql_where=sa.text("status = 'active'"),
    )
    op.create_index(
        "ix_inventory_reservations_active_product_expires_at",
        "inventory_reservations",
        ["product_id", "expires_at"],
        unique=False,
        schema="catalog",
        postgresql_where=sa.text("status = 'active'"),
    )
    op.create_index(
        op.f("ix_inventory_reservations_created_at"),
        "inventory_reservations",
        ["created_at"],
        unique=False,
        schema="catalog",
    )
    op.create_index(
        op.f("ix_inventory_reservations_owner_id_kind"),
        "inventory_reservations",
        ["owner_id", "kind"],
        unique=False,
        schema="catalog",
    )
    op.create_index(
        op.f("ix_inventory_reservations_product_id_status"),
        "inventory_reservations",
        ["product_id", "status"],
        unique=False,
        schema="catalog",
    )
    op.create_index(
        "uq_inventory_reservations_active_owner_product",
        "inventory_reservations",
        ["kind", "owner_id", "product_id"],
        unique=True,
        schema="catalog",
        postgresql_where=sa.text("status = 'active'"),
    )


def downgrade() -> None:
    op.drop_index(
        "uq_inventory_reservations_active_owner_product",
        table_name="inventory_reservations",
        schema="catalog",
        postgresql_where=sa.text("status = 'active'"),
    )
    op.drop_index(
        op.f("ix_inventory_reservations_product_id_status"), table_name="inventory_reservations", schema="catalog"
    )
    op.drop_index(
        op.f("ix_inventory_reservations_owner_id_kind"), table_name="inventory_reservations", schema="catalog"
    )
    op.drop_index(op.f("ix_inventory_reservations_created_at"), table_name="inventory_reservations", schema="catalog")
    op.drop_index(
        "ix_inventory_reservations_active_product_expires_at",
        table_name="inventory_reservations",
        schema="catalog",
        postgresql_where=sa.text("status = 'active'"),
    )
    op.drop_index(
        "ix_inventory_reservations_active_expires_at",
        table_name="inventory_reservations",
        schema="catalog",
        postgresql_where=sa.text("status = 'active'"),
    )
    op.drop_table("inventory_reservations", schema="catalog")
    op.drop_index("uq_products_sku_lower", table_name="products", schema="catalog")
    op.drop_index(op.f("ix_products_category_id"), table_name="products", schema="catalog")
    op.drop_index(
        "ix_products_active_search",
        table_name="products",
        schema="catalog",
        postgresql_using="gin",
        postgresql_where=sa.text("active"),
    )
    op.drop_index(
        "ix_products_active_price", table_name="products", schema="catalog", postgresql_where=sa.text("active")
    )
    op.drop_index(
        "ix_products_active_name", table_name="products", schema="catalog", postgresql_where=sa.text("active")
    )
    op.drop_index(
        "ix_products_active_created_at", table_name="products", schema="catalog", postgresql_where=sa.text("active")
    )
    op.drop_index(
        "ix_products_active_category_price", table_name="products", schema="catalog", postgresql_where=sa.text("active")
    )
    op.drop_table("products", schema="catalog")
    op.drop_index(
        "ix_outbox_unsent", table_name="outbox", schema="catalog", postgresql_where=sa.text("sent_at IS NULL")
    )
    op.drop_index(op.f("ix_outbox_sent_at"), table_name="outbox", schema="catalog")
    op.drop_table("outbox", schema="catalog")
    op.drop_index(op.f("ix_order_stock_state"), table_name="order_stock", schema="catalog")
    op.drop_index(op.f("ix_order_stock_created_at"), table_name="order_stock", schema="catalog")
    op.drop_table("order_stock", schema="catalog")
    op.drop_index(op.f("ix_idempotency_records_created_at"), table_name="idempotency_records", schema="catalog")
    op.drop_table("idempotency_records", schema="catalog")
    op.drop_index(op.f("ix_categories_name"), table_name="categories", schema="catalog")
    op.drop_table("categories", schema="catalog")
    op.execute("DROP FUNCTION catalog.search_query_grams(text)")
    op.execute("DROP FUNCTION catalog.search_grams(text)")
