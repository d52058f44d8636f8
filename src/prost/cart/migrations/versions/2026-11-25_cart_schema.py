"""cart schema: carts, cart_items, inventory_locks, saga_states (+ outbox, idempotency_records)

Revision ID: 9fd6d6dff64d
Revises:
Create Date: 2026-11-25 12:24:42.152965
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "9fd6d6dff64d"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "carts",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("status", sa.String(length=20), server_default="open", nullable=False),
        sa.Column("currency", sa.String(length=3), server_default="USD", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("checked_out_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("status IN ('open', 'checked_out', 'ordered')", name=op.f("ck_carts_status")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_carts")),
        schema="cart",
    )
    op.create_index(op.f("ix_carts_created_at"), "carts", ["created_at"], unique=False, schema="cart")
    op.create_index(op.f("ix_carts_status"), "carts", ["status"], unique=False, schema="cart")
    op.create_index(op.f("ix_carts_user_id"), "carts", ["user_id"], unique=False, schema="cart")
    op.create_index(
        "uq_carts_user_id_current",
        "carts",
        ["user_id"],
        unique=True,
        schema="cart",
        postgresql_where=sa.text("status IN ('open', 'checked_out')"),
    )
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
        schema="cart",
    )
    op.create_index(
        op.f("ix_idempotency_records_created_at"), "idempotency_records", ["created_at"], unique=False, schema="cart"
    )
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
        schema="cart",
    )
    op.create_index(op.f("ix_outbox_sent_at"), "outbox", ["sent_at"], unique=False, schema="cart")
    op.create_index(
        "ix_outbox_unsent", "outbox", ["seq"], unique=False, schema="cart", postgresql_where=sa.text("sent_at IS NULL")
    )
    op.create_table(
        "cart_items",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("cart_id", sa.UUID(), nullable=False),
        sa.Column("product_id", sa.UUID(), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("sku", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("unit_price", sa.Numeric(precision=12, scale=2), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("quantity BETWEEN 1 AND 1000", name=op.f("ck_cart_items_quantity")),
        sa.CheckConstraint("unit_price >= 0", name=op.f("ck_cart_items_unit_price")),
        sa.ForeignKeyConstraint(
            ["cart_id"], ["cart.carts.id"], name=op.f("fk_cart_items_cart_id_carts"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cart_items")),
        sa.UniqueConstraint("cart_id", "product_id", name=op.f("uq_cart_items_cart_id_product_id")),
        schema="cart",
    )
    op.create_index(op.f("ix_cart_items_created_at"), "cart_items", ["created_at"], unique=False, schema="cart")
    op.create_index(op.f("ix_cart_items_product_id"), "cart_items", ["product_id"], unique=False, schema="cart")
    op.create_table(
        "inventory_locks",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("cart_id", sa.UUID(), nullable=False),
        sa.Column("product_id", sa.UUID(), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("held_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "status IN ('active', 'expired', 'pending', 'unavailable', 'converted')",
            name=op.f("ck_inventory_locks_status"),
        ),
        sa.CheckConstraint("quantity >= 0", name=op.f("ck_inventory_locks_quantity")),
        sa.ForeignKeyConstraint(
            ["cart_id"], ["cart.carts.id"], name=op.f("fk_inventory_locks_cart_id_carts"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inventory_locks")),
        sa.UniqueConstraint("cart_id", "product_id", name=op.f("uq_inventory_locks_cart_id_product_id")),
        schema="cart",
    )
    op.create_index(
        "ix_inventory_locks_pending",
        "inventory_locks",
        ["cart_id"],
        unique=False,
        schema="cart",
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_index(
        op.f("ix_inventory_locks_status_expires_at"),
        "inventory_locks",
        ["status", "expires_at"],
        unique=False,
        schema="cart",
    )
    op.create_table(
        "saga_states",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("cart_id", sa.UUID(), nullable=False),
        sa.Column("order_id", sa.UUID(), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("lines", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("failure_reason", sa.String(length=50), nullable=True),
        sa.Column("version", sa.Integer(), server_default="1", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("placed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('starting', 'placed', 'confirmed', 'cancelled', 'superseded')",
            name=op.f("ck_saga_states_status"),
        ),
        sa.ForeignKeyConstraint(
            ["cart_id"], ["cart.carts.id"], name=op.f("fk_saga_states_cart_id_carts"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_saga_states")),
        sa.UniqueConstraint("order_id", name=op.f("uq_saga_states_order_id")),
        schema="cart",
    )
    op.create_index(op.f("ix_saga_states_cart_id"), "saga_states", ["cart_id"], unique=False, schema="cart")
    op.create_index(op.f("ix_saga_states_created_at"), "saga_states", ["created_at"], unique=False, schema="cart")
    op.create_index(op.f("ix_saga_states_status"), "saga_states", ["status"], unique=False, schema="cart")
    op.create_index(op.f("ix_saga_states_user_id"), "saga_states", ["user_id"], unique=False, schema="cart")
    op.create_index(
        "uq_saga_states_cart_id_live",
        "saga_states",
        ["cart_id"],
        unique=True,
        schema="cart",
        postgresql_where=sa.text("status IN ('starting', 'placed')"),
    )


def downgrade() -> None:
    op.drop_index(
        "uq_saga_states_cart_id_live",
        table_name="saga_states",
        schema="cart",
        postgresql_where=sa.text("status IN ('starting', 'placed')"),
    )
    op.drop_index(op.f("ix_saga_states_user_id"), table_name="saga_states", schema="cart")
    op.drop_index(op.f("ix_saga_states_status"), table_name="saga_states", schema="cart")
    op.drop_index(op.f("ix_saga_states_created_at"), table_name="saga_states", schema="cart")
    op.drop_index(op.f("ix_saga_states_cart_id"), table_name="saga_states", schema="cart")
    op.drop_table("saga_states", schema="cart")
    op.drop_index(op.f("ix_inventory_locks_status_expires_at"), table_name="inventory_locks", schema="cart")
    op.drop_index(
        "ix_inventory_locks_pending",
        table_name="inventory_locks",
        schema="cart",
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.drop_table("inventory_locks", schema="cart")
    op.drop_index(op.f("ix_cart_items_product_id"), table_name="cart_items", schema="cart")
    op.drop_index(op.f("ix_cart_items_created_at"), table_name="cart_items", schema="cart")
    op.drop_table("cart_items", schema="cart")
    op.drop_index("ix_outbox_unsent", table_name="outbox", schema="cart", postgresql_where=sa.text("sent_at IS NULL"))
    op.drop_index(op.f("ix_outbox_sent_at"), table_name="outbox", schema="cart")
    op.drop_table("outbox", schema="cart")
    op.drop_index(op.f("ix_idempotency_records_created_at"), table_name="idempotency_records", schema="cart")
    op.drop_table("idempotency_records", schema="cart")
    op.drop_index(
        "uq_carts_user_id_current",
        table_name="carts",
        schema="cart",
        postgresql_where=sa.text("status IN ('open', 'checked_out')"),
    )
    op.drop_index(op.f("ix_carts_user_id"), table_name="carts", schema="cart")
    op.drop_index(op.f("ix_carts_status"), table_name="carts", schema="cart")
    op.drop_index(op.f("ix_carts_created_at"), table_name="carts", schema="cart")
    op.drop_table("carts", schema="cart")
