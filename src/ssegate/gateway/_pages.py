"""The gateway's pages: ``/`` (chat), ``/topics`` and ``/dashboard``, and their files.

Everything comes from ``static/`` inside the package (shipped in the wheel): no
build step, nothing from another origin. The pages' own scripts, styles and
icon are under ``/static/``; the client module they use is ``/ssegate.js``
(``_static``). Only the files listed here are served (no path from the request
reaches the file system).

Every answer carries strict security headers: a Content-Security-Policy that
allows scripts, styles and connections from this origin only (no inline
script, no ``eval``), no framing, no sniffing, no referrer. The pages hold no
secret: an API key is typed into the page and kept in the browser's storage.
"""

from __future__ import annotations

import hashlib
from functools import cache
from importlib import resources

from fastapi import APIRouter, Request
from fastapi.responses import Response

from ._errors import ApiError

__all__ = ["SECURITY_HEADERS", "router"]

router = APIRouter(include_in_schema=False)

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; font-src 'self'; manifest-src 'self'; base-uri 'none'; "
        "form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
}

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}

#: URL path -> file in static/.
PAGES = {"/": "chat.html", "/topics": "topics.html", "/dashboard": "dashboard.html"}
#: Files under /static/ (the pages' scripts, styles, icon).
ASSETS = (
    "chat.js",
    "common.js",
    "dashboard.js",
    "markdown.js",
    "style.css",
    "topics.js",
    "icon.svg",
)


@cache
def _file(name: str) -> tuple[bytes, str]:
    """The bytes of ``static/name`` and their ETag (read once per process)."""
    data = resources.files(__package__).joinpath("static", name).read_bytes()
    return data, '"' + hashlib.sha256(data).hexdigest()[:32] + '"'


def _serve(request: Request, name: str) -> Response:
    try:
        data, etag = _file(name)
    except FileNotFoundError:
        raise ApiError(404, f"{request.url.path} is not part of this gateway.") from None
    headers = {**SECURITY_HEADERS, "ETag": etag, "Cache-Control": "no-cache"}
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    media = _TYPES[name[name.rindex(".") :]]
    return Response(data, media_type=media, headers=headers)


def _page(path: str, name: str) -> None:
    async def page(request: Request) -> Response:
        return _serve(request, name)

    router.add_api_route(path, page, methods=["GET", "HEAD"], name=name)


for _path, _name in PAGES.items():
    _page(_path, _name)


@router.get("/static/{name}")
async def asset(name: str, request: Request) -> Response:
    if name not in ASSETS:
        raise ApiError(404, f"/static/{name} is not part of this gateway.")
    return _serve(request, name)


@router.get("/favicon.ico")
async def favicon(request: Request) -> Response:
    return _serve(request, "icon.svg")
