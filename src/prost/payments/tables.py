"""The payments schema. Only the payments service touches these tables.

Two groups live here:

- the service's own books: `payments` (one row per charge, keyed by the provider
  idempotency key derived from the order), plus `outbox` and `idempotency_records`;
- the simulated provider's records, standing for what a real provider keeps on its
  side: `card_tokens` (its vault: last four digits, brand, expiry and the outcome it
  decided for the card, never the number or the CVC) and `provider_charges` (its
  charges by idempotency key, so a repeated key returns the first result).
  Only `prost.payments.provider` reads or writes these two.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from prost.kit.db import schema_metadata

metadata = schema_metadata("payments")

payments = sa.Table(
    "payments",
    metadata,
    sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("order_id", pg.UUID(as_uuid=True), nullable=False),
    sa.Column("user_id", pg.UUID(as_uuid=True), nullable=False),
    sa.Column("amount", sa.Numeric(12, 2), nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("status", sa.String(20), nullable=False, server_default="processing"),
    sa.Column("failure_reason", sa.String(40)),
    # The key the provider sees; one charge per key, whatever is redelivered.
    sa.Column("idempotency_key", sa.String(255), nullable=False),
    sa.Column("card_token", sa.String(64), nullable=False),
    sa.Column("provider_charge_id", sa.String(64)),
    sa.Column("provider_refund_id", sa.String(64)),
    sa.Column("last4", sa.String(4)),
    sa.Column("brand", sa.String(20)),
    # Provider calls made for this charge (retries of provider errors included).
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("refund_reason", sa.String(40)),
    sa.Column("refund_requested_at", sa.DateTime(timezone=True)),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("settled_at", sa.DateTime(timezone=True)),
    sa.Column("refunded_at", sa.DateTime(timezone=True)),
    sa.CheckConstraint("status IN ('processing', 'succeeded', 'failed', 'refunded')", name="status"),
    sa.CheckConstraint("amount >= 0", name="amount_not_negative"),
    sa.CheckConstraint("attempts >= 0", name="attempts_not_negative"),
    sa.CheckConstraint("status <> 'failed' OR failure_reason IS NOT NULL", name="failed_has_reason"),
    sa.CheckConstraint(
        "status NOT IN ('succeeded', 'refunded') OR provider_charge_id IS NOT NULL", name="charged_has_charge"
    ),
    sa.UniqueConstraint("order_id"),
    sa.UniqueConstraint("idempotency_key"),
    sa.Index(None, "user_id"),
    sa.Index(None, "status"),
    sa.Index(None, "created_at"),
    # The resumer looks for charges left processing, and refunds left pending.
    sa.Index("ix_payments_processing_updated_at", "updated_at", postgresql_where=sa.text("status = 'processing'")),
    sa.Index(
        "ix_payments_refund_pending",
        "updated_at",
        postgresql_where=sa.text("status = 'succeeded' AND refund_requested_at IS NOT NULL"),
    ),
)

card_tokens = sa.Table(
    "card_tokens",
    metadata,
    sa.Column("token", sa.String(64), primary_key=True),
    sa.Column("last4", sa.String(4), nullable=False),
    sa.Column("brand", sa.String(20), nullable=False),
    sa.Column("exp_month", sa.SmallInteger, nullable=False),
    sa.Column("exp_year", sa.SmallInteger, nullable=False),
    # What the simulated provider will do with this card (API.md's test-card table).
    sa.Column("outcome", sa.String(30), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.CheckConstraint("exp_month BETWEEN 1 AND 12", name="exp_month"),
    sa.CheckConstraint("last4 ~ '^[0-9]{4}$'", name="last4_digits"),
    sa.CheckConstraint(
        "outcome IN ('succeed', 'decline', 'insufficient_funds', 'error_then_succeed', 'no_answer')", name="outcome"
    ),
    sa.Index(None, "created_at"),
)

provider_charges = sa.Table(
    "provider_charges",
    metadata,
    sa.Column("idempotency_key", sa.String(255), primary_key=True),
    sa.Column("charge_id", sa.String(64), nullable=False),
    sa.Column("token", sa.String(64), nullable=False),
    sa.Column("amount", sa.Numeric(12, 2), nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    # pending: tried, no result yet (provider errors); the rest are final.
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("decline_code", sa.String(40)),
    sa.Column("tries", sa.Integer, nullable=False, server_default="0"),
    sa.Column("refund_id", sa.String(64)),
    sa.Column("refunded_at", sa.DateTime(timezone=True)),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.CheckConstraint("status IN ('pending', 'succeeded', 'declined')", name="status"),
    sa.CheckConstraint("refund_id IS NULL OR status = 'succeeded'", name="refund_of_success"),
    sa.UniqueConstraint("charge_id"),
    sa.Index(None, "token"),
    sa.Index(None, "created_at"),
)

outbox = metadata.tables["payments.outbox"]
idempotency_records = metadata.tables["payments.idempotency_records"]
