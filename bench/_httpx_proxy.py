"""A minimal reverse proxy on httpx.AsyncClient: the alternative the gateway's client was
chosen against, measured in the same run by bench/gateway.py.

    python bench/_httpx_proxy.py <port> <upstream-url>
"""

from __future__ import annotations

import sys

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

UPSTREAM = sys.argv[2].rstrip("/")
client = httpx.AsyncClient(base_url=UPSTREAM, limits=httpx.Limits(max_connections=1000, max_keepalive_connections=1000))


async def forward(request: Request) -> Response:
    headers = {k: v for k, v in request.headers.items() if k not in ("host", "content-length", "connection")}
    upstream = await client.request(
        request.method,
        request.url.path,
        params=request.url.query or None,
        content=await request.body(),
        headers=headers,
    )
    return Response(
        upstream.content,
        status_code=upstream.status_code,
        headers={"content-type": upstream.headers.get("content-type", "")},
    )


app = Starlette(routes=[Route("/{path:path}", forward, methods=["GET", "POST", "PUT", "PATCH", "DELETE"])])

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False, http="httptools")
