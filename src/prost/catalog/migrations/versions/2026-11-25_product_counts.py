"""product counts: active products per category, kept by triggers

A listing's `total` without a search or price filter is then one row (or the sum of
a few) instead of a count over every active product. The triggers run in the same
transaction as the change of `products` they count: on insert and delete, and on an
update of `active` or `category_id` only (stock and counter updates do not fire
them). Products without a category count under the nil UUID. Existing products are
counted once here.

Revision ID: d77aef0d0f45
Revises: 376412f5dc21
Create Date: 2026-11-25 13:11:18.586017
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "d77aef0d0f45"
down_revision: str | None = "376412f5dc21"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COUNT_FUNCTION = r"""
CREATE FUNCTION catalog.count_active_products() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    no_category CONSTANT uuid := '00000000-0000-0000-0000-000000000000';
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.active THEN
        UPDATE catalog.product_counts SET active_products = active_products - 1
        WHERE category_key = coalesce(OLD.category_id, no_category);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') AND NEW.active THEN
        INSERT INTO catalog.product_counts AS c (category_key, active_products)
        VALUES (coalesce(NEW.category_id, no_category), 1)
        ON CONFLICT (category_key) DO UPDATE SET active_products = c.active_products + 1;
    END IF;
    RETURN NULL;
END
$$
"""

TRIGGERS = (
    """CREATE TRIGGER products_counted_on_insert AFTER INSERT ON catalog.products
    FOR EACH ROW EXECUTE FUNCTION catalog.count_active_products()""",
    """CREATE TRIGGER products_counted_on_delete AFTER DELETE ON catalog.products
    FOR EACH ROW EXECUTE FUNCTION catalog.count_active_products()""",
    """CREATE TRIGGER products_counted_on_update AFTER UPDATE OF active, category_id ON catalog.products
    FOR EACH ROW WHEN (OLD.active IS DISTINCT FROM NEW.active OR OLD.category_id IS DISTINCT FROM NEW.category_id)
    EXECUTE FUNCTION catalog.count_active_products()""",
)


def upgrade() -> None:
    op.create_table(
        "product_counts",
        sa.Column("category_key", sa.UUID(), nullable=False),
        sa.Column("active_products", sa.BigInteger(), server_default="0", nullable=False),
        sa.CheckConstraint("active_products >= 0", name=op.f("ck_product_counts_active_products_not_negative")),
        sa.PrimaryKeyConstraint("category_key", name=op.f("pk_product_counts")),
        schema="catalog",
    )
    op.execute(COUNT_FUNCTION)
    for trigger in TRIGGERS:
        op.execute(trigger)
    op.execute(
        "INSERT INTO catalog.product_counts (category_key, active_products) "
        "SELECT coalesce(category_id, '00000000-0000-0000-0000-000000000000'), count(*) "
        "FROM catalog.products WHERE active GROUP BY 1"
    )


def downgrade() -> None:
    for trigger in ("products_counted_on_update", "products_counted_on_delete", "products_counted_on_insert"):
        op.execute(f"DROP TRIGGER {trigger} ON catalog.products")
    op.execute("DROP FUNCTION catalog.count_active_products()")
    op.drop_table("product_counts", schema="catalog")
