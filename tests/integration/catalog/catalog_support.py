"""Shared helpers of the catalog tests: products straight in the database, service
tokens, the outbox and the counters as the database sees them."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from prost.catalog.repository import CategoryRepository, ProductRepository
from prost.kit import db

from helpers import admin_token, bearer


def tag() -> str:
    return uuid.uuid4().hex[:10]


async def make_product(engine: AsyncEngine, *, stock: int = 10, price: str = "9.99", **fields: Any) -> uuid.UUID:
    """A product made through the repository (no HTTP, no event)."""
    async with db.transaction(engine) as session:
        row = await ProductRepository(session).add(
            sku=fields.pop("sku", f"T-{tag()}"),
            name=fields.pop("name", f"Test product {tag()}"),
            description=fields.pop("description", ""),
            price=Decimal(price),
            currency="USD",
            category_id=fields.pop("category_id", None),
            stock=stock,
        )
    return row.id


async def make_category(engine: AsyncEngine) -> uuid.UUID:
    t = tag()
    async with db.transaction(engine) as session:
        return (await CategoryRepository(session).add(name=f"Category {t}", slug=f"cat-{t}")).id


async def counters(engine: AsyncEngine, product_id: uuid.UUID) -> dict[str, int]:
    """stock, reserved, the units of active reservations (all, and still live),
    committed units, and `available` as the API computes it."""
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                sa.text(
                    """
                    SELECT p.stock, p.reserved,
                      coalesce((SELECT sum(quantity) FROM catalog.inventory_reservations r
                                 WHERE r.product_id = p.id AND r.status = 'active'), 0) AS active_units,
                      coalesce((SELECT sum(quantity) FROM catalog.inventory_reservations r
                                 WHERE r.product_id = p.id AND r.status = 'active' AND r.expires_at > now()), 0)
                        AS live_units,
                      coalesce((SELECT sum(quantity) FROM catalog.inventory_reservations r
                                 WHERE r.product_id = p.id AND r.status = 'committed'), 0) AS committed_units
                    FROM catalog.products p WHERE p.id = :id
                    """
                ),
                {"id": product_id},
            )
        ).one()
        available = (await ProductRepository(conn).get(product_id)).available
    return {**row._mapping, "available": available}


async def outbox_events(engine: AsyncEngine, event_type: str, **match: str) -> list[dict[str, Any]]:
    """Payloads of the catalog's outbox rows of one type whose payload fields match."""
    where = " AND ".join(f"envelope->'payload'->>'{k}' = :{k}" for k in match)
    sql = (
        "SELECT envelope FROM catalog.outbox WHERE event_type = :t"
        + (f" AND {where}" if where else "")
        + " ORDER BY seq"
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(sa.text(sql), {"t": event_type, **match})).scalars().all()
    return [r["payload"] for r in rows]


async def expire_now(engine: AsyncEngine, *, owner_id: uuid.UUID) -> None:
    """Move an owner's active reservations into the past (time passing, without sleeping)."""
    async with engine.begin() as conn:
        await conn.execute(
            sa.text(
                "UPDATE catalog.inventory_reservations SET expires_at = now() - interval '1 second' "
                "WHERE owner_id = :o AND status = 'active'"
            ),
            {"o": owner_id},
        )


async def admin_headers(client: httpx.AsyncClient) -> dict[str, str]:
    return bearer(await admin_token(client))


def service_headers(system: Any, service: str = "cart") -> dict[str, str]:
    return bearer(system.host.auth.issue_service_token(service))
