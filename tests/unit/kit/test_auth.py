"""JWT issue and verify: HS256 pinned, `exp` and `iss` required, and every forged or
stale token refused."""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

import httpx
import jwt
import pytest
from fastapi import APIRouter

from prost.kit import auth
from prost.kit.auth import ISSUER, AdminUser, CurrentUser, TokenAuthority, TokenRevocations
from prost.kit.errors import Unauthorized
from prost.kit.http import create_service_app

SECRET = "unit-test-secret-" + "k" * 64  # 64+ bytes, so an HS512 forgery is not refused for its key length
USER_ID = uuid.uuid4()


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    c: dict[str, Any] = {
        "sub": str(USER_ID),
        "user_id": str(USER_ID),
        "email": "ada@prost.test",
        "username": "ada",
        "role": "customer",
        "ver": 0,
        "iat": now,
        "exp": now + 600,
        "iss": ISSUER,
    }
    c.update(overrides)
    return {k: v for k, v in c.items() if v is not None}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.fixture
def authority() -> TokenAuthority:
    return TokenAuthority(secret=SECRET, ttl_seconds=600, revocations=TokenRevocations())


def test_an_issued_token_verifies_with_its_claims(authority: TokenAuthority) -> None:
    token, exp = authority.issue(user_id=USER_ID, email="ada@prost.test", username="ada", role="customer", version=3)
    decoded = jwt.decode(token, SECRET, algorithms=["HS256"], issuer=ISSUER)
    assert decoded["sub"] == decoded["user_id"] == str(USER_ID)
    assert decoded["iss"] == "prost-users-service"
    assert decoded["ver"] == 3
    assert decoded["exp"] == exp
    assert exp - decoded["iat"] == 600
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    p = authority.verify(token)
    assert (p.id, p.email, p.username, p.role, p.version) == (USER_ID, "ada@prost.test", "ada", "customer", 3)


def forged_tokens() -> dict[str, str]:
    good = jwt.encode(claims(), SECRET, algorithm="HS256")
    header, payload, signature = good.split(".")
    tampered = json.loads(base64.urlsafe_b64decode(payload + "=="))
    tampered["role"] = "admin"
    return {
        "alg none": b64(b'{"alg":"none","typ":"JWT"}') + "." + payload + ".",
        "another key": jwt.encode(claims(), "another-secret-" + "z" * 32, algorithm="HS256"),
        "expired": jwt.encode(claims(exp=int(time.time()) - 60), SECRET, algorithm="HS256"),
        "wrong issuer": jwt.encode(claims(iss="someone-else"), SECRET, algorithm="HS256"),
        "no issuer": jwt.encode(claims(iss=None), SECRET, algorithm="HS256"),
        "no expiry": jwt.encode(claims(exp=None), SECRET, algorithm="HS256"),
        "HS512 header": jwt.encode(claims(), SECRET, algorithm="HS512"),
        "tampered payload": header + "." + b64(json.dumps(tampered).encode()) + "." + signature,
        "unknown role": jwt.encode(claims(role="superuser"), SECRET, algorithm="HS256"),
        "sub is not the user": jwt.encode(claims(sub=str(uuid.uuid4())), SECRET, algorithm="HS256"),
        "not a jwt": "definitely.not.a-token",
        "service token": TokenAuthority(secret=SECRET).issue_service_token("catalog"),
    }


@pytest.mark.parametrize("kind", list(forged_tokens()))
def test_a_forged_or_stale_token_is_refused(authority: TokenAuthority, kind: str) -> None:
    with pytest.raises(Unauthorized):
        authority.verify(forged_tokens()[kind])


def test_an_expired_token_says_so(authority: TokenAuthority) -> None:
    with pytest.raises(Unauthorized, match="expired"):
        authority.verify(forged_tokens()["expired"])


def test_a_token_older_than_the_announced_credentials_version_is_refused(authority: TokenAuthority) -> None:
    old, _ = authority.issue(user_id=USER_ID, email="a@prost.test", username="ada", role="customer", version=1)
    assert authority.revocations is not None
    authority.revocations.revoke_before(USER_ID, 2)
    authority.revocations.revoke_before(USER_ID, 1)  # a stale announcement lowers nothing
    with pytest.raises(Unauthorized, match="revoked"):
        authority.verify(old)
    new, _ = authority.issue(user_id=USER_ID, email="a@prost.test", username="ada", role="customer", version=2)
    assert authority.verify(new).version == 2


@pytest.mark.parametrize("kind", list(forged_tokens()))
def test_a_forged_token_is_refused_also_beside_a_checked_one(authority: TokenAuthority, kind: str) -> None:
    """Tokens already checked are remembered; that must not let anything else through."""
    good = jwt.encode(claims(), SECRET, algorithm="HS256")
    assert authority.verify(good).id == USER_ID
    assert authority.verify(good).id == USER_ID  # the remembered claims
    for _ in range(2):
        with pytest.raises(Unauthorized):
            authority.verify(forged_tokens()[kind])


def test_a_checked_token_is_refused_once_it_expires(authority: TokenAuthority, monkeypatch: pytest.MonkeyPatch) -> None:
    token = jwt.encode(claims(exp=int(time.time()) + 60), SECRET, algorithm="HS256")
    assert authority.verify(token).id == USER_ID
    later = time.time() + 61
    monkeypatch.setattr(time, "time", lambda: later)
    with pytest.raises(Unauthorized, match="expired"):
        authority.verify(token)


def test_a_checked_token_is_refused_once_revoked(authority: TokenAuthority) -> None:
    token, _ = authority.issue(user_id=USER_ID, email="a@prost.test", username="ada", role="customer", version=1)
    assert authority.verify(token).version == 1
    assert authority.revocations is not None
    authority.revocations.revoke_before(USER_ID, 2)
    with pytest.raises(Unauthorized, match="revoked"):
        authority.verify(token)


def test_the_memory_of_checked_tokens_is_bounded(authority: TokenAuthority, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auth, "VERIFIED_CACHE_SIZE", 3)
    tokens = [jwt.encode(claims(ver=n), SECRET, algorithm="HS256") for n in range(5)]
    for token in tokens:
        authority.verify(token)
    assert list(authority._verified) == tokens[2:]  # the oldest forgotten first
    assert [authority.verify(t).version for t in tokens] == [0, 1, 2, 3, 4]  # forgotten is checked again


def app_with_routes(authority: TokenAuthority) -> httpx.AsyncClient:
    router = APIRouter()

    @router.get("/me")
    async def me(user: CurrentUser) -> dict[str, str]:
        return {"id": str(user.id)}

    @router.get("/admin")
    async def admin(user: AdminUser) -> dict[str, str]:
        return {"id": str(user.id)}

    app = create_service_app("test", routers=[router])
    app.state.auth = authority
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


@pytest.mark.parametrize(
    "header",
    [None, "", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Token abc", "Bearer not-a-token"],
)
async def test_a_missing_or_malformed_authorization_header_gets_401(
    authority: TokenAuthority, header: str | None
) -> None:
    async with app_with_routes(authority) as client:
        r = await client.get("/me", headers={"Authorization": header} if header is not None else {})
    assert r.status_code == 401
    assert r.json()["error"] == "unauthorized"
    assert r.json()["code"] == 401


async def test_a_customer_gets_403_on_an_admin_route_and_an_admin_gets_through(authority: TokenAuthority) -> None:
    customer, _ = authority.issue(user_id=USER_ID, email="a@prost.test", username="ada", role="customer")
    admin, _ = authority.issue(user_id=uuid.uuid4(), email="b@prost.test", username="boss", role="admin")
    async with app_with_routes(authority) as client:
        assert (await client.get("/me", headers={"Authorization": f"Bearer {customer}"})).status_code == 200
        r = await client.get("/admin", headers={"Authorization": f"Bearer {customer}"})
        assert r.status_code == 403
        assert r.json() == {"error": "forbidden", "message": "admin role required", "code": 403}
        assert (await client.get("/admin", headers={"Authorization": f"bearer {admin}"})).status_code == 200
