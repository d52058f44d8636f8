"""Events the users service consumes.

`user.credentials_changed` (its own announcement) feeds this process's token
revocations, so a replica that did not make the change refuses the older tokens too
(every process also hears it through the runtime's revocation feed).
`user.registered` has no other consumer yet: the service binds it to itself so that
it leaves the outbox (an unroutable event would be kept and retried as a fault).
"""

from __future__ import annotations

from prost.contracts.users import UserCredentialsChanged, UserRegistered
from prost.kit.db import Session
from prost.kit.messages import Envelope
from prost.kit.service import ServiceContext, Subscription


async def refuse_tokens_before_credentials_change(envelope: Envelope, session: Session, ctx: ServiceContext) -> None:
    event = UserCredentialsChanged.model_validate(envelope.payload)
    if ctx.auth.revocations is not None:
        # revoke_before only ever raises the bar: a stale or repeated event changes nothing.
        ctx.auth.revocations.revoke_before(event.user_id, event.version)


async def note_user_registered(envelope: Envelope, session: Session, ctx: ServiceContext) -> None:
    """Nothing to do: the registration is already in this service's own tables."""


SUBSCRIPTIONS: dict[str, Subscription] = {
    UserCredentialsChanged.TYPE: refuse_tokens_before_credentials_change,
    UserRegistered.TYPE: note_user_registered,
}
