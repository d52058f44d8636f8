"""The users API (API.md, Users): register, login, read and change a profile.

    POST  /api/v1/users/register        UserCreate   → 201 UserPublic
    POST  /api/v1/users/login           LoginRequest → 200 LoginResponse
    GET   /api/v1/users/profile/{id}    own or admin → 200 UserPublic
    PATCH /api/v1/users/profile/{id}    own only     → 200 UserPublic

Unknown body fields (`role` among them) are ignored, never applied. Passwords are
hashed and checked on the bcrypt pool (`passwords.PasswordHasher`), outside any
database transaction. A change of email or password needs `current_password`:
missing → 422 `validation_error`; wrong → 403 `forbidden` (the token is valid, the
proof is not; a wrong one counts as a failed login, so it cannot be guessed faster
than a password at the login door). It raises `credentials_version` and announces
`user.credentials_changed` in the same transaction; tokens issued before are refused.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request, status
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from prost.contracts.users import UserCredentialsChanged, UserRegistered
from prost.kit import db, outbox
from prost.kit.auth import CurrentUser
from prost.kit.db import Session
from prost.kit.errors import RateLimited
from prost.kit.messages import Envelope
from prost.kit.service import ServiceContext, context_dependency
from prost.users import domain
from prost.users.passwords import PasswordHasher
from prost.users.repository import AttemptKey, LoginAttemptRepository, UserRepository, UserRow

# Spelled out (not `context_type("users")`) so that type checkers see a ServiceContext.
Ctx = Annotated[ServiceContext, Depends(context_dependency("users"))]

router = APIRouter(prefix="/api/v1/users", tags=["users"])

Email = Annotated[str, Field(max_length=domain.EMAIL_MAX_CHARS), AfterValidator(domain.normalize_email)]
Username = Annotated[str, AfterValidator(domain.check_username)]
NewPassword = Annotated[str, Field(max_length=1024), AfterValidator(domain.check_new_password)]


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="ignore")

    email: Email
    username: Username
    password: NewPassword


class UserUpdate(BaseModel):
    """Any of these; `null` means "leave as it is". Other fields (`role`) are ignored."""

    model_config = ConfigDict(extra="ignore")

    username: Username | None = None
    email: Email | None = None
    password: NewPassword | None = None
    current_password: Annotated[str, Field(max_length=1024)] | None = None


class UserPublic(BaseModel):
    id: uuid.UUID
    email: str
    username: str
    role: Literal["customer", "admin"]
    created_at: datetime
    updated_at: datetime


class LoginRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    email: Annotated[str, Field(min_length=1, max_length=domain.EMAIL_MAX_CHARS)]
    password: Annotated[str, Field(min_length=1, max_length=1024)]


class LoginResponse(BaseModel):
    token: str
    token_type: Literal["Bearer"] = "Bearer"
    expires_at: datetime
    user: UserPublic


# -- wiring helpers ------------------------------------------------------------------


def password_hasher(ctx: ServiceContext) -> PasswordHasher:
    """The service's bcrypt pool (made on first use; bootstrap warms and closes it)."""
    hasher = ctx.extras.get("passwords")
    if not isinstance(hasher, PasswordHasher):
        hasher = PasswordHasher(ctx.settings.bcrypt_rounds, threads=ctx.settings.bcrypt_threads or None)
        ctx.extras["passwords"] = hasher
    return hasher


def login_limits(ctx: ServiceContext) -> domain.LoginLimits:
    return domain.LoginLimits(ctx.settings.login_max_failures, ctx.settings.login_window_seconds)


def client_address(request: Request) -> str:
    """The caller's address; uvicorn already applied X-Forwarded-For from trusted
    proxies (FORWARDED_ALLOW_IPS, default loopback), so behind the gateway this is the
    client's, not the gateway's."""
    return request.client.host if request.client else "unknown"


def forget_older_tokens(ctx: ServiceContext, user_id: uuid.UUID, version: int) -> None:
    """Refuse this user's older tokens in this process at once (the event tells the rest)."""
    if ctx.auth.revocations is not None:
        ctx.auth.revocations.revoke_before(user_id, version)


def attempt_keys(*, account: str, address: str) -> list[AttemptKey]:
    # Always the account first, then the address: the order the locks are taken in.
    return [AttemptKey("account", account.lower()), AttemptKey("address", address)]


async def finish_attempt(ctx: ServiceContext, attempt_ids: list[int], *, ok: bool) -> None:
    """A right password was no failure: forget its attempt rows; a wrong one's stay."""
    if ok:
        async with db.autocommit(ctx.engine) as session:  # one statement
            await LoginAttemptRepository(session, login_limits(ctx)).close(attempt_ids)


# -- routes --------------------------------------------------------------------------

_RATE_LIMITED: dict[int | str, dict[str, Any]] = {429: {"description": "too many failed logins (Retry-After)"}}


@router.post("/register", status_code=status.HTTP_201_CREATED, response_model=UserPublic, summary="Register a customer")
async def register(body: UserCreate, ctx: Ctx) -> dict[str, object]:
    """Create a customer account (role is always `customer`) and announce `user.registered`."""
    password_hash = await password_hasher(ctx).hash(body.password)
    async with db.transaction(ctx.engine) as session:
        user = await UserRepository(session).add(
            email=body.email, username=body.username, password_hash=password_hash, role=domain.ROLE_CUSTOMER
        )
        await announce_registered(session, user)
    return user.public()


async def announce_registered(session: Session, user: UserRow) -> None:
    """`user.registered`, in the transaction that created the user."""
    event = UserRegistered(user_id=user.id, email=user.email, username=user.username, role=user.role)
    await outbox.add_to_outbox(session, Envelope.wrap(event, producer="users", correlation_id=user.id))


@router.post("/login", response_model=LoginResponse, summary="Log in", responses=_RATE_LIMITED)
async def login(body: LoginRequest, request: Request, ctx: Ctx) -> dict[str, object]:
    """A bearer token for a right email and password; the same 401 for anything else."""
    email = domain.lookup_email(body.email)
    async with db.transaction(ctx.engine) as session:
        user = await UserRepository(session).get_by_email(email)
        attempt_ids = await LoginAttemptRepository(session, login_limits(ctx)).open(
            attempt_keys(account=email, address=client_address(request))
        )
    # Outside any transaction; an unknown email is checked against the dummy hash.
    ok = await password_hasher(ctx).verify(body.password, user.password_hash if user is not None else None)
    await finish_attempt(ctx, attempt_ids, ok=ok)
    if not ok or user is None:
        raise domain.InvalidCredentials
    token, exp = ctx.auth.issue(
        user_id=user.id,
        email=user.email,
        username=user.username,
        role=user.role,
        version=user.credentials_version,
    )
    return {
        "token": token,
        "token_type": "Bearer",
        "expires_at": datetime.fromtimestamp(exp, UTC),
        "user": user.public(),
    }


@router.get("/profile/{user_id}", response_model=UserPublic, summary="Read a profile (own, or any as admin)")
async def read_profile(user_id: uuid.UUID, principal: CurrentUser, ctx: Ctx) -> dict[str, object]:
    domain.check_can_read(principal, user_id)
    async with db.autocommit(ctx.engine) as conn:
        repo = UserRepository(conn)
        user = await repo.get(user_id)
        me = user if principal.id == user_id else await repo.get(principal.id)
    # The token must be current for the caller's own credentials (read anyway, or one
    # primary-key lookup for an admin reading someone else).
    if me is None:
        raise domain.TokenOutdated("token revoked: the account no longer exists")
    domain.check_token_current(principal, me.credentials_version)
    if user is None:
        raise domain.UserNotFound
    return user.public()


@router.patch(
    "/profile/{user_id}",
    response_model=UserPublic,
    summary="Change your username, email or password",
    responses=_RATE_LIMITED,
)
async def update_profile(
    user_id: uuid.UUID, body: UserUpdate, principal: CurrentUser, request: Request, ctx: Ctx
) -> dict[str, object]:
    domain.check_can_change(principal, user_id)
    async with db.autocommit(ctx.engine) as conn:
        current = await UserRepository(conn).get(user_id)
    if current is None:
        raise domain.TokenOutdated("token revoked: the account no longer exists")
    domain.check_token_current(principal, current.credentials_version)
    change = domain.plan_change(
        current_email=current.email,
        current_username=current.username,
        username=body.username,
        email=body.email,
        password=body.password,
    )
    if change.is_empty:
        return current.public()

    password_hash = None
    if change.touches_credentials:
        if not body.current_password:
            raise domain.CurrentPasswordRequired
        keys = attempt_keys(account=current.email, address=client_address(request))
        try:
            async with db.transaction(ctx.engine) as session:
                attempt_ids = await LoginAttemptRepository(session, login_limits(ctx)).open(keys)
        except RateLimited as exc:
            raise RateLimited("too many wrong passwords; try again later", retry_after=exc.retry_after) from exc
        ok = await password_hasher(ctx).verify(body.current_password, current.password_hash)
        await finish_attempt(ctx, attempt_ids, ok=ok)
        if not ok:
            raise domain.WrongCurrentPassword
        if change.password is not None:
            password_hash = await password_hasher(ctx).hash(change.password)

    async with db.transaction(ctx.engine) as session:
        repo = UserRepository(session)
        locked = await repo.get(user_id, for_update=True)
        if locked is None:
            raise domain.TokenOutdated("token revoked: the account no longer exists")
        # Another credentials change may have landed while the password was checked:
        # then this token (and the proof just given) is out of date.
        if locked.credentials_version != current.credentials_version:
            raise domain.TokenOutdated
        updated = await repo.update(
            user_id,
            username=change.username,
            email=change.email,
            password_hash=password_hash,
            bump_credentials=change.touches_credentials,
        )
        if change.touches_credentials:
            event = UserCredentialsChanged(user_id=updated.id, version=updated.credentials_version)
            await outbox.add_to_outbox(session, Envelope.wrap(event, producer="users", correlation_id=updated.id))
    if change.touches_credentials:
        forget_older_tokens(ctx, updated.id, updated.credentials_version)
    return updated.public()
