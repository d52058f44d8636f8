"""The front door in the embedded mode: one app with every service's routes.

In the distributed mode the gateway is a proxy (`gateway.proxy`); here the services
live in the same process, so their routers are mounted directly, behind the same
edge concerns (request ids, body cap, metrics, rate limits, CORS) and
with the same storefront pages.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from prost.gateway.edge import install_edge
from prost.gateway.storefront import mount_storefront
from prost.kit import db
from prost.kit.auth import TokenAuthority
from prost.kit.bus.base import MessageBus
from prost.kit.http import create_service_app
from prost.kit.settings import Settings

if TYPE_CHECKING:
    from prost.runtime.host import ServiceHost


def create_embedded_app(
    host: ServiceHost, *, settings: Settings, engine: AsyncEngine, bus: MessageBus, auth: TokenAuthority
) -> FastAPI:
    app = create_service_app(
        "gateway",
        title="prost",
        ready_checks={"database": functools.partial(db.is_ready, engine), "bus": bus.is_ready},
        # No early token check here: the services' own check runs in this same process
        # with the same authority, so a second one would only decode every token twice.
        edge=lambda a: install_edge(a, settings=settings, auth=auth, check_tokens=False),
    )
    app.state.auth = auth
    app.state.settings = settings
    host.mount(app)
    mount_storefront(app)
    return app
