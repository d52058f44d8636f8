"""The public API's OpenAPI document, built from every service's public routers.

The embedded app serves its own (it mounts the same routers); the distributed gateway,
which imports no service, is handed this one by the runtime.
"""

from __future__ import annotations

from typing import Any

from prost.kit.http import create_service_app
from prost.runtime import registry


def public_openapi() -> dict[str, Any]:
    app = create_service_app("gateway", title="prost")
    for definition in registry.definitions():
        for router in definition.public_routers:
            app.include_router(router)
    return app.openapi()
