"""Static files of the gateway: ``/ssegate.js`` and its type declarations.

Served from the package (``static/``), read once and kept in memory, with no
auth (they hold no data). The URLs are stable and not versioned, so the
response says ``Cache-Control: no-cache`` with a strong ``ETag``: a browser
revalidates each time and gets ``304 Not Modified`` while the file is the same,
and the new file at once after an upgrade.
"""

from __future__ import annotations

import hashlib
from functools import cache
from importlib import resources

from fastapi import APIRouter, Request
from fastapi.responses import Response

__all__ = ["STATIC_FILES", "router", "static_file"]

router = APIRouter(tags=["static"])

#: URL path -> (file in ``ssegate/gateway/static``, content type).
STATIC_FILES: dict[str, tuple[str, str]] = {
    "/ssegate.js": ("ssegate.js", "text/javascript; charset=utf-8"),
    "/ssegate.d.ts": ("ssegate.d.ts", "application/typescript; charset=utf-8"),
}


@cache
def static_file(name: str) -> tuple[bytes, str]:
    """The bytes of ``static/<name>`` and their ETag (quoted, strong)."""
    data = resources.files(__package__).joinpath("static", name).read_bytes()
    return data, '"' + hashlib.sha256(data).hexdigest()[:32] + '"'


def _matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
    return "*" in tags or etag in tags


def _serve(path: str, request: Request) -> Response:
    name, media_type = STATIC_FILES[path]
    data, etag = static_file(name)
    headers = {"ETag": etag, "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
    if _matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    return Response(data, media_type=media_type, headers=headers)


@router.get("/ssegate.js", include_in_schema=False)
async def ssegate_js(request: Request) -> Response:
    return _serve("/ssegate.js", request)


@router.get("/ssegate.d.ts", include_in_schema=False)
async def ssegate_d_ts(request: Request) -> Response:
    return _serve("/ssegate.d.ts", request)
