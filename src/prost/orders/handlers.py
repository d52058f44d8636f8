"""What orders does with the events it consumes: one table, `SUBSCRIPTIONS`.

Every saga event goes the same way (`advance_saga`): lock the order's saga row, let
`saga.decide` say what the event means in the saga's current state, write that
decision (saga row, order status, compensation log, outgoing events) in the inbox's
transaction. A duplicate, stale or out-of-order event is a decision that changes
nothing. `stock.committed` is not consumed: orders wrote its view of the reservation
as `committed` when it confirmed the order (the catalog's commit of a confirmed order
is idempotent and certain), so the event is an announcement. A `stock.released` of a
cart hold that expired is the cart's: orders acknowledges it with no transaction and no
inbox record (`Only`).
"""

from __future__ import annotations

import logging
import uuid

from prost.contracts.catalog import StockReleased, StockReservationFailed, StockReserved
from prost.contracts.payments import PaymentFailed, PaymentProcessed, PaymentRefunded
from prost.kit.db import Session
from prost.kit.messages import Envelope
from prost.kit.service import Only, ServiceContext, Subscription
from prost.orders import saga as sg
from prost.orders.repository import SagaRepository, utcnow

log = logging.getLogger("prost.orders.saga")

SagaEvent = StockReserved | StockReservationFailed | StockReleased | PaymentProcessed | PaymentFailed | PaymentRefunded

_SAGA_EVENTS: dict[str, type[SagaEvent]] = {
    StockReserved.TYPE: StockReserved,
    StockReservationFailed.TYPE: StockReservationFailed,
    StockReleased.TYPE: StockReleased,
    PaymentProcessed.TYPE: PaymentProcessed,
    PaymentFailed.TYPE: PaymentFailed,
    PaymentRefunded.TYPE: PaymentRefunded,
}


def about_an_order(envelope: Envelope) -> bool:
    """`stock.released` also tells of cart holds that expired: nothing here to do."""
    return envelope.payload.get("kind") == "order"


def _order_of(message: SagaEvent) -> uuid.UUID:
    if isinstance(message, StockReleased):  # an order's, as `about_an_order` let through
        return message.order_id or message.owner_id
    return message.order_id


async def advance_saga(envelope: Envelope, session: Session, ctx: ServiceContext) -> None:
    """Apply one saga event to its order's saga (inside the inbox transaction)."""
    model = _SAGA_EVENTS[envelope.event_type]
    message = model.model_validate(envelope.payload)
    order_id = _order_of(message)
    sagas = SagaRepository(session)
    current = await sagas.get_for_update(order_id)
    if current is None:
        log.warning(
            "%s for unknown order %s ignored", envelope.event_type, order_id, extra={"event_id": str(envelope.event_id)}
        )
        return
    now = utcnow()
    decision = sg.decide(current, message, now=now, policy=sg.Policy.from_settings(ctx.settings))
    if not decision.changed:
        log.info("%s for order %s changes nothing: %s", envelope.event_type, order_id, decision.note)
        return
    await sagas.apply(current, decision, caused_by=envelope, now=now)


SUBSCRIPTIONS: dict[str, Subscription] = {
    StockReserved.TYPE: advance_saga,
    StockReservationFailed.TYPE: advance_saga,
    StockReleased.TYPE: Only(about_an_order, advance_saga),
    PaymentProcessed.TYPE: advance_saga,
    PaymentFailed.TYPE: advance_saga,
    PaymentRefunded.TYPE: advance_saga,
}
