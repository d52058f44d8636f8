"""The gateway's edge concerns, shared by the embedded app and the proxy:
per-client rate limiting, the early token check, CORS, security headers.

Rate limiting is a token bucket per client address kept in the gateway process
(`PROST_RATE_LIMIT_PER_SECOND`, bursts of twice that). With several gateway replicas
each enforces its own share; failed logins are limited by the users service in the
database, which holds across replicas.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from prost.gateway.routes import needs_token
from prost.kit import errors
from prost.kit.auth import TokenAuthority
from prost.kit.http import _send_error
from prost.kit.settings import Settings


class TokenBuckets:
    """Token buckets per key; least recently seen keys are forgotten past `max_keys`."""

    def __init__(self, rate: float, burst: float, max_keys: int = 100_000) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str, now: float | None = None) -> float:
        """Take one token; returns 0 when allowed, else seconds until one is available."""
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens >= 1:
            self._buckets[key] = (tokens - 1, now)
            wait = 0.0
        else:
            self._buckets[key] = (tokens, now)
            wait = (1 - tokens) / self.rate
        if len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return wait


def client_address(scope: Scope) -> str:
    client = scope.get("client")
    return client[0] if client else "unknown"


class RateLimitMiddleware:
    EXEMPT = ("/health", "/ready", "/metrics")

    def __init__(self, app: ASGIApp, *, per_second: float) -> None:
        self.app = app
        self.buckets = TokenBuckets(per_second, max(1.0, per_second * 2))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in self.EXEMPT:
            wait = self.buckets.take(client_address(scope))
            if wait > 0:
                await _send_error(send, errors.RateLimited(retry_after=math.ceil(wait)))
                return
        await self.app(scope, receive, send)


class TokenCheckMiddleware:
    """Refuse a missing or bad token on protected routes before any service sees it
    (the services check again)."""

    def __init__(self, app: ASGIApp, *, auth: TokenAuthority) -> None:
        self.app = app
        self.auth = auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and needs_token(scope["method"], scope["path"]):
            header = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"authorization"), "")
            scheme, _, token = header.partition(" ")
            try:
                if scheme.lower() != "bearer" or not token.strip():
                    raise errors.Unauthorized(
                        "missing bearer token" if not header else "malformed authorization header"
                    )
                self.auth.verify(token.strip())
            except errors.DomainError as exc:
                await _send_error(send, exc)
                return
        await self.app(scope, receive, send)


def install_edge(app: FastAPI, *, settings: Settings, auth: TokenAuthority, check_tokens: bool) -> None:
    """Add the edge middleware (inside request ids and the body cap, outside the routes)."""
    if check_tokens:
        app.add_middleware(TokenCheckMiddleware, auth=auth)
    if settings.rate_limit_per_second > 0:
        app.add_middleware(RateLimitMiddleware, per_second=settings.rate_limit_per_second)
    origins = [o.strip() for o in settings.cors_origins.split(",") if o.strip()]
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "X-Request-ID"],
            expose_headers=["X-Request-ID", "Retry-After"],
            max_age=600,
        )
