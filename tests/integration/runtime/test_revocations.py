"""Token revocation in one process: a password change refuses older tokens in every service."""

from __future__ import annotations

import uuid

import httpx

from helpers import bearer, eventually


async def test_a_password_change_refuses_older_tokens_in_every_service(client: httpx.AsyncClient) -> None:
    tag = uuid.uuid4().hex[:10]
    email = f"rev-{tag}@prost.test"
    r = await client.post(
        "/api/v1/users/register", json={"email": email, "username": f"rev_{tag}", "password": "first-pass-1"}
    )
    user_id = r.json()["id"]
    stale = (await client.post("/api/v1/users/login", json={"email": email, "password": "first-pass-1"})).json()[
        "token"
    ]
    assert (await client.get("/api/v1/cart", headers=bearer(stale))).status_code == 200

    r = await client.patch(
        f"/api/v1/users/profile/{user_id}",
        json={"password": "second-pass-2", "current_password": "first-pass-1"},
        headers=bearer(stale),
    )
    assert r.status_code == 200, r.text

    async def refused() -> bool:
        cart = await client.get("/api/v1/cart", headers=bearer(stale))
        orders = await client.get("/api/v1/orders", headers=bearer(stale))
        return cart.status_code == orders.status_code == 401

    await eventually(refused, timeout=10)
    fresh = (await client.post("/api/v1/users/login", json={"email": email, "password": "second-pass-2"})).json()[
        "token"
    ]
    assert (await client.get("/api/v1/orders", headers=bearer(fresh))).status_code == 200


async def test_the_users_service_lists_credentials_versions_to_services_only(
    client: httpx.AsyncClient, system: object
) -> None:
    r = await client.get("/internal/users/credential-versions")
    assert r.status_code == 401
    auth = system.app.state.auth  # type: ignore[attr-defined]
    r = await client.get("/internal/users/credential-versions", headers=bearer(auth.issue_service_token("cart")))
    assert r.status_code == 200
    assert isinstance(r.json()["items"], list)
