"""Tokens and who is calling.

JWT HS256 (pinned: a token whose header names any other algorithm is refused),
with `exp` and `iss` required and checked. Claims: `sub` (= user id), `user_id`,
`email`, `username`, `role`, `iat`, `exp`, `iss`, and `ver`, the user's credentials
version: a token whose `ver` is older than the latest one announced for its user
(`TokenRevocations`, fed by `user.credentials_changed` events) is refused without
any database lookup.

Services call each other's internal endpoints with a short-lived token of role
`service` signed with the same secret (`issue_service_token`).

A token is checked once per process: the claims of a token whose signature, issuer
and required claims passed are kept (`VERIFIED_CACHE_SIZE` tokens, the oldest
forgotten first) and a later request with the very same token only has its expiry
checked again. The signature of the same bytes under the same secret cannot change,
so this refuses exactly what checking it again would; revocation is checked on every
request, cached or not.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Annotated, Any

import jwt
from fastapi import Depends, Request

from prost.kit.errors import Forbidden, Unauthorized

ALGORITHM = "HS256"
ISSUER = "prost-users-service"
ROLES = ("customer", "admin")
VERIFIED_CACHE_SIZE = 4096


@dataclass(frozen=True, slots=True)
class Principal:
    id: uuid.UUID
    email: str
    username: str
    role: str
    version: int = 0

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


class TokenRevocations:
    """The newest credentials version announced per user; older tokens are refused."""

    def __init__(self) -> None:
        self._min_version: dict[uuid.UUID, int] = {}

    def revoke_before(self, user_id: uuid.UUID, version: int) -> None:
        if version > self._min_version.get(user_id, 0):
            self._min_version[user_id] = version

    def is_revoked(self, user_id: uuid.UUID, version: int) -> bool:
        return version < self._min_version.get(user_id, 0)


@dataclass(slots=True)
class TokenAuthority:
    """Issues and verifies tokens with one secret; lives on `app.state.auth`."""

    secret: str
    ttl_seconds: int = 24 * 3600
    revocations: TokenRevocations | None = None
    _verified: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)
    """Token -> its claims, for tokens whose signature was checked (see the module's docstring)."""

    def issue(self, *, user_id: uuid.UUID, email: str, username: str, role: str, version: int = 0) -> tuple[str, int]:
        now = int(time.time())
        exp = now + self.ttl_seconds
        claims = {
            "sub": str(user_id),
            "user_id": str(user_id),
            "email": email,
            "username": username,
            "role": role,
            "ver": version,
            "iat": now,
            "exp": exp,
            "iss": ISSUER,
        }
        return jwt.encode(claims, self.secret, algorithm=ALGORITHM), exp

    def issue_service_token(self, service: str, ttl_seconds: int = 300) -> str:
        now = int(time.time())
        claims = {"sub": f"service:{service}", "role": "service", "iat": now, "exp": now + ttl_seconds, "iss": ISSUER}
        return jwt.encode(claims, self.secret, algorithm=ALGORITHM)

    def decode(self, token: str) -> dict[str, Any]:
        known = self._verified.get(token)
        if known is not None:
            if known["exp"] <= time.time():
                del self._verified[token]
                raise Unauthorized("token expired")
            return known
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self.secret,
                algorithms=[ALGORITHM],
                issuer=ISSUER,
                options={"require": ["exp", "iat", "iss", "sub"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthorized("token expired") from exc
        except jwt.PyJWTError as exc:
            raise Unauthorized("invalid token") from exc
        if len(self._verified) >= VERIFIED_CACHE_SIZE:
            del self._verified[next(iter(self._verified))]
        self._verified[token] = claims
        return claims

    def verify(self, token: str) -> Principal:
        claims = self.decode(token)
        try:
            principal = Principal(
                id=uuid.UUID(str(claims["user_id"])),
                email=str(claims["email"]),
                username=str(claims["username"]),
                role=str(claims["role"]),
                version=int(claims.get("ver", 0)),
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise Unauthorized("invalid token") from exc
        if principal.role not in ROLES or claims["sub"] != str(principal.id):
            raise Unauthorized("invalid token")
        if self.revocations is not None and self.revocations.is_revoked(principal.id, principal.version):
            raise Unauthorized("token revoked")
        return principal

    def verify_service(self, token: str) -> str:
        claims = self.decode(token)
        sub = str(claims.get("sub", ""))
        if claims.get("role") != "service" or not sub.startswith("service:"):
            raise Forbidden("internal endpoint")
        return sub.removeprefix("service:")


def bearer_token(request: Request) -> str:
    header = request.headers.get("authorization")
    if not header:
        raise Unauthorized("missing bearer token")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("malformed authorization header")
    return token.strip()


def authority(request: Request) -> TokenAuthority:
    auth: TokenAuthority = request.app.state.auth
    return auth


# The dependencies are coroutines: FastAPI runs a plain `def` dependency in a worker
# thread, a hand-off per dependency per request for what is microseconds of work.
async def current_user(request: Request) -> Principal:
    return authority(request).verify(bearer_token(request))


async def admin_user(user: Annotated[Principal, Depends(current_user)]) -> Principal:
    if not user.is_admin:
        raise Forbidden("admin role required")
    return user


async def service_caller(request: Request) -> str:
    return authority(request).verify_service(bearer_token(request))


CurrentUser = Annotated[Principal, Depends(current_user)]
AdminUser = Annotated[Principal, Depends(admin_user)]
ServiceCaller = Annotated[str, Depends(service_caller)]
"""An internal endpoint's caller: another prost service, by name."""
