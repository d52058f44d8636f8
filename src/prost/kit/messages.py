"""The envelope every event travels in (DESIGN.md section 4).

`event_type` is the routing key (`order.placed`); `correlation_id` is the order id for
everything in one checkout; `causation_id` is the event that caused this one.
Consumers accept unknown fields, in the envelope and in payloads.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar, Self

import orjson
from pydantic import BaseModel, ConfigDict, Field


class Event(BaseModel):
    """An event payload. Subclasses set `TYPE` (the routing key) and `VERSION`."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    TYPE: ClassVar[str]
    VERSION: ClassVar[int] = 1


class Envelope(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    event_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    event_type: str
    occurred_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    producer: str
    correlation_id: str | None = None
    causation_id: uuid.UUID | None = None
    version: int = 1
    payload: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def wrap(
        cls,
        event: Event,
        *,
        producer: str,
        correlation_id: str | uuid.UUID | None = None,
        caused_by: Envelope | None = None,
    ) -> Self:
        """Wrap a payload; `caused_by` fills causation and, unless given, correlation."""
        if correlation_id is None and caused_by is not None:
            correlation_id = caused_by.correlation_id
        return cls(
            event_type=event.TYPE,
            producer=producer,
            correlation_id=str(correlation_id) if correlation_id is not None else None,
            causation_id=caused_by.event_id if caused_by is not None else None,
            version=event.VERSION,
            payload=event.model_dump(mode="json"),
        )

    def to_json(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json"))

    @classmethod
    def from_json(cls, raw: bytes | str) -> Self:
        return cls.model_validate(orjson.loads(raw))
