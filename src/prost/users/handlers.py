"""Events the users service consumes: none. What it announces is consumed elsewhere
or nowhere yet (`registry.announcements`):

    user.registered           no consumer yet; the registration is already in this
                              service's tables
    user.credentials_changed  every process, this one included, applies it through the
                              runtime's revocation feed (`runtime/revocations.py`,
                              `MessageBus.listen`); a queue shared by the replicas would
                              reach only one of them
"""

from __future__ import annotations

from prost.kit.service import Subscription

SUBSCRIPTIONS: dict[str, Subscription] = {}
