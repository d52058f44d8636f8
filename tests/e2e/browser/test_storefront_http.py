"""`mount_storefront` on a bare FastAPI app: what it serves and the headers it sends."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from prost.gateway.storefront import STATIC_DIR, mount_storefront


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    mount_storefront(app)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://shop.test") as c:
        yield c


async def test_the_page_is_served_with_a_strict_policy(client: httpx.AsyncClient) -> None:
    answer = await client.get("/")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/html")
    policy = {d.split(" ", 1)[0]: d for d in (p.strip() for p in answer.headers["content-security-policy"].split(";"))}
    assert policy["script-src"] == "script-src 'self'"
    assert policy["object-src"] == "object-src 'none'"
    assert policy["frame-ancestors"] == "frame-ancestors 'none'"
    assert policy["base-uri"] == "base-uri 'none'"
    assert "unsafe-inline" not in answer.headers["content-security-policy"]
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["referrer-policy"] == "no-referrer"
    assert answer.headers["x-frame-options"] == "DENY"
    assert '<script type="module" src="/static/app.js">' in answer.text
    assert "<script>" not in answer.text  # no inline script for the policy to allow


async def test_modules_and_styles_are_served_with_their_types(client: httpx.AsyncClient) -> None:
    js = await client.get("/static/app.js")
    assert js.status_code == 200
    assert js.headers["content-type"].startswith("text/javascript")
    assert js.headers["x-content-type-options"] == "nosniff"
    css = await client.get("/static/app.css")
    assert css.headers["content-type"].startswith("text/css")
    again = await client.get("/static/app.js", headers={"If-None-Match": js.headers["etag"]})
    assert again.status_code == 304


@pytest.mark.parametrize(
    "path",
    ["/static/../storefront.py", "/static/%2e%2e/storefront.py", "/static/nope.js", "/static/", "/static/.hidden"],
)
async def test_nothing_outside_the_static_files_is_served(client: httpx.AsyncClient, path: str) -> None:
    answer = await client.get(path)
    assert answer.status_code == 404
    assert "mount_storefront" not in answer.text


async def test_a_missing_file_answers_in_the_contract_shape_with_the_headers(client: httpx.AsyncClient) -> None:
    answer = await client.get("/static/missing.js")
    assert answer.json() == {"error": "not_found", "message": "no such file", "code": 404}
    assert answer.headers["x-frame-options"] == "DENY"


def test_no_page_uses_an_html_string_sink() -> None:
    for source in STATIC_DIR.glob("*.js"):
        text = source.read_text()
        for sink in (".innerHTML", ".outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
            code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("//"))
            assert sink not in code.replace('"innerHTML"', "").replace('"outerHTML"', ""), f"{source.name} uses {sink}"


def test_the_routes_stay_out_of_the_public_api_document() -> None:
    app = FastAPI()
    mount_storefront(app)
    assert "/" not in app.openapi()["paths"]
