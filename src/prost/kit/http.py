"""`create_service_app()`: the one way every prost service (and the gateway) is built.

It adds, in this order around the routes:
- `X-Request-ID`: echoed when the client sends a sane one, generated otherwise, and
  kept in a context variable for the JSON logs;
- a 1 MiB cap on request bodies (413 `payload_too_large`, read or declared);
- Prometheus metrics: request counts and latency histograms per route template;
- the error handlers of `prost.kit.errors`, so every error has the contract shape;
- `GET /health`, `GET /ready` (every readiness check must pass, else 503) and `GET /metrics`.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from prost.kit import errors
from prost.kit.logs import request_id_var

MAX_BODY_BYTES = 1024 * 1024
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")

ReadyCheck = Callable[[], Awaitable[bool]]
"""A readiness probe: True when the dependency answers."""


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                candidate = value.decode("latin-1")
                if _REQUEST_ID.match(candidate):
                    request_id = candidate
                break
        if request_id is None:
            request_id = uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        token = request_id_var.set(request_id)
        raw_id = request_id.encode()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k != b"x-request-id"]
                headers.append((b"x-request-id", raw_id))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id_var.reset(token)


class BodyLimitMiddleware:
    """Refuse bodies over the limit, whether declared by Content-Length or streamed."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    too_big = int(value) > self.max_bytes
                except ValueError:
                    too_big = False
                if too_big:
                    await _send_error(send, errors.PayloadTooLarge())
                    return
        seen = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _BodyTooLarge()
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _BodyTooLarge:
            if not started:
                await _send_error(send, errors.PayloadTooLarge())


class _BodyTooLarge(StarletteHTTPException):
    """Raised from `receive` once the streamed body passes the cap.

    An HTTPException because FastAPI turns any other exception raised while it reads
    the body into a 400; this one it lets through to the error handlers (413)."""

    def __init__(self) -> None:
        super().__init__(413, errors.PayloadTooLarge.default_message)


async def _send_error(send: Send, exc: errors.DomainError) -> None:
    response = errors.error_response(exc.code, exc.message, exc.status, headers=exc.headers)
    await send({"type": "http.response.start", "status": response.status_code, "headers": response.raw_headers})
    await send({"type": "http.response.body", "body": response.body})


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, *, service: str, registry: CollectorRegistry) -> None:
        self.app = app
        self.service = service
        self.requests = Counter(
            "prost_http_requests_total",
            "HTTP requests handled",
            ["service", "method", "route", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "prost_http_request_duration_seconds",
            "HTTP request latency",
            ["service", "method", "route"],
            registry=registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        start = time.perf_counter()

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            route = _route_template(scope)
            method = scope["method"]
            self.requests.labels(self.service, method, route, str(status)).inc()
            self.latency.labels(self.service, method, route).observe(time.perf_counter() - start)


def _route_template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str):
        return path
    app = scope.get("app")
    for candidate in getattr(getattr(app, "router", None), "routes", []):
        match, _ = candidate.matches(scope)
        if match == Match.FULL:
            return str(getattr(candidate, "path", "unmatched"))
    return "unmatched"


def create_service_app(
    name: str,
    *,
    routers: Sequence[APIRouter] = (),
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[Any]] | None = None,
    ready_checks: dict[str, ReadyCheck] | None = None,
    title: str | None = None,
    openapi: bool = True,
    edge: Callable[[FastAPI], None] | None = None,
) -> FastAPI:
    """Build a service's ASGI app. `ready_checks` may also be filled in later via `app.state.ready_checks`.

    `edge` adds middleware that must run inside request ids, the body cap and metrics
    but before the routes (the gateway's rate limits, token check, CORS).
    """
    app = FastAPI(
        title=title or f"prost {name}",
        version="0.1.0",
        lifespan=lifespan,
        openapi_url="/openapi.json" if openapi else None,
        docs_url=None,
        redoc_url=None,
    )
    registry = CollectorRegistry()
    app.state.service_name = name
    app.state.metrics_registry = registry
    app.state.ready_checks = dict(ready_checks or {})
    errors.install_error_handlers(app)

    @app.get("/health", tags=["health"], summary="Alive")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready", tags=["health"], summary="Database and bus reachable")
    async def ready() -> errors.JSONBody:
        checks: dict[str, ReadyCheck] = app.state.ready_checks
        results: dict[str, str] = {}
        for check_name, check in checks.items():
            try:
                ok = await check()
            except Exception:
                ok = False
            results[check_name] = "ok" if ok else "down"
        healthy = all(v == "ok" for v in results.values())
        if healthy:
            return errors.JSONBody({"status": "ready", "checks": results})
        body = errors.error_body(
            "unavailable", "not ready: " + ", ".join(k for k, v in results.items() if v != "ok"), 503
        )
        body["checks"] = results
        return errors.JSONBody(body, status_code=503)

    @app.get("/metrics", tags=["health"], summary="Prometheus metrics", include_in_schema=True)
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    for router in routers:
        app.include_router(router)
    if openapi:
        install_docs(app)

    if edge is not None:
        edge(app)
    app.add_middleware(MetricsMiddleware, service=name, registry=registry)
    app.add_middleware(BodyLimitMiddleware)
    app.add_middleware(RequestIdMiddleware)
    return app


def install_docs(app: FastAPI, openapi_url: str = "/openapi.json") -> None:
    """`/docs`: Swagger UI from the `swagger-ui-bundle` wheel, so it works offline."""
    import swagger_ui_bundle
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.responses import HTMLResponse
    from starlette.staticfiles import StaticFiles

    app.mount("/docs-assets", StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{app.title} API",
            swagger_js_url="/docs-assets/swagger-ui-bundle.js",
            swagger_css_url="/docs-assets/swagger-ui.css",
            swagger_favicon_url="/docs-assets/favicon-32x32.png",
        )
