"""The users service's internal API (service tokens only; never routed by the gateway).

`GET /internal/users/credential-versions`: every user whose credentials changed at
least once, with the current version. Each process loads it at start (and now and
then) to refuse tokens issued before a password or email change; between loads, the
`user.credentials_changed` events keep it current.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from prost.kit import db
from prost.kit.auth import ServiceCaller
from prost.kit.service import ServiceContext, context_dependency
from prost.users.repository import UserRepository

Ctx = Annotated[ServiceContext, Depends(context_dependency("users"))]

router = APIRouter(prefix="/internal/users", include_in_schema=False)


@router.get("/credential-versions")
async def credential_versions(ctx: Ctx, _caller: ServiceCaller) -> dict[str, list[dict[str, object]]]:
    async with db.autocommit(ctx.engine) as conn:
        rows = await UserRepository(conn).changed_credentials()
    return {"items": [{"user_id": str(user_id), "version": version} for user_id, version in rows]}
