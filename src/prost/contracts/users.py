"""Events produced by the users service."""

from __future__ import annotations

import uuid

from prost.kit.messages import Event


class UserRegistered(Event):
    TYPE = "user.registered"
    user_id: uuid.UUID
    email: str
    username: str
    role: str


class UserCredentialsChanged(Event):
    """A password (or email) changed: tokens with a lower `version` must be refused."""

    TYPE = "user.credentials_changed"
    user_id: uuid.UUID
    version: int
