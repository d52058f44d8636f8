"""Events produced by the cart service."""

from __future__ import annotations

import uuid

from prost.contracts.catalog import StockLine
from prost.kit.messages import Event


class CartCheckedOut(Event):
    TYPE = "cart.checked_out"
    cart_id: uuid.UUID
    user_id: uuid.UUID
    order_id: uuid.UUID
    lines: list[StockLine]
