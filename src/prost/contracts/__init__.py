"""Event payloads on the wire, one module per producing service.

`EVENT_TYPES` maps each routing key to its payload model; `parse(envelope)` gives the
typed payload. Payloads ignore unknown fields so producers can add some safely.
Money travels as decimal strings, ids as UUID strings.
"""

from __future__ import annotations

from prost.contracts import cart, catalog, orders, payments, users
from prost.kit.messages import Envelope, Event

_MODULES = (users, catalog, cart, orders, payments)

EVENT_TYPES: dict[str, type[Event]] = {
    model.TYPE: model
    for module in _MODULES
    for model in vars(module).values()
    if isinstance(model, type) and issubclass(model, Event) and model is not Event and hasattr(model, "TYPE")
}


def parse(envelope: Envelope) -> Event:
    model = EVENT_TYPES[envelope.event_type]
    return model.model_validate(envelope.payload)


__all__ = ["EVENT_TYPES", "Envelope", "Event", "parse"]
