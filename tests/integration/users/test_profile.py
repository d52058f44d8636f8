"""GET and PATCH /api/v1/users/profile/{id}: own or admin, credentials changes, mass assignment."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import jwt
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from helpers import admin_token, bearer, register


def profile(user: dict[str, Any]) -> str:
    return f"/api/v1/users/profile/{user['id']}"


async def login(client: httpx.AsyncClient, email: str, password: str) -> httpx.Response:
    return await client.post("/api/v1/users/login", json={"email": email, "password": password})


# -- GET -------------------------------------------------------------------------------


async def test_a_user_reads_their_own_profile(client: httpx.AsyncClient) -> None:
    user, token = await register(client)
    r = await client.get(profile(user), headers=bearer(token))
    assert r.status_code == 200
    assert r.json() == user


async def test_a_user_gets_403_for_another_users_profile(client: httpx.AsyncClient) -> None:
    _, token = await register(client)
    other, _ = await register(client)
    r = await client.get(profile(other), headers=bearer(token))
    assert r.status_code == 403
    assert r.json()["error"] == "forbidden"
    assert other["email"] not in r.text


async def test_an_admin_reads_any_profile_and_gets_404_for_an_unknown_one(client: httpx.AsyncClient) -> None:
    user, _ = await register(client)
    token = await admin_token(client)
    r = await client.get(profile(user), headers=bearer(token))
    assert r.status_code == 200
    assert r.json() == user
    missing = await client.get(f"/api/v1/users/profile/{uuid.uuid4()}", headers=bearer(token))
    assert missing.status_code == 404
    assert missing.json() == {"error": "not_found", "message": "user not found", "code": 404}


@pytest.mark.parametrize("bad_id", ["not-a-uuid", "123", "0000-1111"])
async def test_a_profile_id_that_is_not_a_uuid_is_422(client: httpx.AsyncClient, bad_id: str) -> None:
    _, token = await register(client)
    r = await client.get(f"/api/v1/users/profile/{bad_id}", headers=bearer(token))
    assert r.status_code == 422
    assert r.json()["error"] == "validation_error"


async def test_reading_a_profile_without_a_token_is_401(client: httpx.AsyncClient) -> None:
    user, _ = await register(client)
    r = await client.get(profile(user))
    assert r.status_code == 401
    assert r.json()["error"] == "unauthorized"


# -- PATCH -----------------------------------------------------------------------------


async def test_a_user_changes_their_username_without_a_password(client: httpx.AsyncClient) -> None:
    user, token = await register(client)
    new_name = "renamed_" + uuid.uuid4().hex[:8]
    r = await client.patch(profile(user), json={"username": new_name}, headers=bearer(token))
    assert r.status_code == 200, r.text
    assert r.json()["username"] == new_name
    assert r.json()["updated_at"] > user["updated_at"]
    # A username is not a credential: the token keeps working.
    assert (await client.get(profile(user), headers=bearer(token))).json()["username"] == new_name


async def test_an_empty_or_unchanged_patch_returns_the_user_unchanged(client: httpx.AsyncClient) -> None:
    user, token = await register(client)
    for body in ({}, {"username": user["username"], "email": user["email"]}, {"username": None}):
        r = await client.patch(profile(user), json=body, headers=bearer(token))
        assert r.status_code == 200
        assert r.json() == user


async def test_role_and_unknown_fields_in_a_patch_are_ignored(client: httpx.AsyncClient, engine: AsyncEngine) -> None:
    user, token = await register(client)
    r = await client.patch(
        profile(user), json={"role": "admin", "id": str(uuid.uuid4()), "credentials_version": 0}, headers=bearer(token)
    )
    assert r.status_code == 200
    assert r.json()["role"] == "customer"
    assert r.json()["id"] == user["id"]
    async with engine.connect() as conn:
        role = await conn.scalar(sa.text("SELECT role FROM users.users WHERE id = :id"), {"id": user["id"]})
    assert role == "customer"


async def test_a_user_cannot_patch_another_profile_not_even_an_admin(client: httpx.AsyncClient) -> None:
    victim, _ = await register(client)
    _, token = await register(client)
    admin = await admin_token(client)
    for t in (token, admin):
        r = await client.patch(profile(victim), json={"username": "stolen_" + uuid.uuid4().hex[:6]}, headers=bearer(t))
        assert r.status_code == 403
        assert r.json()["error"] == "forbidden"


async def test_a_taken_username_or_email_in_a_patch_is_409(client: httpx.AsyncClient) -> None:
    other, _ = await register(client)
    user, token = await register(client, password="password-123")
    r = await client.patch(profile(user), json={"username": other["username"].upper()}, headers=bearer(token))
    assert r.status_code == 409
    assert "username" in r.json()["message"]
    r = await client.patch(
        profile(user), json={"email": other["email"].upper(), "current_password": "password-123"}, headers=bearer(token)
    )
    assert r.status_code == 409
    assert "email" in r.json()["message"]


@pytest.mark.parametrize("field", ["email", "password"])
async def test_a_new_email_or_password_without_current_password_is_422(client: httpx.AsyncClient, field: str) -> None:
    user, token = await register(client)
    value = f"new-{uuid.uuid4().hex[:8]}@prost.test" if field == "email" else "brand-new-password"
    r = await client.patch(profile(user), json={field: value}, headers=bearer(token))
    assert r.status_code == 422
    assert r.json()["error"] == "validation_error"
    assert "current_password" in r.json()["message"]


@pytest.mark.parametrize("field", ["email", "password"])
async def test_a_wrong_current_password_is_403_and_changes_nothing(client: httpx.AsyncClient, field: str) -> None:
    user, token = await register(client)
    value = f"new-{uuid.uuid4().hex[:8]}@prost.test" if field == "email" else "brand-new-password"
    r = await client.patch(
        profile(user), json={field: value, "current_password": "not-my-password"}, headers=bearer(token)
    )
    assert r.status_code == 403
    assert r.json() == {"error": "forbidden", "message": "current_password is incorrect", "code": 403}
    assert (await client.get(profile(user), headers=bearer(token))).json() == user


@pytest.mark.parametrize(
    "change", [{"username": "ab"}, {"email": "nope"}, {"password": "short"}, {"password": "x" * 73}]
)
async def test_an_invalid_patch_is_422(client: httpx.AsyncClient, change: dict[str, str]) -> None:
    user, token = await register(client)
    r = await client.patch(profile(user), json={**change, "current_password": "password-123"}, headers=bearer(token))
    assert r.status_code == 422


async def test_a_password_change_revokes_older_tokens_and_announces_it(
    client: httpx.AsyncClient, engine: AsyncEngine, system: Any
) -> None:
    user, old_token = await register(client, password="password-123")
    r = await client.patch(
        profile(user), json={"password": "password-456", "current_password": "password-123"}, headers=bearer(old_token)
    )
    assert r.status_code == 200, r.text
    assert set(r.json()) == {"id", "email", "username", "role", "created_at", "updated_at"}
    # The old token is refused; the old password no longer logs in; the new one does.
    refused = await client.get(profile(user), headers=bearer(old_token))
    assert refused.status_code == 401
    assert (await login(client, user["email"], "password-123")).status_code == 401
    fresh = await login(client, user["email"], "password-456")
    assert fresh.status_code == 200
    new_token = fresh.json()["token"]
    secret = system.settings.jwt_secret.get_secret_value()
    assert jwt.decode(new_token, secret, algorithms=["HS256"], issuer="prost-users-service")["ver"] == 1
    assert (await client.get(profile(user), headers=bearer(new_token))).status_code == 200
    async with engine.connect() as conn:
        version = await conn.scalar(
            sa.text("SELECT credentials_version FROM users.users WHERE id = :id"), {"id": user["id"]}
        )
        events = (
            await conn.execute(
                sa.text(
                    "SELECT envelope FROM users.outbox WHERE event_type = 'user.credentials_changed'"
                    " AND envelope->'payload'->>'user_id' = :u"
                ),
                {"u": user["id"]},
            )
        ).all()
    assert version == 1
    assert [e.envelope["payload"] for e in events] == [{"user_id": user["id"], "version": 1}]


async def test_an_email_change_needs_the_password_raises_the_version_and_logs_in_with_the_new_email(
    client: httpx.AsyncClient,
) -> None:
    user, token = await register(client, password="password-123")
    new_email = f"moved-{uuid.uuid4().hex[:8]}@prost.test"
    r = await client.patch(
        profile(user), json={"email": new_email, "current_password": "password-123"}, headers=bearer(token)
    )
    assert r.status_code == 200
    assert r.json()["email"] == new_email
    assert (await client.get(profile(user), headers=bearer(token))).status_code == 401
    assert (await login(client, user["email"], "password-123")).status_code == 401
    assert (await login(client, new_email, "password-123")).status_code == 200


async def test_a_stale_token_cannot_change_the_profile(client: httpx.AsyncClient) -> None:
    user, token = await register(client, password="password-123")
    await client.patch(
        profile(user), json={"password": "password-456", "current_password": "password-123"}, headers=bearer(token)
    )
    r = await client.patch(profile(user), json={"username": "late_" + uuid.uuid4().hex[:6]}, headers=bearer(token))
    assert r.status_code == 401
