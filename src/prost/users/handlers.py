"""Events the users service consumes: only its own announcements, bound so that they
are always routable (an event no queue is bound for stays in the outbox and is retried
as a fault). Nothing to do on either, so no transaction and no inbox record:

    user.registered           no other consumer yet; the registration is already in
                              this service's tables
    user.credentials_changed  every process, this one included, applies it through the
                              runtime's revocation feed (`runtime/revocations.py`,
                              `MessageBus.listen`); a queue shared by the replicas would
                              reach only one of them
"""

from __future__ import annotations

from prost.contracts.users import UserCredentialsChanged, UserRegistered
from prost.kit.messages import Envelope
from prost.kit.service import Raw, ServiceContext, Subscription


async def acknowledge_own_announcement(envelope: Envelope, ctx: ServiceContext) -> None:
    """Nothing to do (see the module's docstring)."""


SUBSCRIPTIONS: dict[str, Subscription] = {
    UserCredentialsChanged.TYPE: Raw(acknowledge_own_announcement),
    UserRegistered.TYPE: Raw(acknowledge_own_announcement),
}
