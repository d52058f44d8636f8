"""The web storefront: static pages served by the gateway at `/` and `/static/...`.

The pages (`static/index.html`, `static/app.js` and the ES modules beside it,
`static/app.css`) are plain files shipped inside the package: no build step, nothing
fetched from the internet. They talk only to the public API of `docs/API.md`, from
the same origin, so the gateway needs no CORS for them.

Every response from here carries a strict Content-Security-Policy. With
`script-src 'self'` and no `'unsafe-inline'`, a product name such as
`<script>...</script>` could not run even if it reached the DOM as HTML; with
`require-trusted-types-for 'script'` and `trusted-types 'none'` the browser refuses
every `innerHTML`-style string sink outright, so the pages cannot grow an HTML
injection path by accident (they build all markup with DOM APIs and `textContent`).

Call :func:`mount_storefront` on the gateway's app before any catch-all route, so
that `/` and `/static/...` are matched first.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import Response

from prost.kit import errors

STATIC_DIR = Path(__file__).resolve().parent / "static"

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "font-src 'self'",
        "manifest-src 'self'",
        "form-action 'self'",
        "object-src 'none'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "require-trusted-types-for 'script'",
        "trusted-types 'none'",
    )
)

SECURITY_HEADERS: dict[str, str] = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
    # No hashed file names (no build step), so browsers revalidate with the ETag each time.
    "Cache-Control": "no-cache",
}

# Content types are named here rather than guessed from the platform's mime table:
# with `nosniff`, a module script served as text/plain (as some systems map `.js`)
# would not run at all.
CONTENT_TYPES: dict[str, str] = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".json": "application/json",
    ".txt": "text/plain; charset=utf-8",
    ".woff2": "font/woff2",
}


def _resolve(relative: str) -> Path | None:
    """The file under STATIC_DIR that `relative` names, or None (missing, hidden, outside, unknown type)."""
    if not relative or "\\" in relative or "\x00" in relative:
        return None
    parts = relative.split("/")
    if any(part in ("", ".", "..") or part.startswith(".") for part in parts):
        return None
    root = STATIC_DIR.resolve()
    candidate = root.joinpath(*parts).resolve()
    if not candidate.is_relative_to(root) or not candidate.is_file():
        return None
    if candidate.suffix.lower() not in CONTENT_TYPES:
        return None
    return candidate


def _file_response(request: Request, path: Path) -> Response:
    # Read per request (the files are small): a changed file is served without a restart.
    body = path.read_bytes()
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    headers = {**SECURITY_HEADERS, "ETag": etag}
    if etag in {tag.strip() for tag in request.headers.get("if-none-match", "").split(",")}:
        return Response(status_code=304, headers=headers)
    media_type = CONTENT_TYPES[path.suffix.lower()]
    if request.method == "HEAD":
        headers["Content-Length"] = str(len(body))
        return Response(status_code=200, headers=headers, media_type=media_type)
    return Response(content=body, headers=headers, media_type=media_type)


def _not_found(message: str) -> Response:
    response = errors.error_response("not_found", message, 404)
    response.headers.update(SECURITY_HEADERS)
    return response


def mount_storefront(app: FastAPI) -> None:
    """Serve the storefront: `GET /` (the single page) and `GET /static/<file>` from the package.

    Self-contained: it needs nothing else from the gateway. The routes stay out of the
    OpenAPI document, which describes the public API only. Handlers are plain `def`s,
    so FastAPI runs their small file reads in its thread pool, off the event loop.
    """

    def index(request: Request) -> Response:
        path = _resolve("index.html")
        if path is None:
            return _not_found("the storefront is not installed")
        return _file_response(request, path)

    def static_file(request: Request, file_path: str) -> Response:
        path = _resolve(file_path)
        if path is None:
            return _not_found("no such file")
        return _file_response(request, path)

    app.add_api_route("/", index, methods=["GET", "HEAD"], include_in_schema=False, name="storefront")
    app.add_api_route(
        "/static/{file_path:path}",
        static_file,
        methods=["GET", "HEAD"],
        include_in_schema=False,
        name="storefront_static",
    )
