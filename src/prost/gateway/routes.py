"""Which service owns which public path, and which paths need a token.

The table is the gateway's whole routing knowledge; `/internal/...` is never routed.
"""

from __future__ import annotations

import re

# (path prefix, service): the first match wins.
ROUTES: tuple[tuple[str, str], ...] = (
    ("/api/v1/users/", "users"),
    ("/api/v1/categories", "catalog"),
    ("/api/v1/products", "catalog"),
    ("/api/v1/cart", "cart"),
    ("/api/v1/orders", "orders"),
)

_PUBLIC_READS = re.compile(r"^/api/v1/(categories|products)(/[^/]+)?/?$")
_PUBLIC_POSTS = {"/api/v1/users/register", "/api/v1/users/login"}


def service_for(path: str) -> str | None:
    for prefix, service in ROUTES:
        if path == prefix.rstrip("/") or path.startswith(prefix):
            return service
    return None


def needs_token(method: str, path: str) -> bool:
    """True for every route of the contract that requires `Authorization`; paths the
    contract does not name go through, so their service answers 404 or 405."""
    if method == "OPTIONS" or (method == "POST" and path in _PUBLIC_POSTS):
        return False
    if method in ("GET", "HEAD") and _PUBLIC_READS.match(path):
        return False
    if path.startswith("/api/v1/users/"):
        return path.startswith("/api/v1/users/profile/")
    return service_for(path) is not None
