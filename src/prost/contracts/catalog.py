"""Events produced by the catalog service."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from pydantic import BaseModel, ConfigDict

from prost.kit.messages import Event


class StockLine(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    product_id: uuid.UUID
    quantity: int


class Shortage(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    product_id: uuid.UUID
    requested: int
    available: int


class ProductCreated(Event):
    TYPE = "product.created"
    product_id: uuid.UUID
    sku: str
    name: str
    price: Decimal
    currency: str
    category_id: uuid.UUID | None = None
    stock: int
    active: bool = True


class ProductUpdated(Event):
    TYPE = "product.updated"
    product_id: uuid.UUID
    sku: str
    name: str
    price: Decimal
    currency: str
    category_id: uuid.UUID | None = None
    stock: int
    active: bool


class StockReserved(Event):
    """Every line of the order is reserved until `expires_at`."""

    TYPE = "stock.reserved"
    order_id: uuid.UUID
    lines: list[StockLine]
    expires_at: datetime


class StockReservationFailed(Event):
    TYPE = "stock.reservation_failed"
    order_id: uuid.UUID
    reason: str = "out_of_stock"
    shortages: list[Shortage]


class StockReleased(Event):
    """Reserved or held units are free again. `kind` is `order` or `cart_hold`;
    `owner_id` the order or cart; `reason` `cancelled`, `expired` or `released`."""

    TYPE = "stock.released"
    kind: str
    owner_id: uuid.UUID
    order_id: uuid.UUID | None = None
    reason: str
    lines: list[StockLine]


class StockCommitted(Event):
    """The order's reservation became a sale: stock went down."""

    TYPE = "stock.committed"
    order_id: uuid.UUID
    lines: list[StockLine]
