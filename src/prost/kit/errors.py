"""The error tree and the one error shape.

Every error that leaves prost over HTTP is
``{"error": "<snake_case code>", "message": "<human detail>", "code": <HTTP status>}``
(422 may add ``"details": [...]``). Services raise named subclasses; the handlers
installed by :func:`install_error_handlers` turn them, Starlette's own HTTP errors and
anything unexpected into that shape::

    DomainError                      (code, status)
    ├── ValidationFailed             validation_error        422
    │   └── IdempotencyKeyReused     idempotency_key_reused  422
    ├── Unauthorized                 unauthorized            401
    ├── Forbidden                    forbidden               403
    ├── NotFound                     not_found               404
    ├── Conflict                     conflict                409
    │   ├── InsufficientStock        insufficient_stock      409
    │   └── CartEmpty                cart_empty              409
    ├── PayloadTooLarge              payload_too_large       413
    ├── RateLimited                  rate_limited            429  (+ Retry-After)
    ├── Unavailable                  unavailable             503
    └── GatewayTimeout               timeout                 504
    anything else                    internal_error          500  (no internals)
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any, ClassVar

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("prost.errors")


class JSONBody(JSONResponse):
    """JSON rendered by orjson (decimal strings and UUIDs are already strings here)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class DomainError(Exception):
    code: ClassVar[str] = "internal_error"
    status: ClassVar[int] = 500
    default_message: ClassVar[str] = "internal error"

    def __init__(
        self,
        message: str | None = None,
        *,
        details: list[Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.message = message or self.default_message
        self.details = details
        self.headers = headers
        super().__init__(self.message)


class ValidationFailed(DomainError):
    code, status, default_message = "validation_error", 422, "invalid request"


class IdempotencyKeyReused(ValidationFailed):
    code, default_message = "idempotency_key_reused", "this Idempotency-Key was used with another request body"


class Unauthorized(DomainError):
    code, status, default_message = "unauthorized", 401, "authentication required"


class Forbidden(DomainError):
    code, status, default_message = "forbidden", 403, "not allowed"


class NotFound(DomainError):
    code, status, default_message = "not_found", 404, "not found"


class Conflict(DomainError):
    code, status, default_message = "conflict", 409, "conflict"


class InsufficientStock(Conflict):
    code, default_message = "insufficient_stock", "not enough stock"


class CartEmpty(Conflict):
    code, default_message = "cart_empty", "the cart is empty"


class PayloadTooLarge(DomainError):
    code, status, default_message = "payload_too_large", 413, "request body is larger than 1 MiB"


class RateLimited(DomainError):
    code, status, default_message = "rate_limited", 429, "too many requests"

    def __init__(self, message: str | None = None, *, retry_after: int) -> None:
        super().__init__(message, headers={"Retry-After": str(max(1, retry_after))})
        self.retry_after = retry_after


class Unavailable(DomainError):
    code, status, default_message = "unavailable", 503, "a service this request needs is unavailable"


class GatewayTimeout(DomainError):
    code, status, default_message = "timeout", 504, "a service did not answer in time"


_STATUS_CODES = {
    400: "validation_error",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "validation_error",
    422: "validation_error",
    429: "rate_limited",
    503: "unavailable",
    504: "timeout",
}


def error_body(code: str, message: str, status: int, details: list[Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"error": code, "message": message, "code": status}
    if details is not None:
        body["details"] = details
    return body


def error_response(
    code: str, message: str, status: int, *, details: list[Any] | None = None, headers: dict[str, str] | None = None
) -> JSONBody:
    return JSONBody(error_body(code, message, status, details), status_code=status, headers=headers)


def _clean_validation_errors(errors: Any) -> list[dict[str, Any]]:
    cleaned = []
    for err in errors:
        cleaned.append(
            {
                "loc": [str(p) for p in err.get("loc", ())],
                "msg": str(err.get("msg", "")),
                "type": str(err.get("type", "")),
            }
        )
    return cleaned


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def _domain(_: Request, exc: DomainError) -> JSONBody:
        return error_response(exc.code, exc.message, exc.status, details=exc.details, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONBody:
        details = _clean_validation_errors(exc.errors())
        first = details[0] if details else {"loc": [], "msg": "invalid request"}
        where = ".".join(p for p in first["loc"] if p != "body") or "request"
        message = "malformed JSON body" if first.get("type") == "json_invalid" else f"{where}: {first['msg']}"
        return error_response("validation_error", message, 422, details=details)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONBody:
        status = exc.status_code
        code = _STATUS_CODES.get(status, "internal_error" if status >= 500 else "error")
        message = exc.detail if isinstance(exc.detail, str) else HTTPStatus(status).phrase
        if status == 404 and message == "Not Found":
            message = "no such resource"
        return error_response(code, message, status, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONBody:
        if is_unavailable(exc):
            log.warning("dependency unavailable on %s %s: %s", request.method, request.url.path, exc)
            return error_response("unavailable", "a service this request needs is unavailable, try again", 503)
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return error_response("internal_error", "internal error", 500)


def is_unavailable(exc: BaseException) -> bool:
    """A database that refuses connections, is full, or went away is a 503, not a bug."""
    import asyncpg
    import sqlalchemy.exc

    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return False
        if isinstance(
            seen,
            OSError
            | TimeoutError
            | asyncpg.TooManyConnectionsError
            | asyncpg.CannotConnectNowError
            | asyncpg.ConnectionDoesNotExistError
            | asyncpg.InterfaceError
            | sqlalchemy.exc.TimeoutError,
        ):
            return True
        if isinstance(seen, sqlalchemy.exc.DBAPIError) and seen.connection_invalidated:
            return True
        seen = getattr(seen, "orig", None) or seen.__cause__
    return False
