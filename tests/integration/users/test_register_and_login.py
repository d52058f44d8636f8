"""POST /api/v1/users/register and /login over HTTP, on the running system."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import bcrypt
import httpx
import jwt
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from prost.users import passwords

from helpers import bearer

USER_FIELDS = {"id", "email", "username", "role", "created_at", "updated_at"}


def new_identity() -> dict[str, str]:
    tag = uuid.uuid4().hex[:10]
    return {"email": f"ada-{tag}@prost.test", "username": f"ada_{tag}", "password": "password-123"}


async def outbox_rows(engine: AsyncEngine, event_type: str, user_id: str) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            sa.text("SELECT envelope FROM users.outbox WHERE event_type = :t AND envelope->'payload'->>'user_id' = :u"),
            {"t": event_type, "u": user_id},
        )
        return [r.envelope for r in rows]


async def test_registering_returns_201_and_the_user_without_any_hash(client: httpx.AsyncClient) -> None:
    ident = new_identity()
    r = await client.post("/api/v1/users/register", json=ident)
    assert r.status_code == 201, r.text
    user = r.json()
    assert set(user) == USER_FIELDS
    assert user["email"] == ident["email"]
    assert user["username"] == ident["username"]
    assert user["role"] == "customer"
    uuid.UUID(user["id"])
    assert datetime.fromisoformat(user["created_at"]).tzinfo is not None
    assert "password" not in r.text
    assert "$2b$" not in r.text


async def test_registration_writes_user_registered_to_the_outbox(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    r = await client.post("/api/v1/users/register", json=new_identity())
    user = r.json()
    rows = await outbox_rows(engine, "user.registered", user["id"])
    assert len(rows) == 1
    envelope = rows[0]
    assert envelope["producer"] == "users"
    assert envelope["payload"] == {
        "user_id": user["id"],
        "email": user["email"],
        "username": user["username"],
        "role": "customer",
    }


async def test_the_password_is_stored_as_a_bcrypt_hash_of_the_configured_cost(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    ident = new_identity()
    user = (await client.post("/api/v1/users/register", json=ident)).json()
    async with engine.connect() as conn:
        stored = await conn.scalar(sa.text("SELECT password_hash FROM users.users WHERE id = :id"), {"id": user["id"]})
    assert stored.startswith("$2b$04$")
    assert bcrypt.checkpw(ident["password"].encode(), stored.encode())


async def test_a_role_in_the_registration_body_is_ignored(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/v1/users/register", json={**new_identity(), "role": "admin", "is_admin": True})
    assert r.status_code == 201
    assert r.json()["role"] == "customer"


@pytest.mark.parametrize("field", ["email", "username"])
async def test_a_taken_email_or_username_is_409_whatever_its_case(client: httpx.AsyncClient, field: str) -> None:
    first = new_identity()
    assert (await client.post("/api/v1/users/register", json=first)).status_code == 201
    second = new_identity()
    second[field] = first[field].upper() if field == "username" else first[field].replace("ada", "ADA")
    r = await client.post("/api/v1/users/register", json=second)
    assert r.status_code == 409
    assert r.json()["error"] == "conflict"
    assert field in r.json()["message"]


async def test_two_identical_registrations_at_once_make_one_user(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    ident = new_identity()
    racers = [ident, {**ident, "email": ident["email"].upper().replace("@PROST.TEST", "@prost.test")}] * 3
    results = await asyncio.gather(*(client.post("/api/v1/users/register", json=body) for body in racers))
    assert sorted(r.status_code for r in results) == [201, 409, 409, 409, 409, 409]
    async with engine.connect() as conn:
        count = await conn.scalar(
            sa.text("SELECT count(*) FROM users.users WHERE lower(email) = lower(:e)"), {"e": ident["email"]}
        )
    assert count == 1
    winner = next(r for r in results if r.status_code == 201).json()
    assert len(await outbox_rows(engine, "user.registered", winner["id"])) == 1


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"email": "not-an-email"}, "email"),
        ({"email": ""}, "email"),
        ({"username": "ab"}, "username"),
        ({"username": "x" * 33}, "username"),
        ({"username": "no spaces"}, "username"),
        ({"password": "short"}, "password"),
        ({"password": "x" * 73}, "password"),
        ({"password": "é" * 37}, "password"),
        ({"email": 42}, "email"),
    ],
)
async def test_invalid_registrations_are_422(client: httpx.AsyncClient, change: dict[str, Any], where: str) -> None:
    r = await client.post("/api/v1/users/register", json={**new_identity(), **change})
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "validation_error"
    assert where in r.json()["message"]


@pytest.mark.parametrize("missing", ["email", "username", "password"])
async def test_a_registration_missing_a_field_is_422(client: httpx.AsyncClient, missing: str) -> None:
    body = new_identity()
    del body[missing]
    r = await client.post("/api/v1/users/register", json=body)
    assert r.status_code == 422
    assert r.json()["error"] == "validation_error"


async def test_a_password_of_exactly_72_bytes_registers_and_logs_in_and_73_would_not_match(
    client: httpx.AsyncClient,
) -> None:
    ident = {**new_identity(), "password": "p" * 72}
    assert (await client.post("/api/v1/users/register", json=ident)).status_code == 201
    ok = await client.post("/api/v1/users/login", json={"email": ident["email"], "password": "p" * 72})
    assert ok.status_code == 200
    # bcrypt alone would accept this (it reads 72 bytes): prost must not.
    longer = await client.post("/api/v1/users/login", json={"email": ident["email"], "password": "p" * 73})
    assert longer.status_code == 401


async def test_logging_in_gives_a_bearer_token_its_expiry_and_the_user(client: httpx.AsyncClient, system: Any) -> None:
    ident = new_identity()
    registered = (await client.post("/api/v1/users/register", json=ident)).json()
    r = await client.post("/api/v1/users/login", json={"email": ident["email"].upper(), "password": ident["password"]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"token", "token_type", "expires_at", "user"}
    assert body["token_type"] == "Bearer"
    assert body["user"] == registered
    secret = system.settings.jwt_secret.get_secret_value()
    claims = jwt.decode(body["token"], secret, algorithms=["HS256"], issuer="prost-users-service")
    assert claims["sub"] == claims["user_id"] == registered["id"]
    assert (claims["email"], claims["username"], claims["role"], claims["ver"]) == (
        ident["email"],
        ident["username"],
        "customer",
        0,
    )
    assert claims["exp"] - claims["iat"] == 24 * 3600
    assert datetime.fromisoformat(body["expires_at"]) == datetime.fromtimestamp(claims["exp"], UTC)
    profile = await client.get(f"/api/v1/users/profile/{registered['id']}", headers=bearer(body["token"]))
    assert profile.status_code == 200


async def test_an_unknown_email_and_a_wrong_password_get_the_same_401(client: httpx.AsyncClient) -> None:
    ident = new_identity()
    await client.post("/api/v1/users/register", json=ident)
    wrong = await client.post("/api/v1/users/login", json={"email": ident["email"], "password": "wrong-password"})
    unknown = await client.post("/api/v1/users/login", json={"email": "nobody-" + ident["email"], "password": "x" * 10})
    malformed = await client.post("/api/v1/users/login", json={"email": "not an email", "password": "x" * 10})
    assert wrong.status_code == unknown.status_code == malformed.status_code == 401
    assert (
        wrong.json()
        == unknown.json()
        == malformed.json()
        == {
            "error": "unauthorized",
            "message": "invalid email or password",
            "code": 401,
        }
    )


async def test_an_unknown_email_costs_one_bcrypt_check_like_a_wrong_password(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    ident = new_identity()
    await client.post("/api/v1/users/register", json=ident)
    checked: list[bytes] = []
    real = bcrypt.checkpw

    def spy(password: bytes, hashed: bytes) -> bool:
        checked.append(hashed)
        return real(password, hashed)

    monkeypatch.setattr(passwords.bcrypt, "checkpw", spy)
    await client.post("/api/v1/users/login", json={"email": ident["email"], "password": "wrong-password"})
    await client.post("/api/v1/users/login", json={"email": "ghost-" + ident["email"], "password": "wrong-password"})
    assert len(checked) == 2
    # Both checks run at the same cost: the unknown email is compared with a dummy hash.
    assert checked[0][:7] == checked[1][:7] == b"$2b$04$"
    assert checked[0] != checked[1]


@pytest.mark.parametrize(
    "body", [{}, {"email": "a@prost.test"}, {"password": "password-1"}, {"email": "", "password": ""}]
)
async def test_a_login_without_credentials_is_422(client: httpx.AsyncClient, body: dict[str, str]) -> None:
    r = await client.post("/api/v1/users/login", json=body)
    assert r.status_code == 422
    assert r.json()["error"] == "validation_error"
